"""``ir_mapping:`` and ``ir_homography:`` of a data.yaml parsed into an :class:`~yolofuse_scale.data.config.IRMapping`
(how a radiometric IR frame becomes 8 bits) and a homography (IR pixel -> RGB pixel); each form refused with the
forms it may take.
"""

from __future__ import annotations

from typing import Any

from yolofuse_scale.data.config import DataError, IRMapping, finite_number


def _two(raw: Any) -> tuple[float, float] | None:
    """``[a, b]`` of two finite numbers with a < b, else None."""
    if isinstance(raw, list) and len(raw) == 2 and all(finite_number(v) for v in raw) and raw[0] < raw[1]:
        return float(raw[0]), float(raw[1])
    return None


MAPPING_FORMS = ("minmax | shift8 | {range: [lo, hi]} (raw values) | {range: [lo, hi], raw_per_degree: K, "
                 "raw_at_zero: Z} (degrees: raw = Z + K * T) | {percentile: [p_lo, p_hi]}")


def parse_ir_mapping(raw: Any, where: str) -> IRMapping:
    """``ir_mapping:`` of a data.yaml (``where``: ``FILE:LINE`` for messages); None: the default (``minmax``)."""
    if raw is None:
        return IRMapping()
    if raw == "minmax":
        return IRMapping("minmax", stated="minmax (per frame)", chosen=True)
    if raw == "shift8":
        return IRMapping("shift8", stated="shift8 (raw >> 8)", chosen=True)
    if not isinstance(raw, dict):
        raise DataError(f"{where}: 'ir_mapping' must be one of {MAPPING_FORMS}; got {raw!r}")
    modes = [k for k in ("range", "percentile") if k in raw]
    unknown = sorted(set(map(str, raw)) - {"range", "percentile", "raw_per_degree", "raw_at_zero"})
    if unknown or len(modes) != 1:
        what = f"unknown key(s) {', '.join(unknown)}" if unknown else "exactly one of range, percentile is needed"
        raise DataError(f"{where}: 'ir_mapping': {what}; the forms are {MAPPING_FORMS}")
    if modes == ["percentile"]:
        pct = _two(raw["percentile"])
        if pct is None or pct[0] < 0 or pct[1] > 100 or len(raw) > 1:
            raise DataError(f"{where}: 'ir_mapping' percentile must be [p_lo, p_hi] with 0 <= p_lo < p_hi <= 100 "
                            f"(and nothing else), got {raw!r}")
        return IRMapping("percentile", percentiles=pct, stated=f"percentile [{pct[0]:g}, {pct[1]:g}] of the "
                         "training set's IR", chosen=True)
    rng = _two(raw["range"])
    if rng is None:
        raise DataError(f"{where}: 'ir_mapping' range must be [lo, hi], two numbers with lo < hi, got {raw['range']!r}")
    if "raw_per_degree" not in raw and "raw_at_zero" not in raw:
        return IRMapping("range", rng[0], rng[1], stated=f"range raw [{rng[0]:g}, {rng[1]:g}]", chosen=True)
    k, z = raw.get("raw_per_degree"), raw.get("raw_at_zero", 0)
    if not finite_number(k) or k <= 0 or not finite_number(z):
        raise DataError(f"{where}: 'ir_mapping' degrees: raw_per_degree must be a positive number and raw_at_zero a "
                        f"number (raw = raw_at_zero + raw_per_degree * T; FLIR's centi-Kelvin files in degrees "
                        f"Celsius: 100 and 27315), got raw_per_degree={k!r}, raw_at_zero={z!r}")
    lo, hi = z + k * rng[0], z + k * rng[1]
    return IRMapping("range", lo, hi, chosen=True, stated=f"range [{rng[0]:g}, {rng[1]:g}] degrees "
                     f"(raw = {z:g} + {k:g} * T: raw {lo:g}..{hi:g})")


def parse_homography(raw: Any, where: str) -> tuple[tuple[float, float, float], ...] | None:
    """``ir_homography:``: 3 rows of 3 finite numbers, invertible (``yolofuse-scale register`` writes one)."""
    if raw is None:
        return None
    ok = isinstance(raw, list) and len(raw) == 3 and all(
        isinstance(r, list) and len(r) == 3 and all(finite_number(v) for v in r) for r in raw)
    if not ok:
        raise DataError(f"{where}: 'ir_homography' must be a 3x3 matrix, 3 rows of 3 numbers (IR pixel -> RGB "
                        f"pixel; `yolofuse-scale register` writes one), got {raw!r}")
    (a, b, c), (e, f, g), (h, i, j) = raw
    det = a * (f * j - g * i) - b * (e * j - g * h) + c * (e * i - f * h)
    scale = max(abs(v) for r in raw for v in r)
    if abs(det) <= 1e-12 * scale**3:
        raise DataError(f"{where}: 'ir_homography' is singular (determinant {det:g}): it maps the IR frame onto a "
                        "line or a point, not onto RGB's frame")
    return tuple(tuple(float(v) for v in r) for r in raw)
