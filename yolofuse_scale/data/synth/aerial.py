"""A synthetic DroneVehicle-like aerial scene (``synth --scene aerial``): top-down RGB + IR, rotated vehicles of five
kinds, and per-modality labels that differ as DroneVehicle's do.

What a frame holds (drawn from ``common.pair_rng(seed, split, index)``, so a pair depends on nothing else):

- ground seen from above: grass or bare soil with a smooth texture, 1-2 straight asphalt roads at random angles
  (lane markings in RGB), sometimes a parking lot (a concrete rectangle);
- vehicles of DroneVehicle's five classes, at DroneVehicle's proportions (length x width in metres, a frame being
  about 60 m across): car (4.5 x 1.8), truck (8 x 2.5: a cab and a cargo box), bus (12 x 2.6, a row of roof
  windows), van (5 x 2.0, a box body), freight car (15 x 2.6: a tractor and a long trailer); on a road they are
  rotated along it (+-6 degrees), in a lot side by side at the lot's angle, anywhere else at any angle;
- day or night (about 40% night): by day RGB shows every vehicle (colour, windshield, shadow) and IR shows warm
  ground (asphalt warmest) with vehicles near ambient, the moving ones (on a road) with a hot engine; at night RGB is
  dark and noisy and a vehicle shows only if its lights are on (about 35% of them: head- and tail-lights), while IR
  shows every vehicle warmer than the cooled ground;
- so some vehicles are visible only in IR (night, lights off), and a few parked ones only in RGB (by day, a parked
  vehicle at the ground's temperature: about 10% of them, none on a road).

Labels, one set per image as DroneVehicle annotates each image on its own: ``labels/`` (RGB) lists the vehicles
visible in RGB, ``labelsIR/`` (IR) those visible in IR; each box is the vehicle's rectangle jittered by its
annotator (up to 0.04 of the vehicle's width on each corner's position and +-2 degrees), independently per image,
so the same vehicle's two boxes overlap without being equal (a union by rotated IoU matches them). Rows are
Ultralytics' OBB format (``cls x1 y1 x2 y2 x3 y3 x4 y4``, normalised), corners clockwise in image coordinates.
IR is registered to RGB (DroneVehicle's pairs are registered, up to small offsets the labels absorb).

``data.yaml`` says ``task: obb``, ``labels_ir: labelsIR`` and no ``label_policy`` (the default, ``ir``: the study
writes one per run), and ``synth: {scene: aerial, seed: N}``. Frames are ``imgsz`` high and 1.25x as wide
(DroneVehicle's 640 x 512 after its white frame is cropped). ``render_aerial`` returns the images, the vehicles and
what each modality shows (its ``meta``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import yaml

from yolofuse_scale.data.synth.common import smooth_field

NAMES = {0: "car", 1: "truck", 2: "bus", 3: "van", 4: "freight_car"}
#: class -> (length, width) in metres, and how often it is drawn (DroneVehicle: mostly cars)
VEHICLES = {0: (4.5, 1.8, 0.6), 1: (8.0, 2.5, 0.1), 2: (12.0, 2.6, 0.08), 3: (5.0, 2.0, 0.12), 4: (15.0, 2.6, 0.1)}
FRAME_METRES = 60.0  #: the frame's width on the ground
NIGHT_P = 0.4  #: share of night frames
LIGHTS_P = 0.35  #: share of vehicles with their lights on at night (visible in RGB)
COLD_PARKED_P = 0.1  #: share of parked vehicles at the ground's temperature by day (invisible in IR)


def rectangle(cx: float, cy: float, length: float, width: float, angle: float) -> np.ndarray:
    """(4, 2) corners of a rectangle centred at (cx, cy), ``length`` along ``angle`` (radians, x towards y),
    clockwise in image coordinates (y down) from the rear left."""
    c, s = math.cos(angle), math.sin(angle)
    u, v = np.array([c, s]) * length / 2, np.array([-s, c]) * width / 2
    centre = np.array([cx, cy])
    return np.stack([centre - u - v, centre + u - v, centre + u + v, centre - u + v]).astype(np.float64)


def _fill(img: np.ndarray, corners: np.ndarray, value) -> None:
    """Fill a polygon with sub-pixel corners (anti-aliased, 1/16 px)."""
    pts = np.round(corners * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(img, [pts], value, lineType=cv2.LINE_AA, shift=4)


def _part(cx, cy, angle, length, width, start, end, side=1.0) -> np.ndarray:
    """The rectangle of a vehicle's part from ``start`` to ``end`` along its length (fractions, rear 0, front 1)."""
    c, s = math.cos(angle), math.sin(angle)
    mid = (start + end) / 2 - 0.5
    return rectangle(cx + c * mid * length, cy + s * mid * length, (end - start) * length, width * side, angle)


