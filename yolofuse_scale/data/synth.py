"""A synthetic LLVIP-like RGB+IR dataset: night street scenes in which each modality misses things.

Three generator settings (``scene``); ``easy`` and ``hard`` draw people (class 0) and cars (class 1):

``easy`` (the default; its bytes for a seed never change):

- visible images are dark, low-contrast and noisy; a person is only faintly visible unless a street
  lamp lights them;
- infrared images show every person warm against a cool, smoothly varying background;
- cars are clear in the visible image (body colour, headlights) but near ambient temperature in IR;
- so IR alone finds people but barely cars, RGB alone finds cars but misses unlit people, and only
  both together see everything. IR is registered to RGB pixel for pixel, like LLVIP.

``hard`` (a scene where fusion has to work for its gain):

- more and smaller people: about half are far away (under ~16 px tall in a 128 px frame, standing
  near the horizon), and a third of the placements are groups of 2-4 that overlap each other;
- occluders: about 30% of people have a pole, a bush or a parked car (a labelled car) in front
  of them, covering part of the body in both modalities (boxes stay the full person);
- IR washout: on ~30% of frames a sun-heated road/wall background covers much of the frame a few
  degrees below skin temperature, so there IR shows people with little or no contrast;
- RGB: a shorter exposure (darker on average, dimmer lamps), stronger sensor noise, and 0-3
  headlight/lamp glare blobs whose cores saturate and hide what is behind them;
- misregistration: the IR image is shifted (up to 2% of the width, 1% of the height) and scaled
  (+-3%) against RGB, per pair. Labels are in RGB pixels. LLVIP's pairs are registered; in hard
  mode ours are not, on purpose: a fusion that assumes pixel alignment pays for it.

So in hard mode RGB misses unlit, small and glare-hidden people, IR misses people in washed-out
frames and cars, both miss what an occluder covers, and a fused model must also tolerate the
few-pixel offset between the two. ``render_pair`` returns a ``meta`` dict saying what was drawn.

``thermal16`` (radiometric IR, for the 16-bit mapping study; people only, class 0):

- IR is written as a 16-bit PNG of temperatures in centi-Kelvin (``raw = 100 x (T + 273.15)``, T in degrees
  Celsius), as FLIR's radiometric TIFFs store them: people at body temperature (body 33-35.5 C, head 35-37 C);
- half the frames are cold (background -5..10 C, a colder sky), half warm (sun-heated ground and walls at
  27..42 C, so a person sits inside the background's range);
- distractors of a person's size and silhouette (mannequins, statues, heated posts; never labelled) at
  temperatures a person does not have: in cold frames 8-25 C or 45-70 C, in warm frames 18-27 C or 44-65 C; and
  on half the frames a small hot spot (an engine, an exhaust, a lamp: 80-150 C);
- so what tells a person from a distractor is the temperature: a fixed mapping (``ir_mapping: {range: ...}``)
  keeps it, per-frame min-max stretching (which maps each frame's own coldest..hottest to 0..255) moves it with
  every frame's extremes; RGB is dark and noisy, people and distractors alike in it;
- the sensor: 0.08 C of noise (a typical microbolometer's NETD), a slight blur; IR registered to RGB.

Everything is drawn from ``numpy.random.default_rng((seed, split, index))`` (``pair_rng``): a pair
depends only on those and the scene, and a seed gives the same bytes on every machine. Images are
PNG; IR is written 1-channel by default (like LLVIP's thermal camera), and ``ir_channels`` in the
written ``data.yaml`` says how the model reads it; a hard or thermal16 set's ``data.yaml`` also has
``synth: {scene: ..., seed: N}`` (a thermal16 set's states no ``ir_mapping``: the study sets it per run).

A fourth setting, ``aerial``, is a different scene altogether (DroneVehicle-like: top-down vehicles of five kinds,
oriented boxes, the RGB and IR images labelled each on its own): ``synth_aerial.py`` draws it; this module only
writes it, with the same seeding, layout and workers.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Literal, get_args

import cv2
import numpy as np
import yaml

from yolofuse_scale.data import synth_aerial

NAMES = {0: "person", 1: "car"}
_SPLITS = {"train": 0, "val": 1}
Scene = Literal["easy", "hard", "thermal16", "aerial"]  # aerial: synth_aerial.py (oriented boxes, per-modality labels)
SCENES: tuple[str, ...] = get_args(Scene)
_SODIUM = np.array([1.0, 0.85, 0.55], np.float32)  # sodium-lamp orange (RGB)
_WASHOUT_P = 0.3  # share of hard frames with a warm (washed-out) IR background


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int, lo: float, hi: float) -> np.ndarray:
    """Low-frequency random field in [lo, hi]: a coarse grid of random values, bicubically upsampled."""
    coarse = rng.uniform(lo, hi, size=(cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-9)


def pair_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator pair ``index`` of ``split`` is drawn from: nothing else decides its bytes (and the scene)."""
    return np.random.default_rng((seed, _SPLITS[split], index))


