"""What the start-up log and the run's records say of the scanned splits: a line per split (pairs, boxes,
background, what was skipped and why), its labels' record (policy, ground truth, counts), and how IR is read
(the layout, the 16-bit mapping, the homography's coverage).
"""

from __future__ import annotations

from dataclasses import asdict

from yolofuse_scale.data import layouts
from yolofuse_scale.data.config import DatasetSpec, IRRead
from yolofuse_scale.data.modality import LabelCounts, ground_truth
from yolofuse_scale.data.sample import Sample
from yolofuse_scale.data.scan.pair_checks import cached_coverage
from yolofuse_scale.data.scan.records import SplitScan

NAMES_SHOWN = 3  # example files named in the start-up summary (pairs without a label file, ...)


def _count(kinds: list[str]) -> str:
    counts: dict[str, int] = {}
    for k in kinds:
        counts[k] = counts.get(k, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def examples(paths: list[str]) -> str:
    more = f", ... ({len(paths) - NAMES_SHOWN} more)" if len(paths) > NAMES_SHOWN else ""
    return ", ".join(paths[:NAMES_SHOWN]) + more


def split_summary(cfg: DatasetSpec, scan: SplitScan, used: list[Sample]) -> str:
    """One line saying what a split holds: pairs, boxes, background pairs (empty or missing label file,
    a few of the missing ones named), pairs skipped by kind of problem, and what listing left out."""
    missing = [layouts.label_of(cfg, str(s.rgb)) for s in used if s.label is None]
    empty = sum(s.label is not None and len(s.boxes) == 0 for s in used)
    line = f"data {scan.split}: {len(used)} pairs, {sum(len(s.boxes) for s in used)} boxes, "
    line += f"{len(missing) + empty} background"
    why = ([f"{empty} with an empty label file"] if empty else []) + (
        [f"{len(missing)} without a label file: {examples(missing)}"] if missing else [])
    line += f" ({'; '.join(why)})" if why else ""
    kept = {str(s.rgb) for s in used}
    first_kind: dict[str, str] = {}
    for p in scan.problems:
        if p.drops_pair and p.rgb is not None and p.rgb not in kept:
            first_kind.setdefault(p.rgb, p.kind)
    line += f"; skipped {len(first_kind)} pair(s) ({_count(list(first_kind.values()))})" if first_kind else \
        "; nothing skipped"
    others = [p.kind for p in scan.problems if not (p.drops_pair and p.rgb is not None)]
    line += f"; also left out: {_count(others)}" if others else ""
    if scan.hidden:
        line += f"; {scan.hidden} hidden file(s)/folder(s) ignored (names starting with '.')"
    if scan.repeats:
        line += f"; symlinked folder(s) listed once, not entered again: {examples(scan.repeats)}"
    if scan.renamed:
        line += (f"; {scan.renamed} pair(s) whose RGB and IR files are named differently (paired by position, as "
                 "DEYOLO pairs them)")
    bits: dict[int, int] = {}
    for s in used:
        bits[s.ir_bits or 8] = bits.get(s.ir_bits or 8, 0) + 1
    if set(bits) != {8}:  # radiometric IR: its depth per split (8-bit alone, the usual case, goes unsaid)
        line += "; IR " + ", ".join(f"{b}-bit" + (f" ({n})" if len(bits) > 1 else "") for b, n in sorted(bits.items()))
    return line


def label_record(cfg: DatasetSpec, split: str, used: list[Sample]) -> dict:
    """What ``split`` trains on or is scored against, as the run records it (``ScanResult.labels``): the policy, its
    ground truth in words, and with the IR images' own labels the boxes of each side (``modality.LabelCounts``)."""
    record = {"policy": cfg.policy(split), "ground_truth": ground_truth(cfg, split),
              "boxes": int(sum(len(s.boxes) for s in used))}
    if cfg.labels_ir is not None:
        total = sum((LabelCounts(*s.label_counts) for s in used if s.label_counts), LabelCounts())
        record["counts"] = asdict(total)
        record["without_ir_labels"] = sum(s.label_ir is None for s in used)
    return record


def ir_read_report(cfg: DatasetSpec, read: IRRead, samples: dict[str, list[Sample]]) -> list[str]:
    """The start-up log's lines on the layout and how IR is read: the layout when not the default, the 16-bit
    mapping when any IR frame is deeper than 8 bits (a warning when data.yaml chose none), the homography's
    coverage of RGB's frame."""
    lines = []
    if cfg.layout != "yolofuse" or cfg.layout_why.startswith("stated"):
        lines.append(f"data layout: {cfg.layout} ({cfg.layout_why}); IR partner: the last '{cfg.images_dir}' folder "
                     f"becomes '{cfg.ir_dir}'" if cfg.layout != "deyolo" else
                     f"data layout: deyolo ({cfg.layout_why}); 'train' pairs with 'train2' by position")
    every = [s for v in samples.values() for s in v]
    deep = sum((s.ir_bits or 8) > 8 for s in every)
    if deep:
        lines.append(f"data IR: {deep} of {len(every)} IR frame(s) deeper than 8 bits, mapped to 8 bits by "
                     f"ir_mapping {read.mapping.describe()}")
        if not read.mapping.chosen:
            lines.append("warning: radiometric (16-bit) IR read with the default per-frame min-max: the same "
                         "temperature gets another value in every frame; state ir_mapping in data.yaml (range, "
                         "percentile, shift8, or minmax to keep this; docs/data.md, '16-bit radiometric IR')")
    elif read.mapping.chosen:
        lines.append(f"data IR: every IR frame is 8-bit: ir_mapping ({read.mapping.stated}) has nothing to map")
    if read.homography is not None:
        shares = sorted({cached_coverage(read.homography, (s.ir_hw[1], s.ir_hw[0]), (s.hw[1], s.hw[0]))[0]
                         for s in every if s.hw and s.ir_hw})
        cov = f"{100 * shares[0]:.0f}" + (f"-{100 * shares[-1]:.0f}" if len(shares) > 1 else "") if shares else "?"
        lines.append(f"data IR: warped into RGB's frame by ir_homography when read; the IR frame covers {cov} % of "
                     "the RGB frame (outside it IR reads 0)")
    return lines