def _draw_vehicle(rgb, ir, cls, cx, cy, angle, length, width, colour, rgb_gain, sun, ir_body, ir_engine,
                  lights) -> None:
    """The vehicle in RGB (its shadow when ``sun``, its windows and parts unless it is an unlit shape at night;
    head- and tail-lights when ``lights``) and, where ``ir_body`` is a temperature, in IR (its hot engine too,
    ``ir_engine``)."""
    body = rectangle(cx, cy, length, width, angle)
    if sun:
        _fill(rgb, body + np.array([0.25, 0.35]) * width, (rgb_gain * 25,) * 3)
    _fill(rgb, body, tuple(float(v) for v in colour * rgb_gain))
    if sun or lights:
        _draw_parts(rgb, cls, cx, cy, angle, length, width, colour, rgb_gain)
    _draw_lights_and_heat(rgb, ir, body, cx, cy, angle, length, width, ir_body, ir_engine, lights)


def _draw_parts(rgb, cls, cx, cy, angle, length, width, colour, rgb_gain) -> None:
    dark = tuple(float(v) for v in colour * rgb_gain * 0.45)
    light = tuple(float(v) for v in np.minimum(colour * 1.3 + 40, 255) * rgb_gain)
    if cls in (0, 3):  # car, van: windshield; a van's box body is lighter
        _fill(rgb, _part(cx, cy, angle, length, width, 0.62, 0.78, 0.85), dark)
        if cls == 3:
            _fill(rgb, _part(cx, cy, angle, length, width, 0.05, 0.6, 0.9), light)
    elif cls == 1:  # truck: a cab and a cargo box with a gap
        _fill(rgb, _part(cx, cy, angle, length, width, 0.70, 0.74, 1.0), (rgb_gain * 30,) * 3)
        _fill(rgb, _part(cx, cy, angle, length, width, 0.0, 0.69, 0.95), light)
    elif cls == 2:  # bus: roof windows
        for k in range(5):
            _fill(rgb, _part(cx, cy, angle, length, width, 0.1 + 0.17 * k, 0.2 + 0.17 * k, 0.5), dark)
    else:  # freight car: tractor, then a long trailer
        _fill(rgb, _part(cx, cy, angle, length, width, 0.78, 0.81, 1.0), (rgb_gain * 30,) * 3)
        trailer = tuple(float(v) for v in colour * 0.8 * rgb_gain)
        _fill(rgb, _part(cx, cy, angle, length, width, 0.0, 0.77, 0.97), trailer)


def _draw_lights_and_heat(rgb, ir, body, cx, cy, angle, length, width, ir_body, ir_engine, lights) -> None:
    if lights:  # at night: head- and tail-lights, the only way the vehicle shows in RGB
        for end, tone in ((0.98, (255, 250, 215)), (0.02, (200, 30, 20))):
            for side in (-0.3, 0.3):
                c, s = math.cos(angle), math.sin(angle)
                px = cx + c * (end - 0.5) * length - s * side * width
                py = cy + s * (end - 0.5) * length + c * side * width
                cv2.circle(rgb, (int(round(px * 16)), int(round(py * 16))), max(16, int(width * 4)), tone, -1,
                           lineType=cv2.LINE_AA, shift=4)
    if ir_body is not None:
        _fill(ir, body, float(ir_body))
        if ir_engine is not None:
            _fill(ir, _part(cx, cy, angle, length, width, 0.75, 0.95, 0.8), float(ir_engine))


def _annotate(rng: np.random.Generator, cx, cy, angle, length, width) -> np.ndarray:
    """One annotator's box of a vehicle: its rectangle, shifted, resized and turned a little."""
    jitter = 0.04 * width
    return rectangle(cx + rng.uniform(-jitter, jitter), cy + rng.uniform(-jitter, jitter),
                     length * rng.uniform(0.97, 1.03), width * rng.uniform(0.95, 1.05),
                     angle + math.radians(rng.uniform(-2, 2)))