def _person_shape(x1: float, y1: float, bw: float, bh: float) -> tuple:
    """Head centre and radius, body centre and half-axes of a person standing in a box."""
    cx = (x1 + x1 + bw) / 2
    head_r = max(1, int(bw * 0.28))
    body = (int(cx), int(y1 + head_r * 2 + (bh - head_r * 2) / 2))
    axes = (max(1, int(bw / 2)), max(1, int((bh - head_r * 2) / 2)))
    return (int(cx), int(y1 + head_r)), head_r, body, axes


def _draw_person(img: np.ndarray, shape: tuple, body_value, head_value) -> None:
    head, head_r, body, axes = shape
    cv2.ellipse(img, body, axes, 0, 0, 360, body_value, -1)
    cv2.circle(img, head, head_r, head_value, -1)


def _draw_car(rgb: np.ndarray, ir: np.ndarray, colour: np.ndarray, box: tuple, ir_temp: float) -> None:
    """Body, cabin and headlights in RGB; in IR a flat patch at ``ir_temp`` (a parked car is near ambient)."""
    x1, y1, bw, bh = box
    x2, y2 = x1 + bw, y1 + bh
    pts = (int(x1), int(y1 + 0.3 * bh)), (int(x2), int(y2))
    cv2.rectangle(rgb, *pts, colour.tolist(), -1)
    cabin = (int(x1 + 0.15 * bw), int(y1)), (int(x2 - 0.15 * bw), int(y1 + 0.35 * bh))
    cv2.rectangle(rgb, *cabin, (colour * 0.7).tolist(), -1)
    r = max(1, int(0.06 * bw))
    for hx in (x1 + 0.12 * bw, x2 - 0.12 * bw):  # headlights
        cv2.circle(rgb, (int(hx), int(y1 + 0.65 * bh)), r, (255, 250, 220), -1)
    cv2.rectangle(ir, *pts, ir_temp, -1)


def _easy_meta(objects: list[dict]) -> dict:
    return {"scene": "easy", "rgb_gain": 1.0, "rgb_noise": 5.0, "washout": False, "glare": 0,
            "ir_shift": (0.0, 0.0), "ir_scale": 1.0, "objects": objects}


