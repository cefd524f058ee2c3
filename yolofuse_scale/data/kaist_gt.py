"""KAIST's ground truth as its evaluation needs it: every object with its label, occlusion and ignore flag.

YOLO label files hold boxes of training classes only; KAIST's miss rate also needs what they drop: the boxes
labelled ``people``, ``person?`` and ``cyclist`` (ignore regions), each pedestrian's occlusion level (0 none,
1 partial, 2 heavy) and the annotators' ignore flag. ``convert kaist`` writes them, per converted image, into one
side file beside ``data.yaml`` (named there by ``missrate:``); ``engine/missrate.py`` reads it. Boxes stay in the
annotation's own pixels, ``[x, y, w, h]`` as KAIST's files give them, unclipped, so the metric applies the
protocol's rules (height, bounds) to exactly what was annotated.

The file is JSON (``json.loads``: nothing in it can run code), keys sorted, one image per line::

    {"format": "yolofuse-scale/kaist-gt", "version": 1, "images": {
    "set06_V000_I00019": {"size": [640, 512], "objects": [["person", 100, 200, 30, 60, 0, 0], ...]},
    ...}}

an object being ``[label, x, y, w, h, occlusion, ignore]``; an image is keyed by the stem of its converted file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from yolofuse_scale.data.config import DataError

FORMAT = "yolofuse-scale/kaist-gt"
VERSION = 1
#: KAIST's labels: ``person`` is the class; the others are regions its evaluation ignores.
LABELS = ("person", "people", "person?", "cyclist")
OCCLUSIONS = (0, 1, 2)  # none, partial, heavy


@dataclass(frozen=True)
class KaistObject:
    """One annotated object, in the image's pixels."""

    label: str
    x: float
    y: float
    w: float
    h: float
    occlusion: int  #: 0 none, 1 partial, 2 heavy
    ignore: bool  #: the annotation's own ignore flag (bbGt's ``ign``)

    def row(self) -> list:
        num = [int(v) if float(v).is_integer() else v for v in (self.x, self.y, self.w, self.h)]
        return [self.label, *num, self.occlusion, int(self.ignore)]


@dataclass(frozen=True)
class KaistImage:
    size: tuple[int, int]  #: (width, height) as displayed
    objects: tuple[KaistObject, ...]


def dumps(images: dict[str, KaistImage]) -> str:
    """The side file's text: deterministic (sorted keys, fixed number formatting), so a rerun writes the same bytes."""
    rows = [f"{json.dumps(stem)}: " + json.dumps({"size": list(im.size), "objects": [o.row() for o in im.objects]})
            for stem, im in sorted(images.items())]
    head = f'{{"format": "{FORMAT}", "version": {VERSION}, "images": {{'
    return head + "\n" + ",\n".join(rows) + "}}\n"


def _object(raw, where: str) -> KaistObject:
    ok = (isinstance(raw, list) and len(raw) == 7 and raw[0] in LABELS
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw[1:5])
          and raw[5] in OCCLUSIONS and raw[6] in (0, 1))
    if not ok:
        raise DataError(f"{where}: expected [label, x, y, w, h, occlusion 0-2, ignore 0/1] with label one of "
                        f"{', '.join(LABELS)}, got {raw!r}"[:400])
    return KaistObject(raw[0], *(float(v) for v in raw[1:5]), int(raw[5]), bool(raw[6]))


def load(path: str | Path) -> dict[str, KaistImage]:
    """Read and check a side file; raises :class:`DataError` naming the file (and the image) for anything else."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: KAIST annotation file not found (`convert kaist` writes it beside data.yaml)") \
            from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a readable KAIST annotation file ({e})") from e
    if not isinstance(d, dict) or d.get("format") != FORMAT or d.get("version") != VERSION \
            or not isinstance(d.get("images"), dict):
        raise DataError(f"{path}: not a {FORMAT} file of version {VERSION} (written by `convert kaist`)")
    out = {}
    for stem, im in d["images"].items():
        where = f"{path}: image {stem}"
        size = im.get("size") if isinstance(im, dict) else None
        objects = im.get("objects") if isinstance(im, dict) else None
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)
                and isinstance(objects, list)):
            raise DataError(f"{where}: expected {{\"size\": [width, height], \"objects\": [...]}}")
        out[stem] = KaistImage((size[0], size[1]), tuple(_object(o, where) for o in objects))
    return out
