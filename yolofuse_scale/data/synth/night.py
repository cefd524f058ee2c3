"""The LLVIP-like night street scenes, ``easy`` and ``hard``: people (class 0) and cars (class 1), each
modality missing things.

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
few-pixel offset between the two. ``render_pair`` (the package's) returns a ``meta`` dict saying what was drawn.
"""

from __future__ import annotations

import cv2
import numpy as np

from yolofuse_scale.data.synth.common import draw_person, iou, person_shape, smooth_field

NAMES = {0: "person", 1: "car"}
_SODIUM = np.array([1.0, 0.85, 0.55], np.float32)  # sodium-lamp orange (RGB)
_WASHOUT_P = 0.3  # share of hard frames with a warm (washed-out) IR background


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


def render_easy(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, list[tuple], dict]:
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
    ir = smooth_field(rng, h, w, 4, 50, 90) + 20 * (yy / h)

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
            if all(iou(cand, b[1:]) < 0.2 for b in boxes):
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
            shape = person_shape(x1, y1, bw, bh)
            # Visible: barely above the dark background unless a lamp lights the person.
            contrast = 6.0 + 0.9 * lit
            shade = (rgb[int(cy), int(cx)] + contrast * rng.uniform(0.7, 1.0, size=3)).tolist()
            draw_person(rgb, shape, shade, shade)
            # Infrared: people are warm.
            warm = float(rng.uniform(185, 235))
            objects.append({"cls": 0, "ir_contrast": warm - float(ir[int(cy), int(cx)]), "occluder": None})
            draw_person(ir, shape, warm, warm + 10)
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
    ir = smooth_field(rng, h, w, 4, 50, 90) + 20 * (yy / h)
    washout = bool(rng.random() < _WASHOUT_P)
    if washout:
        # Sun-heated road and walls after a hot day: most of the frame sits a few degrees below skin,
        # so a person there barely stands out in IR.
        warm = smooth_field(rng, h, w, 3, 175, 215)
        mask = np.clip(smooth_field(rng, h, w, 3, -0.3, 2.0), 0, 1)
        ir = ir + mask * (warm - ir)
    return rgb.astype(np.float32), light, ir, {"rgb_gain": gain, "washout": washout}


def _place_hard_objects(rng: np.random.Generator, h: int, w: int) -> list[tuple]:
    """Object boxes ``(cls, x1, y1, bw, bh)``: many small far people, overlapping groups, a few cars."""
    specs: list[tuple] = []

    def fits(cand: tuple, limit: float) -> bool:
        return all(iou(cand, (b[1], b[2], b[1] + b[3], b[2] + b[4])) < limit for b in specs)

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


def render_hard(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, list[tuple], dict]:
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
        shape = person_shape(x1, y1, bw, bh)
        shade = (rgb[cy, cx] + (3.0 + 0.9 * light[cy, cx]) * rng.uniform(0.7, 1.0, size=3)).tolist()
        draw_person(rgb, shape, shade, shade)
        warm = float(rng.uniform(180, 230))
        draw_person(ir, shape, warm, warm + 10)
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