def _render_easy(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, list[tuple], dict]:
    """The original scene; every draw and its order are frozen (a seed must keep its bytes)."""
    # Visible: dark vertical gradient (sky -> street), a few lamps lighting round patches.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 12 + 14 * (yy / h)
    light = np.zeros((h, w), np.float32)
    for _ in range(rng.integers(0, 3)):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h * 0.7), rng.uniform(0.12, 0.3) * h
        light += 90 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
    rgb = (base[..., None] + light[..., None] * _SODIUM) * np.ones(3, np.float32)
    # Infrared: cool background with smooth thermal texture (warmer road at the bottom).
    ir = _smooth_field(rng, h, w, 4, 50, 90) + 20 * (yy / h)

    boxes: list[tuple] = []
    objects: list[dict] = []
    for _ in range(rng.integers(0, 7)):
        is_car = rng.random() < 0.35
        for _attempt in range(10):
            if is_car:
                bw = rng.uniform(0.16, 0.32) * w
                bh = bw * rng.uniform(0.4, 0.55)
            else:
                bh = rng.uniform(0.14, 0.42) * h
                bw = bh / rng.uniform(2.2, 2.8)
            x1, y1 = rng.uniform(0, w - bw), rng.uniform(0.15 * h, h - bh)
            cand = (x1, y1, x1 + bw, y1 + bh)
            if all(_iou(cand, b[1:]) < 0.2 for b in boxes):
                break
        else:
            continue
        x1, y1, x2, y2 = cand
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        lit = light[int(min(cy, h - 1)), int(min(cx, w - 1))]
        if is_car:
            colour = rng.uniform(40, 160, size=3)
            # (the IR temperature is sampled from the IR drawn so far, so the bytes match earlier releases)
            temp = float(ir[int(cy), int(cx)] + 4)
            _draw_car(rgb, ir, colour, (x1, y1, bw, bh), temp)
            objects.append({"cls": 1, "ir_contrast": 4.0, "occluder": None})
        else:
            shape = _person_shape(x1, y1, bw, bh)
            # Visible: barely above the dark background unless a lamp lights the person.
            contrast = 6.0 + 0.9 * lit
            shade = (rgb[int(cy), int(cx)] + contrast * rng.uniform(0.7, 1.0, size=3)).tolist()
            _draw_person(rgb, shape, shade, shade)
            # Infrared: people are warm.
            warm = float(rng.uniform(185, 235))
            objects.append({"cls": 0, "ir_contrast": warm - float(ir[int(cy), int(cx)]), "occluder": None})
            _draw_person(ir, shape, warm, warm + 10)
        boxes.append((1 if is_car else 0, x1, y1, x2, y2))

    rgb += rng.normal(0, 5, size=rgb.shape).astype(np.float32)  # sensor noise, strong in the dark
    ir = cv2.GaussianBlur(ir, (3, 3), 0) + rng.normal(0, 3, size=ir.shape).astype(np.float32)
    return np.clip(rgb, 0, 255), np.clip(ir, 0, 255), boxes, _easy_meta(objects)