def _placements(rng: np.random.Generator, h: int, w: int, ppm: float, roads: list, lot) -> list[tuple]:
    """(class, cx, cy, angle, moving) of the frame's vehicles, not overlapping each other."""
    classes = list(VEHICLES)
    p = np.array([VEHICLES[c][2] for c in classes])
    out: list[tuple] = []
    taken: list[np.ndarray] = []

    def free(corners: np.ndarray) -> bool:
        x0, y0 = corners.min(0) - 1
        x1, y1 = corners.max(0) + 1
        inside = corners[:, 0].min() > -0.3 * w and corners[:, 0].max() < 1.3 * w
        return inside and all(x1 < t[0, 0] or t[1, 0] < x0 or y1 < t[0, 1] or t[1, 1] < y0 for t in taken)

    def add(cls, cx, cy, angle, moving) -> None:
        length, width = VEHICLES[cls][0] * ppm, VEHICLES[cls][1] * ppm
        corners = rectangle(cx, cy, length, width, angle)
        if free(corners):
            taken.append(np.stack([corners.min(0), corners.max(0)]))
            out.append((cls, cx, cy, angle, moving))

    for (px, py, angle, half_width) in roads:  # along each road, in both lanes
        for _ in range(int(rng.integers(1, 6))):
            t = rng.uniform(-0.7, 0.7) * max(h, w)
            lane = half_width * 0.5 * (1 if rng.random() < 0.5 else -1)
            cx = px + math.cos(angle) * t - math.sin(angle) * lane
            cy = py + math.sin(angle) * t + math.cos(angle) * lane
            heading = angle + (0 if lane > 0 else math.pi) + math.radians(rng.uniform(-6, 6))
            add(int(rng.choice(classes, p=p)), cx, cy, heading, True)
    if lot is not None:  # a row of parked cars and vans side by side
        lx, ly, la, lw, ll = lot
        for k in range(int(rng.integers(2, 7))):
            t = (k - 3) * 2.8 * ppm
            cx, cy = lx + math.cos(la) * t, ly + math.sin(la) * t
            add(int(rng.choice([0, 0, 0, 3])), cx, cy, la + math.pi / 2 + math.radians(rng.uniform(-4, 4)), False)
    for _ in range(int(rng.integers(0, 3))):  # parked anywhere
        add(int(rng.choice(classes, p=p)), rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, math.pi), False)
    return out


def render_aerial(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, list[dict], dict]:
    """One frame: (RGB float HxWx3, IR float HxW, vehicles, meta). Each vehicle is a dict: ``cls``, ``corners`` (its
    true rectangle, pixels), ``moving``, ``lights``, ``rgb`` / ``ir`` (whether that image shows it), ``ground_rgb``
    (the RGB ground under its centre, before noise) and ``rgb_box`` / ``ir_box`` (that image's annotation, (4, 2)
    pixels, or None where it does not show)."""
    ppm = w / FRAME_METRES
    night = bool(rng.random() < NIGHT_P)
    rgb_gain = float(rng.uniform(0.12, 0.25)) if night else float(rng.uniform(0.8, 1.1))
    grass = bool(rng.random() < 0.6)
    ground = np.array([70, 110, 55] if grass else [140, 120, 95], np.float32)
    rgb = (smooth_field(rng, h, w, 6, 0.8, 1.2)[..., None] * ground) * rgb_gain
    ambient = 40.0 if night else 120.0  # the IR of the ground: cooled at night, sun-warmed by day
    ir = smooth_field(rng, h, w, 5, ambient - 10, ambient + 10)
    roads = []
    for _ in range(int(rng.integers(1, 3))):
        px, py, angle = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h, rng.uniform(0, math.pi)
        half = 4.0 * ppm
        band = rectangle(px, py, 3 * max(h, w), 2 * half, angle)
        _fill(rgb, band, (65 * rgb_gain,) * 3)
        _fill(ir, band, ambient + (5 if night else 25))  # asphalt keeps the day's heat
        mark = rectangle(px, py, 3 * max(h, w), max(0.15 * ppm, 0.6), angle)
        _fill(rgb, mark, (200 * rgb_gain,) * 3)
        roads.append((px, py, angle, half))
    lot = None
    if rng.random() < 0.4:
        lx, ly, la = rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h, rng.uniform(0, math.pi)
        lot = (lx, ly, la, 6 * ppm, 22 * ppm)
        _fill(rgb, rectangle(lx, ly, 22 * ppm, 7 * ppm, la), (120 * rgb_gain,) * 3)
        _fill(ir, rectangle(lx, ly, 22 * ppm, 7 * ppm, la), ambient + (3 if night else 15))
    vehicles = []
    for cls, cx, cy, angle, moving in _placements(rng, h, w, ppm, roads, lot):
        length, width = VEHICLES[cls][0] * ppm, VEHICLES[cls][1] * ppm
        colour = rng.uniform(30, 230, size=3).astype(np.float32)
        iy, ix = min(max(int(cy), 0), h - 1), min(max(int(cx), 0), w - 1)
        ground_rgb = rgb[iy, ix].copy()  # what RGB shows there before the vehicle (no noise yet)
        lights = night and bool(rng.random() < LIGHTS_P)
        cold = not night and not moving and bool(rng.random() < COLD_PARKED_P)
        if night:
            body, engine = ambient + rng.uniform(25, 50), (ambient + rng.uniform(70, 110)) if moving else None
        else:
            body = None if cold else ambient + rng.uniform(-25, -12)  # shaded metal, cooler than sunny ground
            engine = (ambient + rng.uniform(40, 80)) if moving else None
        if night and not lights:  # the ground's own shade under the night's noise: not there for RGB
            colour = ground_rgb / rgb_gain * rng.uniform(0.85, 1.15, size=3).astype(np.float32)
        _draw_vehicle(rgb, ir, cls, cx, cy, angle, length, width, colour, rgb_gain, not night, body, engine, lights)
        show_rgb, show_ir = (lights or not night), body is not None
        vehicles.append({
            "cls": cls, "corners": rectangle(cx, cy, length, width, angle), "moving": moving, "lights": lights,
            "rgb": show_rgb, "ir": show_ir, "ground_rgb": ground_rgb,
            # each image's annotator, drawn in this order always (a vehicle's draws do not depend on what it shows)
            "rgb_box": _annotate(rng, cx, cy, angle, length, width),
            "ir_box": _annotate(rng, cx, cy, angle, length, width),
        })
        for key, shown in (("rgb_box", show_rgb), ("ir_box", show_ir)):
            if not shown:
                vehicles[-1][key] = None
    noise = 12.0 if night else 3.0
    rgb = rgb + rng.normal(0, noise * (1 if night else rgb_gain), size=rgb.shape).astype(np.float32)
    ir = cv2.GaussianBlur(ir, (3, 3), 0) + rng.normal(0, 2.5, size=ir.shape).astype(np.float32)
    meta = {"scene": "aerial", "night": night, "rgb_gain": rgb_gain, "roads": len(roads), "lot": lot is not None}
    return np.clip(rgb, 0, 255), np.clip(ir, 0, 255), vehicles, meta


