"""The radiometric scene, ``thermal16`` (for the 16-bit mapping study; people only, class 0):

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
"""

from __future__ import annotations

import cv2
import numpy as np

from yolofuse_scale.data.synth.common import draw_person, iou, person_shape, smooth_field


def kelvin100(t_celsius: np.ndarray) -> np.ndarray:
    """Temperatures (degrees Celsius) as 16-bit radiometric raw values, centi-Kelvin (FLIR's radiometric TIFFs)."""
    return np.clip(np.round((t_celsius + 273.15) * 100), 0, 65535).astype(np.uint16)


def render_thermal16(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, list[tuple], dict]:
    """The radiometric scene (module docstring): RGB 0..255, IR in degrees Celsius, people-only boxes."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    warm = bool(rng.random() < 0.5)
    if warm:  # sun-heated ground and walls: a person at body temperature sits inside this range
        ir = smooth_field(rng, h, w, 4, 27, 42) + 3 * (yy / h)
    else:
        ir = smooth_field(rng, h, w, 4, -5, 10) + 4 * (yy / h)
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
            if all(iou(cand, b) < 0.1 for b in placed):
                break
        else:
            continue
        placed.append(cand)
        shape = person_shape(x1, y1, bw, bh)
        if person:
            body, head = float(rng.uniform(33, 35.5)), float(rng.uniform(35, 37))
        elif rng.random() < 0.5:  # colder than a person
            body = float(rng.uniform(18, 27) if warm else rng.uniform(8, 25))
            head = body + float(rng.uniform(-1, 1))
        else:  # hotter than a person: sun-heated metal, a warm engine
            body = float(rng.uniform(44, 65) if warm else rng.uniform(45, 70))
            head = body + float(rng.uniform(-1, 1))
        draw_person(ir, shape, body, head)
        shade = (rgb[int(min(y1 + bh / 2, h - 1)), int(min(x1 + bw / 2, w - 1))] + rng.uniform(4, 9)).tolist()
        draw_person(rgb, shape, shade, shade)
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
