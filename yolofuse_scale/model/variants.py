"""The built-in fusion variants, written as Ultralytics-format YAML dictionaries.

Every built-in model is generated in the same schema a user's YAML file uses, and goes through the
same parser, so there is one way a model comes into being. Layers reference each other by absolute
index (or -1 for "the previous row"), which keeps two-branch graphs readable.

Variants (named after YOLOFuse's):

- ``rgb`` / ``ir``: single-modality YOLOv8 baselines (a ``ModalitySelector`` picks the stream).
- ``data``: RGB and IR stacked as input channels into one YOLOv8 (YOLOFuse's data-level fusion).
- ``early``: one stem per modality (P1 and P2 convolutions); at P2 the two maps are concatenated and
  mixed by a 1x1 conv, and one YOLOv8 carries on from there (YOLOFuse's early feature fusion). It
  costs two stems' FLOPs at the two highest resolutions, but each modality gets filters of its own
  before they are mixed, which data-level fusion, sharing its first conv, does not.
- ``mid``: one backbone per modality; at P3/P4/P5 the two feature maps are concatenated and mixed
  by a 1x1 conv back to the single-stream width, so the shared neck and head are exactly YOLOv8's.
- ``late``: two full backbone + neck branches; one ``Detect`` reads all six maps (YOLOFuse's
  decision-level fusion), so the assigner picks the best branch per anchor.
"""

from __future__ import annotations

from typing import Any

FUSIONS = ("data", "early", "mid", "late", "rgb", "ir")

#: [depth_multiple, width_multiple, max_channels] per scale. n..x are YOLOv8's own; ``t`` (tiny) exists
#: only so that tests and CPU demos run in seconds: it is not a model anyone should deploy.
SCALES: dict[str, list[float]] = {
    "t": [0.33, 0.125, 512],
    "n": [0.33, 0.25, 1024],
    "s": [0.33, 0.50, 1024],
    "m": [0.67, 0.75, 768],
    "l": [1.00, 1.00, 512],
    "x": [1.00, 1.25, 512],
}

Row = list[Any]


def _stem(rows: list[Row], src: int) -> int:
    """Append YOLOv8's two strided stem convs reading layer ``src``; return the index of the P2 map."""
    rows += [[src, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv", [128, 3, 2]]]  # P1/2, P2/4
    return len(rows) - 1


def _backbone(rows: list[Row], src: int) -> tuple[int, int, int]:
    """Append a YOLOv8 backbone reading layer ``src``; return the indices of its P3, P4, P5 outputs."""
    return _trunk(rows, _stem(rows, src))


def _trunk(rows: list[Row], p2: int) -> tuple[int, int, int]:
    """Append the YOLOv8 backbone after its stem, reading the P2 map ``p2``; return P3, P4, P5."""
    rows += [
        [p2, 3, "C2f", [128, True]],
        [-1, 1, "Conv", [256, 3, 2]],  # P3/8
        [-1, 6, "C2f", [256, True]],
    ]
    p3 = len(rows) - 1
    rows += [[-1, 1, "Conv", [512, 3, 2]], [-1, 6, "C2f", [512, True]]]  # P4/16
    p4 = len(rows) - 1
    rows += [[-1, 1, "Conv", [1024, 3, 2]], [-1, 3, "C2f", [1024, True]], [-1, 1, "SPPF", [1024, 5]]]  # P5/32
    return p3, p4, len(rows) - 1


def _neck(rows: list[Row], p3: int, p4: int, p5: int) -> list[int]:
    """Append YOLOv8's PAN neck over (p3, p4, p5); return the indices of its three outputs."""
    rows += [
        [p5, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, p4], 1, "Concat", [1]],
        [-1, 3, "C2f", [512]],
    ]
    h4 = len(rows) - 1
    rows += [[-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, p3], 1, "Concat", [1]], [-1, 3, "C2f", [256]]]
    out3 = len(rows) - 1
    rows += [[-1, 1, "Conv", [256, 3, 2]], [[-1, h4], 1, "Concat", [1]], [-1, 3, "C2f", [512]]]
    out4 = len(rows) - 1
    rows += [[-1, 1, "Conv", [512, 3, 2]], [[-1, p5], 1, "Concat", [1]], [-1, 3, "C2f", [1024]]]
    return [out3, out4, len(rows) - 1]


def _fuse(rows: list[Row], a: int, b: int, width: int) -> int:
    """Concatenate two maps and mix them back to ``width`` channels with a 1x1 conv; return its index."""
    rows += [[[a, b], 1, "Concat", [1]], [-1, 1, "Conv", [width, 1, 1]]]
    return len(rows) - 1


def fusion_yaml(fusion: str, nc: int, scale: str) -> dict[str, Any]:
    """Return the model dictionary for a built-in ``fusion`` variant at a YOLOv8 ``scale``."""
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
    if scale not in SCALES:
        raise ValueError(f"unknown model scale {scale!r}; choose one of {', '.join(SCALES)}")
    rows: list[Row] = []
    if fusion == "data":
        outs = _neck(rows, *_backbone(rows, -1))
    elif fusion in ("rgb", "ir"):
        rows.append([-1, 1, "ModalitySelector", [1 if fusion == "rgb" else 2]])
        outs = _neck(rows, *_backbone(rows, 0))
    else:  # two streams, fused at P2 (early), at P3-P5 (mid) or at the Detect (late)
        rows += [[-1, 1, "IdentityInput", []], [0, 1, "ModalitySelector", [1]], [0, 1, "ModalitySelector", [2]]]
        if fusion == "early":
            outs = _neck(rows, *_trunk(rows, _fuse(rows, _stem(rows, 1), _stem(rows, 2), 128)))
        elif fusion == "mid":
            rgb, ir = _backbone(rows, 1), _backbone(rows, 2)
            outs = _neck(rows, *[_fuse(rows, r, i, w) for r, i, w in zip(rgb, ir, (256, 512, 1024))])
        else:  # late: each branch gets its own neck before the shared Detect
            outs = _neck(rows, *_backbone(rows, 1))
            outs += _neck(rows, *_backbone(rows, 2))
    rows.append([outs, 1, "Detect", ["nc"]])
    return _model_dict(rows, nc, scale)


def _model_dict(rows: list[Row], nc: int, scale: str) -> dict[str, Any]:
    # Ultralytics' parser walks backbone + head as one list; the split is only for readers of the YAML.
    return {"nc": nc, "scales": {scale: SCALES[scale]}, "scale": scale, "backbone": rows, "head": []}