def obb_lines(vehicles: list[dict], key: str, w: int, h: int) -> list[str]:
    """Ultralytics OBB rows of the vehicles whose ``key`` box exists, clipped to the frame; a box with less than
    half its area inside the frame is not labelled (an annotator skips a vehicle mostly outside the image)."""
    frame = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    out = []
    for v in vehicles:
        box = v[key]
        if box is None:
            continue
        inside, _ = cv2.intersectConvexConvex(box.astype(np.float32), frame)
        if inside < 0.5 * cv2.contourArea(box.astype(np.float32)):
            continue
        pts = np.clip(box, 0, [w, h]) / [w, h]
        out.append(f"{v['cls']} " + " ".join(f"{x:.6f} {y:.6f}" for x, y in pts))
    return out


def write_pairs(out: Path, split: str, indices: range, h: int, w: int, rng: Callable[[int], np.random.Generator],
                ir_channels: int) -> None:
    """Render and write pairs ``indices`` of ``split`` (one worker's share); ``rng(i)``: pair ``i``'s generator
    (``common.pair_rng``: the one rule of every scene, which nothing else decides)."""
    dirs = {d: out / d / split for d in ("images", "imagesIR", "labels", "labelsIR")}
    for i in indices:
        rgb, ir, vehicles, _meta = render_aerial(rng(i), h, w)
        name = f"{split}_{i:05d}"
        cv2.imwrite(str(dirs["images"] / f"{name}.png"), cv2.cvtColor(rgb.astype(np.uint8), cv2.COLOR_RGB2BGR))
        ir8 = ir.astype(np.uint8)
        cv2.imwrite(str(dirs["imagesIR"] / f"{name}.png"), ir8 if ir_channels == 1 else cv2.merge([ir8] * 3))
        for folder, key in (("labels", "rgb_box"), ("labelsIR", "ir_box")):
            lines = obb_lines(vehicles, key, w, h)
            (dirs[folder] / f"{name}.txt").write_text("".join(f"{line}\n" for line in lines))


def data_yaml(ir_channels: int, seed: int) -> str:
    """The aerial set's data.yaml."""
    spec = {"path": ".", "train": "images/train", "val": "images/val", "names": dict(NAMES), "ir_dir": "imagesIR",
            "ir_channels": ir_channels, "task": "obb", "labels_ir": "labelsIR",
            "synth": {"scene": "aerial", "seed": seed}}
    header = ("# synthetic DroneVehicle-like aerial RGB+IR set written by `yolofuse-scale synth --scene aerial`:\n"
              "# oriented boxes, the RGB and the IR image labelled each on its own (label_policy: ir by default)\n")
    return header + yaml.safe_dump(spec, sort_keys=False)