def _hard_background(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """RGB street (darker exposure, dimmer lamps), its lamp light, and the IR background (maybe washed out)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gain = float(rng.uniform(0.35, 0.8))  # a shorter exposure than the easy scene's: less light per frame
    light = np.zeros((h, w), np.float32)
    for _ in range(rng.integers(0, 3)):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h * 0.7), rng.uniform(0.1, 0.25) * h
        light += gain * rng.uniform(50, 100) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
    rgb = (gain * (10 + 12 * (yy / h)))[..., None] + light[..., None] * _SODIUM
    ir = _smooth_field(rng, h, w, 4, 50, 90) + 20 * (yy / h)
    washout = bool(rng.random() < _WASHOUT_P)
    if washout:
        # Sun-heated road and walls after a hot day: most of the frame sits a few degrees below skin,
        # so a person there barely stands out in IR.
        warm = _smooth_field(rng, h, w, 3, 175, 215)
        mask = np.clip(_smooth_field(rng, h, w, 3, -0.3, 2.0), 0, 1)
        ir = ir + mask * (warm - ir)
    return rgb.astype(np.float32), light, ir, {"rgb_gain": gain, "washout": washout}


def _place_hard_objects(rng: np.random.Generator, h: int, w: int) -> list[tuple]:
    """Object boxes ``(cls, x1, y1, bw, bh)``: many small far people, overlapping groups, a few cars."""
    specs: list[tuple] = []

    def fits(cand: tuple, limit: float) -> bool:
        return all(_iou(cand, (b[1], b[2], b[1] + b[3], b[2] + b[4])) < limit for b in specs)

    for _ in range(rng.integers(1, 8)):
        far = rng.random() < 0.55  # under ~16 px tall at 128 px frames
        bh = (rng.uniform(0.06, 0.125) if far else rng.uniform(0.125, 0.42)) * h
        bw = bh / rng.uniform(2.2, 2.8)
        x1 = rng.uniform(0, w - bw)
        y1 = rng.uniform(0.15 * h, 0.6 * h) if far else rng.uniform(0.15 * h, h - bh)  # far: near the horizon
        size = int(rng.integers(2, 5)) if rng.random() < 0.35 else 1
        step = bw * rng.uniform(0.45, 0.85) * (1 if rng.random() < 0.5 else -1)  # group mates overlap
        for k in range(size):
            mh = bh * rng.uniform(0.9, 1.1)
            mx1, my1 = x1 + k * step, y1 + (bh - mh) + rng.uniform(-0.05, 0.05) * bh
            cand = (mx1, my1, mx1 + mh / (bh / bw), my1 + mh)
            if fits(cand, 0.5):
                specs.append((0, mx1, my1, cand[2] - mx1, mh))
    for _ in range(rng.integers(0, 3)):
        bw = rng.uniform(0.16, 0.32) * w
        bh = bw * rng.uniform(0.4, 0.55)
        x1, y1 = rng.uniform(0, w - bw), rng.uniform(0.15 * h, h - bh)
        if fits((x1, y1, x1 + bw, y1 + bh), 0.3):
            specs.append((1, x1, y1, bw, bh))
    return sorted(specs, key=lambda s: s[2] + s[4])  # far (higher feet) first: nearer objects cover them


def _occlude(rng: np.random.Generator, rgb, ir, bg_ir, spec: tuple, gain: float, w: int) -> tuple[str, tuple | None]:
    """Cover part of the person ``spec`` in both modalities with a pole, a bush or a parked car.

    Returns the kind and, for a car, its box ``(x1, y1, bw, bh)`` (a car is labelled, poles and bushes are not).
    """
    _, x1, y1, bw, bh = spec
    cx, y2 = x1 + bw / 2, y1 + bh
    kind = ("pole", "bush", "car")[rng.choice(3, p=[0.35, 0.4, 0.25])]
    mask = np.zeros(ir.shape, np.uint8)
    if kind == "car":
        cw = bh * rng.uniform(1.4, 2.0)
        ch = cw * rng.uniform(0.4, 0.55)
        box = (cx - cw * rng.uniform(0.2, 0.8), y2 + rng.uniform(0.0, 0.1) * bh - ch, cw, ch)
        colour = rng.uniform(40, 160, size=3) * gain * 1.5
        _draw_car(rgb, ir, colour, box, float(bg_ir[min(int(y2), ir.shape[0] - 1), min(int(cx), w - 1)] + 4))
        return kind, box
    if kind == "pole":
        px, pw = rng.uniform(x1, x1 + bw), max(1.0, rng.uniform(0.006, 0.015) * w)
        cv2.rectangle(mask, (int(px), int(rng.uniform(0, y1))), (int(px + pw), int(y2 + 2)), 1, -1)
        rgb[mask > 0] = gain * np.array([22, 22, 24], np.float32)
        ir[mask > 0] = bg_ir[mask > 0] + 2  # metal at ambient
    else:
        centre = (int(cx + rng.uniform(-0.3, 0.3) * bw), int(y2))
        axes = (max(1, int(bw * rng.uniform(0.7, 1.3))), max(1, int(bh * rng.uniform(0.25, 0.5))))
        cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1)
        rgb[mask > 0] = gain * np.array([10, 26, 12], np.float32)
        ir[mask > 0] = bg_ir[mask > 0] - 4  # leaves a little cooler than the air
    return kind, None


def _glare(rng: np.random.Generator, rgb: np.ndarray) -> int:
    """Oncoming headlights and bare lamps: bright blobs whose cores saturate the sensor."""
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    n = int(rng.integers(0, 4))
    for _ in range(n):
        cx, cy, s = rng.uniform(0, w), rng.uniform(0.3 * h, 0.95 * h), rng.uniform(0.015, 0.05) * h
        blob = rng.uniform(300, 600) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
        rgb += blob[..., None] * np.array([1.0, 0.97, 0.85], np.float32)
    return n


def _misregister(rng: np.random.Generator, ir: np.ndarray) -> tuple[np.ndarray, tuple[float, float], float]:
    """Shift (up to 2% of the width, 1% of the height) and scale (+-3%) IR about the frame centre."""
    h, w = ir.shape
    dx, dy = float(rng.uniform(-0.02, 0.02) * w), float(rng.uniform(-0.01, 0.01) * h)
    s = float(rng.uniform(0.97, 1.03))
    m = np.array([[s, 0, (1 - s) * w / 2 + dx], [0, s, (1 - s) * h / 2 + dy]], np.float32)
    return cv2.warpAffine(ir, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT), (dx, dy), s


def _clip_box(cls: int, box: tuple, h: int, w: int) -> tuple | None:
    """``(cls, x1, y1, x2, y2)`` clipped to the frame; None below 2 px on a side."""
    x1, y1, bw, bh = box
    x1c, y1c, x2c, y2c = max(0.0, x1), max(0.0, y1), min(float(w), x1 + bw), min(float(h), y1 + bh)
    return (cls, x1c, y1c, x2c, y2c) if x2c - x1c >= 2 and y2c - y1c >= 2 else None


def _render_hard(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, list[tuple], dict]:
    """Background, objects far to near (occluders right after the person they cover), glare, then the IR
    warp, then noise: the warp moves everything drawn into IR, the labels stay in RGB pixels."""
    rgb, light, ir, meta = _hard_background(rng, h, w)
    bg_ir = ir.copy()  # the background temperature under each object, for its occluders and its contrast
    labelled: list[tuple[tuple, dict]] = []
    for spec in _place_hard_objects(rng, h, w):
        cls, x1, y1, bw, bh = spec
        cx, cy = min(int(x1 + bw / 2), w - 1), min(int(y1 + bh / 2), h - 1)
        if cls == 1:
            colour = rng.uniform(40, 160, size=3) * meta["rgb_gain"] * 1.5
            _draw_car(rgb, ir, colour, spec[1:], float(bg_ir[cy, cx] + 4))
            labelled.append(((1, *spec[1:]), {"cls": 1, "ir_contrast": 4.0, "occluder": None}))
            continue
        shape = _person_shape(x1, y1, bw, bh)
        shade = (rgb[cy, cx] + (3.0 + 0.9 * light[cy, cx]) * rng.uniform(0.7, 1.0, size=3)).tolist()
        _draw_person(rgb, shape, shade, shade)
        warm = float(rng.uniform(180, 230))
        _draw_person(ir, shape, warm, warm + 10)
        obj = {"cls": 0, "ir_contrast": warm - float(bg_ir[cy, cx]), "occluder": None}
        labelled.append(((0, *spec[1:]), obj))
        if rng.random() < 0.3:
            obj["occluder"], car = _occlude(rng, rgb, ir, bg_ir, spec, meta["rgb_gain"], w)
            if car is not None:
                labelled.append(((1, *car), {"cls": 1, "ir_contrast": 4.0, "occluder": None}))
    meta["glare"] = _glare(rng, rgb)
    ir, meta["ir_shift"], meta["ir_scale"] = _misregister(rng, ir)
    meta["rgb_noise"] = float(rng.uniform(6, 12))
    rgb += rng.normal(0, meta["rgb_noise"], size=rgb.shape).astype(np.float32)
    ir = cv2.GaussianBlur(ir, (3, 3), 0) + rng.normal(0, 3, size=ir.shape).astype(np.float32)
    boxes, objects = [], []
    for (cls, *box), obj in labelled:
        clipped = _clip_box(cls, tuple(box), h, w)
        if clipped is not None:
            boxes.append(clipped)
            objects.append(obj)
    return np.clip(rgb, 0, 255), np.clip(ir, 0, 255), boxes, {"scene": "hard", **meta, "objects": objects}


def kelvin100(t_celsius: np.ndarray) -> np.ndarray:
    """Temperatures (degrees Celsius) as 16-bit radiometric raw values, centi-Kelvin (FLIR's radiometric TIFFs)."""
    return np.clip(np.round((t_celsius + 273.15) * 100), 0, 65535).astype(np.uint16)


def _render_thermal16(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, list[tuple], dict]:
    """The radiometric scene (module docstring): RGB 0..255, IR in degrees Celsius, people-only boxes."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    warm = bool(rng.random() < 0.5)
    if warm:  # sun-heated ground and walls: a person at body temperature sits inside this range
        ir = _smooth_field(rng, h, w, 4, 27, 42) + 3 * (yy / h)
    else:
        ir = _smooth_field(rng, h, w, 4, -5, 10) + 4 * (yy / h)
        ir = np.where(yy < 0.2 * h, ir - rng.uniform(3, 8), ir).astype(np.float32)  # a colder sky at the top
    rgb = (6 + 10 * (yy / h))[..., None] * np.ones(3, np.float32)  # dark: people and distractors alike
    boxes: list[tuple] = []
    placed: list[tuple] = []
    objects: list[dict] = []
    n_people, n_decoys = int(rng.integers(1, 6)), int(rng.integers(1, 5))
    for k in range(n_people + n_decoys):
        person = k < n_people
        for _attempt in range(10):
            bh = rng.uniform(0.16, 0.42) * h
            bw = bh / rng.uniform(2.2, 2.8)
            x1, y1 = rng.uniform(0, w - bw), rng.uniform(0.15 * h, h - bh)
            cand = (x1, y1, x1 + bw, y1 + bh)
            if all(_iou(cand, b) < 0.1 for b in placed):
                break
        else:
            continue
        placed.append(cand)
        shape = _person_shape(x1, y1, bw, bh)
        if person:
            body, head = float(rng.uniform(33, 35.5)), float(rng.uniform(35, 37))
        elif rng.random() < 0.5:  # colder than a person
            body = float(rng.uniform(18, 27) if warm else rng.uniform(8, 25))
            head = body + float(rng.uniform(-1, 1))
        else:  # hotter than a person: sun-heated metal, a warm engine
            body = float(rng.uniform(44, 65) if warm else rng.uniform(45, 70))
            head = body + float(rng.uniform(-1, 1))
        _draw_person(ir, shape, body, head)
        shade = (rgb[int(min(y1 + bh / 2, h - 1)), int(min(x1 + bw / 2, w - 1))] + rng.uniform(4, 9)).tolist()
        _draw_person(rgb, shape, shade, shade)
        objects.append({"cls": 0 if person else None, "body_c": body, "head_c": head})
        if person:
            boxes.append((0, x1, y1, x1 + bw, y1 + bh))
    hot = bool(rng.random() < 0.5)
    if hot:  # an engine, an exhaust, a lamp: a few pixels far hotter than anything else
        cx, cy, r = rng.uniform(0, w), rng.uniform(0.3 * h, h), max(1.5, rng.uniform(0.01, 0.03) * h)
        ir = np.where((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r, np.float32(rng.uniform(80, 150)), ir)
    rgb += rng.normal(0, 6, size=rgb.shape).astype(np.float32)
    ir = cv2.GaussianBlur(ir.astype(np.float32), (3, 3), 0) + rng.normal(0, 0.08, size=ir.shape).astype(np.float32)
    meta = {"scene": "thermal16", "warm": warm, "hot_spot": hot, "objects": objects}
    return np.clip(rgb, 0, 255), ir.astype(np.float32), boxes, meta


def render_pair(
    rng: np.random.Generator, h: int, w: int, scene: Scene = "easy"
) -> tuple[np.ndarray, np.ndarray, list[tuple], dict]:
    """One scene: (RGB float HxWx3, IR float HxW, boxes as (cls, x1, y1, x2, y2) in RGB pixels, meta).

    ``meta`` says what was drawn: ``scene``, ``rgb_gain`` (exposure), ``rgb_noise`` (sigma),
    ``washout`` (warm IR background), ``glare`` (blob count), ``ir_shift`` ((dx, dy) px) and
    ``ir_scale`` (IR relative to RGB), and ``objects``, one dict per box: ``cls``, ``ir_contrast``
    (temperature minus the background under it) and ``occluder`` (None, "pole", "bush" or "car").
    """
    if scene == "easy":
        return _render_easy(rng, h, w)
    if scene == "hard":
        return _render_hard(rng, h, w)
    if scene == "thermal16":
        return _render_thermal16(rng, h, w)
    raise ValueError(f"scene must be one of {', '.join(SCENES)}, got {scene!r}")

def _write_pairs(
    out: Path, split: str, indices: range, h: int, w: int, seed: int, ir_channels: int, scene: Scene = "easy"
) -> None:
    """Render and write pairs ``indices`` of ``split`` (one worker's share; each pair is independent)."""
    if scene == "aerial":
        rng = functools.partial(pair_rng, seed, split)
        return synth_aerial.write_pairs(out, split, indices, h, w, rng, ir_channels)
    dirs = [out / d / split for d in ("images", "imagesIR", "labels")]
    for i in indices:
        rgb, ir, boxes, _meta = render_pair(pair_rng(seed, split, i), h, w, scene)
        name = f"{split}_{i:05d}"
        cv2.imwrite(str(dirs[0] / f"{name}.png"), cv2.cvtColor(rgb.astype(np.uint8), cv2.COLOR_RGB2BGR))
        ir_px = kelvin100(ir) if scene == "thermal16" else ir.astype(np.uint8)  # thermal16: degrees C -> 16-bit raw
        cv2.imwrite(str(dirs[1] / f"{name}.png"), ir_px if ir_channels == 1 else cv2.merge([ir_px] * 3))
        lines = [
            f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
            for c, x1, y1, x2, y2 in boxes
        ]
        (dirs[2] / f"{name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))


def _write_pairs_star(job: tuple) -> None:
    cv2.setNumThreads(1)  # the processes are the parallelism: OpenCV's own threads would oversubscribe
    _write_pairs(*job)


def write_synthetic_dataset(
    out: str | Path,
    n_train: int = 64,
    n_val: int = 16,
    imgsz: int = 128,
    seed: int = 0,
    ir_channels: int = 1,
    workers: int = 1,
    scene: Scene = "easy",
) -> Path:
    """Write the dataset in the YOLOFuse layout under ``out``; return the path of its ``data.yaml``.

    Frames are ``imgsz`` high and 1.25x as wide (LLVIP's landscape aspect), PNG; IR is written with
    ``ir_channels`` channels and ``data.yaml`` asks the model for the same. Pair ``i`` of a split
    depends only on ``(seed, split, i)``, so growing ``n_train`` keeps the earlier pairs, and
    ``workers`` > 1 processes write the same bytes (a 640 px pair costs ~0.06 s, mostly PNG encoding).
    ``data.yaml`` is written last: its presence means the set is complete. ``scene`` picks the
    generator setting (module docstring); a hard set's ``data.yaml`` records it under ``synth:``
    (an easy one's stays byte-identical to earlier releases, so absence means easy).
    """
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {', '.join(SCENES)}, got {scene!r}")
    if ir_channels not in (1, 3):
        raise ValueError(f"ir_channels must be 1 or 3, got {ir_channels}")
    if imgsz < 32:  # below this the people are a few pixels and the head/body shapes degenerate
        raise ValueError(f"imgsz must be at least 32, got {imgsz}")
    if n_train < 0 or n_val < 0:
        raise ValueError(f"n_train and n_val must be >= 0, got {n_train}, {n_val}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    out = Path(out)
    h, w = imgsz, int(round(imgsz * 1.25 / 2) * 2)  # LLVIP's 5:4 landscape frames
    jobs = []
    for split, n in (("train", n_train), ("val", n_val)):
        for d in ("images", "imagesIR", "labels", *(("labelsIR",) if scene == "aerial" else ())):
            (out / d / split).mkdir(parents=True, exist_ok=True)
        chunk = max(1, -(-n // max(1, workers * 4)))  # a few chunks per worker evens out their finish
        jobs += [(out, split, range(a, min(n, a + chunk)), h, w, seed, ir_channels, scene)
                 for a in range(0, n, chunk)]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing

        # fork: the children start with this process's imports (spawn re-imports torch: ~2-4 s each);
        # nothing here has started threads yet (OpenCV's pool starts with the first encode)
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(min(workers, len(jobs))) as pool:
            pool.map(_write_pairs_star, jobs, chunksize=1)
    else:
        for job in jobs:
            _write_pairs(*job)
    data_yaml = out / "data.yaml"
    if scene == "aerial":
        data_yaml.write_text(synth_aerial.data_yaml(ir_channels, seed))
        return data_yaml
    spec = {
        "path": ".",  # relative to this file: the folder can be moved or copied as a whole
        "train": "images/train",
        "val": "images/val",
        "names": {0: NAMES[0]} if scene == "thermal16" else dict(NAMES),
        "ir_dir": "imagesIR",
        "ir_channels": ir_channels,
    }
    header = "# synthetic LLVIP-like RGB+IR set written by `yolofuse-scale synth`\n"
    if scene == "hard":  # the loaders ignore keys they do not know; Ultralytics' too
        header += f"# scene {scene}: IR is NOT registered to RGB; labels are in RGB pixels\n"
    if scene == "thermal16":
        header += ("# scene thermal16: IR is 16-bit radiometric, centi-Kelvin (raw = 100 x (T_C + 273.15)); choose "
                   "an ir_mapping (docs/data.md)\n")
    if scene != "easy":
        spec["synth"] = {"scene": scene, "seed": seed}
    data_yaml.write_text(header + yaml.safe_dump(spec, sort_keys=False))
    return data_yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``synth`` options to ``parser`` (``yolofuse-scale synth``)."""
    parser.add_argument(
        "--out", required=True, help="folder to write images/, imagesIR/, labels/ and data.yaml into"
    )
    parser.add_argument("--train", type=int, default=256, help="number of training pairs (default: 256)")
    parser.add_argument("--val", type=int, default=64, help="number of validation pairs (default: 64)")
    parser.add_argument(
        "--imgsz", type=int, default=160, help="frame height in pixels; width is 1.25x (default: 160)"
    )
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default: 0)")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes writing pairs; same bytes for any count (default: 1)"
    )
    parser.add_argument(
        "--ir-channels",
        type=int,
        choices=(1, 3),
        default=1,
        help="write IR as 1-channel (thermal camera) or 3-channel files; data.yaml matches (default: 1)",
    )
    parser.add_argument(
        "--scene",
        choices=SCENES,
        default="easy",
        help="easy: people always warm in IR, IR registered to RGB; hard: small/occluded people, IR washout, "
        "darker RGB with glare, IR shifted and scaled against RGB; thermal16: 16-bit radiometric IR (centi-Kelvin), "
        "people at body temperature in cold and in warm surroundings among person-shaped distractors at other "
        "temperatures; aerial: top-down roads and rotated vehicles of five kinds (task: obb), some visible only in "
        "IR at night, the RGB and IR images labelled each on its own (labels/, labelsIR/) (default: easy)",
    )


def run(args: argparse.Namespace) -> int:
    """Write the dataset the parsed ``args`` describe; print where ``data.yaml`` went; return 0."""
    path = write_synthetic_dataset(
        args.out, args.train, args.val, args.imgsz, args.seed, args.ir_channels, workers=args.workers,
        scene=args.scene,
    )
    print(f"wrote {args.train} train + {args.val} val {args.scene} pairs: {path}")
    return 0
