"""The built-in fusion variants, derived from the single-stream YAML Ultralytics ships for each family.

``--model yolov8n`` / ``yolo11s`` / ``yolo26m`` names a family and a scale. Each variant is written in
the same Ultralytics YAML schema a user's file uses and goes through the same parser, so there is one
way a model comes into being; the family's own file (read from the installed Ultralytics package,
never fetched) gives its layers, so a variant follows upstream exactly: YOLO11's C3k2/C2PSA blocks,
YOLO26's end-to-end Detect head (``end2end: True``, ``reg_max: 1``) and its loss. For oriented boxes
(``--task obb``, or a name such as ``yolo11n-obb``) the family's ``-obb`` file is read instead: the same
rows, its last one Ultralytics' ``OBB`` head (YOLO26: ``OBB26``), which every variant keeps as it keeps
``Detect`` (:data:`TASK_HEADS`).

**The registry.** Every variant is declared once, in :data:`VARIANTS` (named after YOLOFuse's): its words
in ``--fusion``'s help, its row in the README's table, and the function that derives it, whose docstring
says what it builds and why. Everything else is derived from that table: ``--fusion``'s choices
(:data:`Fusion`, config/sections.py's field type), the sizes in the help and the docs (computed by building each
variant: ``model/sizes.py``), the tests that run every variant (:data:`FUSIONS`), and what the distributed
strategies shard and recompute (``model/units.py``, declared per block class, so it holds for any model).
Adding a variant is a derivation function and an entry here, then ``python -m yolofuse_scale.model.sizes``
to compute its size into the help and the docs; a new block class it uses goes with the modules
(``attention.py``) and, if the strategies should treat it as a unit, into ``units.py``.

Layers reference each other by absolute index (or -1 for "the previous row"), which keeps two-branch
graphs readable.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, get_args

#: The image side DECA's pooling pyramid is made for (DEYOLO's: its 80/40/20 grids at P3/P4/P5 at 640 px).
#: Other sizes are resampled to that grid first, so one model serves every image size.
DEA_GRID = 640

#: family -> the single-stream detection YAML inside the installed Ultralytics package.
FAMILY_FILES = {"yolov8": ("v8", "yolov8.yaml"), "yolo11": ("11", "yolo11.yaml"), "yolo26": ("26", "yolo26.yaml")}
FAMILIES = tuple(FAMILY_FILES)
#: What a model predicts (``--task``), and the heads that predict it: the last layer of a model says its task.
#: ``detect``: axis-aligned boxes (Ultralytics' ``Detect``; ``v10Detect`` in a model YAML); ``obb``: oriented
#: boxes, centre, size and angle (``OBB``; YOLO26's ``OBB26`` reads its angle raw, without OBB's sigmoid).
TASK_HEADS: dict[str, tuple[str, ...]] = {"detect": ("Detect", "v10Detect"), "obb": ("OBB", "OBB26")}
TASKS = tuple(TASK_HEADS)
#: The file name of a task's variant of a family's YAML: Ultralytics ships ``yolo11-obb.yaml`` beside
#: ``yolo11.yaml`` (the same rows; its last one an ``OBB``/``OBB26`` head with one angle per anchor).
TASK_SUFFIX = {"detect": "", "obb": "-obb"}
#: [depth_multiple, width_multiple, max_channels] of our tiny ``t`` scale beside Ultralytics' n..x. It
#: exists only so that tests and CPU demos run in seconds: it is not a model anyone should deploy.
#: YOLO11/26's C2PSA attention needs 128 channels at P5 (one 64-wide head), hence a wider ``t``.
TINY_SCALES = {"yolov8": [0.33, 0.125, 512], "yolo11": [0.50, 0.125, 1024], "yolo26": [0.50, 0.125, 1024]}
SCALE_NAMES = ("t", "n", "s", "m", "l", "x")
#: YOLOv8's rows of ``scales`` (Ultralytics' yolov8.yaml plus ``t``), kept for callers that list them.
SCALES: dict[str, list[float]] = {
    "t": TINY_SCALES["yolov8"],
    "n": [0.33, 0.25, 1024],
    "s": [0.33, 0.50, 1024],
    "m": [0.67, 0.75, 768],
    "l": [1.00, 1.00, 512],
    "x": [1.00, 1.25, 512],
}
#: Modules whose first YAML argument is their (unscaled) output width: what a fusion conv must match.
_WIDTH_FIRST = {"Conv", "C2f", "C3k2", "SPPF", "C2PSA", "C3", "C2", "A2C2f", "ELAN1", "SCDown", "RepNCSPELAN4"}
#: YAML writes Python's constants as bare words (``None``), which load as strings: mapped, not evaluated.
_CONSTANTS = {"None": None, "True": True, "False": False}

Row = list[Any]


class Origin(NamedTuple):
    """Where a fusion-model layer comes from in the single-stream model it was derived from.

    ``src``: the single-stream layer index it copies (for a fusion conv: the tapped layer); ``stream``:
    ``rgb`` / ``ir`` (a per-modality branch), ``shared`` (one copy fed by both), ``fusion`` (a new 1x1
    conv mixing the two streams' maps of layer ``src``) or ``attention`` (new cross-modal attention over
    the two streams' maps of layer ``src``, before its fusion conv); ``levels``: for a Detect that reads both
    branches (late fusion), each of its levels as (single-stream level, stream); empty: level k is level k.
    """

    src: int
    stream: str
    levels: tuple[tuple[int, str], ...] = ()


def parse_model_name(name: str) -> tuple[str, str] | None:
    """``yolo11n`` (or ``yolo11n-obb``) -> ("yolo11", "n"); None if ``name`` is not a built-in family + scale.
    The task a name implies is :func:`model_name_task`'s."""
    m = re.fullmatch(r"(yolov8|yolo11|yolo26)([a-z])(-obb)?", name)
    return (m.group(1), m.group(2)) if m else None


def model_name_task(name: str) -> str | None:
    """The task a built-in name says itself (``yolo11n-obb``: ``obb``), as Ultralytics names its models; None
    when the name says none (``yolo11n``: the task is ``--task``'s, detect by default) or is no built-in name."""
    return "obb" if parse_model_name(name) is not None and name.endswith("-obb") else None


def head_task(head: str) -> str | None:
    """The task a model whose last layer is the module ``head`` trains (:data:`TASK_HEADS`); None: no task here."""
    return next((task for task, heads in TASK_HEADS.items() if head in heads), None)


def family_yaml(family: str, scale: str, task: str = "detect") -> dict[str, Any]:
    """Ultralytics' own model dictionary for ``family`` at ``scale`` (its ``scales`` cut to that row), for
    ``task``: ``obb`` reads the family's ``-obb`` file (its ``OBB``/``OBB26`` head)."""
    import importlib.resources

    import yaml

    if family not in FAMILY_FILES:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
    if task not in TASK_SUFFIX:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    folder, name = FAMILY_FILES[family]
    name = name.replace(".yaml", f"{TASK_SUFFIX[task]}.yaml")
    d = yaml.safe_load(importlib.resources.files("ultralytics.cfg.models").joinpath(folder).joinpath(name).read_text())
    scales = {"t": TINY_SCALES[family], **d["scales"]}
    if scale not in scales:
        raise ValueError(f"unknown model scale {scale!r} for {family}; choose one of {', '.join(scales)}")
    for row in d["backbone"] + d["head"]:
        row[3] = [_CONSTANTS.get(a, a) if isinstance(a, str) else a for a in row[3]]
    d["scales"], d["scale"] = {scale: list(scales[scale])}, scale  # a copy: TINY_SCALES' rows stay as they are
    return d


def fusion_yaml(fusion: str, nc: int, scale: str, family: str = "yolov8", task: str = "detect") -> dict[str, Any]:
    """Return the model dictionary for a built-in ``fusion`` variant of ``family`` at ``scale`` for ``task``."""
    _check_fusion(fusion)
    return derive_fusion(family_yaml(family, scale, task), fusion, nc)


def reads_both_modalities(model: str, fusion: str) -> bool:
    """Whether ``--model model --fusion fusion`` reads RGB and IR: every built-in variant but the single-modality
    baselines, and every model YAML (which defines its own fusion)."""
    return parse_model_name(model) is None or VARIANTS[fusion].both


def misregistration_default(model: str, fusion: str) -> bool:
    """Whether ``--model model --fusion fusion`` trains with the recipe's IR misregistration on a loosely registered
    set when the user sets no bound: the variant's ``misregistration`` (measured per variant), never for a model
    YAML (its joins are the user's: set the bounds to train one with it)."""
    return parse_model_name(model) is not None and VARIANTS[fusion].misregistration


def _check_fusion(fusion: str) -> None:
    if fusion not in VARIANTS:
        raise ValueError(f"unknown fusion {fusion!r}; choose one of {', '.join(VARIANTS)}")


def _absolute(i: int, f: int | list[int]) -> list[int]:
    """Row ``i``'s inputs as absolute indices (-1 before row 0 means the model input)."""
    return [i + x if x < 0 else x for x in (f if isinstance(f, list) else [f])]


def _copy_rows(out: list[Row], rows: list[Row], indices: range, mapping: dict[int, int], source: int,
               origins: dict[int, Origin], stream: str = "shared") -> None:
    """Append ``rows[indices]`` to ``out``; inputs go through ``mapping`` (old -> new index), the model
    input (-1) becomes layer ``source``; ``mapping`` learns each copied row's new index and ``origins``
    its old index and ``stream``."""
    for i in indices:
        f, n, m, args = rows[i]
        new = [source if x == -1 else mapping[x] for x in _absolute(i, f)]
        here = len(out)
        refs = [-1 if x == here - 1 else x for x in new]
        out.append([refs if isinstance(f, list) else refs[0], n, m, list(args)])
        mapping[i] = here
        origins[here] = Origin(i, stream)


def _fuse(rows: list[Row], a: int, b: int, width: int, origins: dict[int, Origin], tap: int) -> int:
    """Concatenate two maps and mix them back to ``width`` channels with a 1x1 conv; return its index."""
    rows += [[[a, b], 1, "Concat", [1]], [-1, 1, "Conv", [width, 1, 1]]]
    origins[len(rows) - 1] = Origin(tap, "fusion")
    return len(rows) - 1


def _attend_and_fuse(rows: list[Row], a: int, b: int, width: int, side: int, origins: dict[int, Origin],
                     tap: int) -> int:
    """DEA over the two maps (their concatenation re-weighted, ``2 * width`` channels), then the 1x1
    fusion conv of :func:`_fuse` back to ``width``; return the conv's index."""
    rows += [[[a, b], 1, "DEAPair", [width, side]], [-1, 1, "Conv", [width, 1, 1]]]
    origins[len(rows) - 2] = Origin(tap, "attention")
    origins[len(rows) - 1] = Origin(tap, "fusion")
    return len(rows) - 1


def _align(rows: list[Row], a: int, b: int, width: int, origins: dict[int, Origin], tap: int) -> int:
    """IR map ``b`` warped onto RGB map ``a``'s positions by a predicted flow (``align.FlowAlign``); return the
    index of the aligned IR map (``width`` channels), which then takes ``b``'s place in the join."""
    rows.append([[a, b], 1, "FlowAlign", [width]])
    origins[len(rows) - 1] = Origin(tap, "attention")
    return len(rows) - 1


def _stride(rows: list[Row], t: int) -> int:
    """The stride of backbone layer ``t`` (a chain: each stride-2 Conv up to it halves the map)."""
    return 2 ** sum(1 for r in rows[: t + 1] if r[2] == "Conv" and len(r[3]) > 2 and r[3][2] == 2)


def _width(row: Row) -> int:
    if row[2] not in _WIDTH_FIRST:
        raise ValueError(f"cannot fuse after a {row[2]} layer: its output width is not its first argument")
    return int(row[3][0])


def derive_fusion(base: dict[str, Any], fusion: str, nc: int) -> dict[str, Any]:
    """Derive a ``fusion`` variant (see :data:`VARIANTS`) from a single-stream detection dictionary."""
    return _derive(base, fusion, nc)[0]


def fusion_origins(base: dict[str, Any], fusion: str) -> list[Origin | None]:
    """For each layer of the model built from ``derive_fusion(base, fusion, nc)``, the single-stream layer
    it copies (see :class:`Origin`); None for the layers fusion adds without weights (input selectors,
    concatenations).

    It is the derivation's own bookkeeping, so it holds for every family: what maps pretrained
    single-stream weights into each stream (``model/pretrained.py``). A row naming one of our attention
    modules becomes several layers when built (``attention.expand_rows``); the list counts built layers.
    """
    d, origins = _derive(base, fusion, 1)
    return _built_layers(d["backbone"] + d["head"], origins)


def _built_layers(rows: list[Row], origins: list[Origin | None]) -> list[Origin | None]:
    from yolofuse_scale.model.attention import expansion  # torch and Ultralytics: only when asked

    built: list[Origin | None] = []
    for row, o in zip(rows, origins):
        count, at = expansion(row[2])
        built += [o if k == at else None for k in range(count)]
    return built


class Derivation:
    """A variant being derived: the single-stream rows it reads, the rows (and their origins) it writes.

    ``shared`` maps a single-stream row to its copy in the one trunk both modalities reach (-1 before
    the first copied row: the model input, or the fused map a variant puts there).
    """

    def __init__(self, base: dict[str, Any]):
        self.rows: list[Row] = list(base["backbone"]) + list(base["head"])
        self.backbone = len(base["backbone"])  # rows [0, backbone) are the backbone
        self.last = len(self.rows) - 1
        self.head = str(self.rows[self.last][2])  # Detect, or OBB / OBB26: every variant keeps the family's head
        if head_task(self.head) is None:
            heads = " or ".join(h for hs in TASK_HEADS.values() for h in hs)
            raise ValueError(f"the last layer must be a head ({heads}), got {self.head}")
        self.out: list[Row] = []
        self.origins: dict[int, Origin] = {}
        self.shared: dict[int, int] = {}

    def copy(self, indices: range, mapping: dict[int, int], source: int, stream: str = "shared") -> None:
        """Append copies of ``rows[indices]`` (see :func:`_copy_rows`)."""
        _copy_rows(self.out, self.rows, indices, mapping, source, self.origins, stream)

    def two_streams(self) -> tuple[dict[int, int], dict[int, int]]:
        """Start a two-stream model: the ``[rgb, ir]`` pair (row 0), RGB (row 1), IR (row 2); return the
        (empty) row mappings of an RGB and an IR branch."""
        self.out += [[-1, 1, "IdentityInput", []], [0, 1, "ModalitySelector", [1]], [0, 1, "ModalitySelector", [2]]]
        return {}, {}


def _data(d: Derivation) -> None:
    """RGB and IR stacked as input channels into one model (YOLOFuse's data-level fusion): the family's
    model unchanged but for its first conv, which reads 3 + C_ir channels."""
    d.copy(range(len(d.rows)), d.shared, -1)


def _one_stream(modality: str, d: Derivation) -> None:
    """``rgb`` / ``ir``: a ``ModalitySelector`` picks one stream, then the family's model unchanged: its
    layers and parameter count are exactly Ultralytics' model for that stream's channels."""
    d.out.append([-1, 1, "ModalitySelector", [1 if modality == "rgb" else 2]])
    d.copy(range(len(d.rows)), d.shared, 0, modality)


def _early(d: Derivation, align: bool = False) -> None:
    """One stem per modality (the two strided convs, P1 and P2); at P2 the two maps are concatenated and
    mixed by a 1x1 conv, and one model carries on from there (YOLOFuse's early feature fusion). It costs
    two stems' FLOPs at the two highest resolutions, but each modality gets filters of its own before
    they are mixed, which data-level fusion, sharing its first conv, does not. With ``align``: the IR map
    is aligned to RGB's first (:func:`_align`)."""
    rows = d.rows
    if any(rows[i][2] != "Conv" or rows[i][3][2] != 2 for i in (0, 1)):
        raise ValueError("early fusion expects two strided Conv rows first (P1, P2)")
    if any(0 in _absolute(i, rows[i][0]) for i in range(2, len(rows))):
        raise ValueError("early fusion: a layer after the stem reads P1 directly")
    a, b = d.two_streams()
    d.copy(range(2), a, 1, "rgb")
    d.copy(range(2), b, 2, "ir")
    ir = _align(d.out, a[1], b[1], _width(rows[1]), d.origins, 1) if align else b[1]
    d.shared[1] = _fuse(d.out, a[1], ir, _width(rows[1]), d.origins, 1)
    d.copy(range(2, len(rows)), d.shared, -1)


def _mid(d: Derivation, attend: bool = False, align: bool = False) -> None:
    """One backbone per modality; every backbone map the head reads (P3/P4/P5) is fused by concatenation
    and a 1x1 conv back to the single-stream width, so neck and head are the family's own. With
    ``attend``: the ``dea`` variant (:func:`_dea`); with ``align``: each IR map is aligned to RGB's first
    (:func:`_align`)."""
    a, b = d.two_streams()
    d.copy(range(d.backbone), a, 1, "rgb")
    d.copy(range(d.backbone), b, 2, "ir")
    rows = d.rows
    taps = sorted({x for i in range(d.backbone, len(rows)) for x in _absolute(i, rows[i][0]) if x < d.backbone})
    for t in taps:
        ir = _align(d.out, a[t], b[t], _width(rows[t]), d.origins, t) if align else b[t]
        if attend:
            side = DEA_GRID // _stride(rows, t)
            d.shared[t] = _attend_and_fuse(d.out, a[t], ir, _width(rows[t]), side, d.origins, t)
        else:
            d.shared[t] = _fuse(d.out, a[t], ir, _width(rows[t]), d.origins, t)
    d.copy(range(d.backbone, len(rows)), d.shared, -1)


def _dea(d: Derivation) -> None:
    """``mid`` with cross-modal attention first: at each of P3/P4/P5 the two streams go through DEYOLO's
    DEA (``attention.DEAPair``: channel attention, each stream gated by the other's channel descriptor
    and a joint one, then spatial attention, each stream gated by maps of the other), then the same
    concatenation + 1x1 conv as ``mid`` into the family's own neck and head. See :data:`DEA_GRID`.

    Why DEA and not a CFT-style transformer (RGB and IR tokens concatenated, self-attention over all of
    them): at P3 of a 640 px image that is 2 x 80 x 80 = 12,800 tokens, a 12,800^2 = 164M-entry attention
    matrix per head and image (0.66 GB in fp32 unless a fused kernel is used; 2 N^2 C = 21 G multiply-adds
    at C = 64, five times the whole yolov8n), and it grows with the image area squared; CFT itself pools
    each map to 8 x 8 tokens first, which throws away the P3 detail small objects live in. DEA is linear in
    the pixels: per pixel O(C^2) for DECA's 1x1 joint conv and O(C k^2) for DEPA's one-channel maps, no
    pairwise term, and it still lets each stream be re-weighted by the other, per channel (global) and per
    pixel (local). At scale n, 640 px, that is +6-8% parameters and +4-12% GFLOPs over ``mid`` (yolov8 /
    yolo11 / yolo26; tests/test_dea_fusion.py holds the bound). A token-attention fusion remains available
    through a YAML's ``DEFA`` rows (attention.py)."""
    _mid(d, attend=True)


def _late(d: Derivation) -> None:
    """Two full backbone + neck branches; one head (``Detect``, or the family's OBB head) reads all six maps
    (YOLOFuse's decision-level fusion), so the assigner picks the best branch per anchor."""
    a, b = d.two_streams()
    d.copy(range(d.last), a, 1, "rgb")
    d.copy(range(d.last), b, 2, "ir")
    srcs = _absolute(d.last, d.rows[d.last][0])
    d.origins[len(d.out)] = Origin(d.last, "shared", tuple((k, s) for s in ("rgb", "ir") for k in range(len(srcs))))
    d.out.append([[a[x] for x in srcs] + [b[x] for x in srcs], 1, d.head, list(d.rows[d.last][3])])


class Variant(NamedTuple):
    """One ``--fusion`` choice (see the module docstring)."""

    brief: str
    """a few words for ``--fusion``'s help"""
    architecture: str
    """what it builds: its row in the README's table"""
    derive: Callable[[Derivation], None]
    """writes its rows into a :class:`Derivation`; its docstring is the variant's full description"""
    both: bool = True
    """whether the model reads both modalities (False: a single-modality baseline, trained without the recipe's IR
    misregistration, ``AugmentRecipe.for_one_modality``)"""
    misregistration: bool = False
    """whether it trains with the recipe's IR misregistration (``data/augment.MISREGISTRATION``) on a data.yaml that
    says ``registration: loose`` unless the user sets the bounds: True where the misregistration study
    (benchmarks/results/fusion_misreg_2core_cpu) measured that it helps on the misregistered scene; on the aligned
    scene it costs every variant, hence the data's say"""


#: The built-in variants, in the order ``--fusion`` lists them.
VARIANTS: dict[str, Variant] = {
    "data": Variant("stacked input", "RGB and IR stacked as input channels into one model (YOLOFuse's data-level "
                    "fusion)", _data, misregistration=True),
    "early": Variant("two stems, fused at P2", "one stem per modality; the two stride-4 maps concatenated, then one "
                     "trunk, neck and head", _early, misregistration=True),
    "mid": Variant("two backbones, fused at P3-P5", "one backbone per modality; P3/P4/P5 concatenated and mixed by a "
                   "1x1 conv into one neck and head", _mid, misregistration=True),
    "dea": Variant("mid with cross-modal channel + spatial attention, DEYOLO's DEA, on each P3-P5 pair before its "
                   "fusion", "`mid` with cross-modal attention first: each stream re-weighted by the other (DEYOLO's "
                   "DEA: channel + spatial)", _dea),
    "late": Variant("two branches, one Detect", "two full backbone+neck branches; one Detect over all six maps "
                    "(decision-level fusion)", _late),
    "early-align": Variant("early with the IR map aligned to RGB's (a predicted flow, align.py) before the join",
                           "`early` with the P2 IR map warped onto RGB's by a predicted per-position offset "
                           "(`FlowAlign`) before the join", functools.partial(_early, align=True)),  # gained nothing
    "mid-align": Variant("mid with each IR map aligned to RGB's (a predicted flow, align.py) before its join",
                         "`mid` with each P3/P4/P5 IR map warped onto RGB's by a predicted per-position offset "
                         "(`FlowAlign`) before its join", functools.partial(_mid, align=True)),  # gained nothing
    "rgb": Variant("RGB only: a single-modality baseline", "single-modality baseline: exactly Ultralytics' model "
                   "behind a stream selector (RGB)", functools.partial(_one_stream, "rgb"), both=False),
    "ir": Variant("IR only: a single-modality baseline", "single-modality baseline: exactly Ultralytics' model "
                  "behind a stream selector (IR)", functools.partial(_one_stream, "ir"), both=False),
}
#: Where the RGB and IR streams meet (``--fusion``'s type, hence its choices): the registry's names.
Fusion = Literal[tuple(VARIANTS)]  # type: ignore[valid-type]  # built from the registry, not typed twice
FUSIONS: tuple[str, ...] = get_args(Fusion)


def _derive(base: dict[str, Any], fusion: str, nc: int) -> tuple[dict[str, Any], list[Origin | None]]:
    _check_fusion(fusion)
    d = Derivation(base)
    VARIANTS[fusion].derive(d)
    # Ultralytics' parser walks backbone + head as one list; the split is only for readers of the YAML.
    meta = {k: v for k, v in base.items() if k not in ("backbone", "head")}
    return {**meta, "nc": nc, "backbone": d.out, "head": []}, [d.origins.get(j) for j in range(len(d.out))]
