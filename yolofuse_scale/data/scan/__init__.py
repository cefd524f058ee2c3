"""The one-time scan of a split: pairing RGB with IR, cheap image-header checks, label validation. The entry
(:func:`scan_dataset`, :func:`scan_split`, :func:`scan_pairs`); one concern per module below it:

- ``listing.py``: which files a split names and which pairs they form (folders, lists, pairs files; the layouts'
  rules are ``data/layouts.py``); ``records.py``: a problem, a split's scan, the policies;
- ``pair_checks.py``: one pair's files, headers, sizes and homography coverage; ``label_rows.py``: its label
  rows (detect, OBB);
- ``json_cache.py``: the cache (fingerprint, JSON rows); ``summary.py``: the per-split summary and labels' record.

Every problem is collected and the policy decides once, before the first step (``records.py``). A pair without
a label file is a background image, as in Ultralytics, but a split where no pair has one (a misnamed
``labels/`` folder) is refused, and so is a validation split without a single box: both would train or score
silently against nothing.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from yolofuse_scale.data import layouts
from yolofuse_scale.data.config import DataError, DatasetSpec, IRMapping, IRRead
from yolofuse_scale.data.layouts import Listed
from yolofuse_scale.data.modality import LabelCounts, summary_line
from yolofuse_scale.data.sample import Sample
from yolofuse_scale.data.scan.json_cache import cache_file, fingerprint, from_json, to_json
from yolofuse_scale.data.scan.label_rows import COLUMNS

# sources.py (predict) still imports IMG_SUFFIXES from here: another branch (t23-tidy) is splitting sources.py, so
# the merge points that import at data/scan/listing.py and deletes this line (no other module reads it here).
from yolofuse_scale.data.scan.listing import IMG_SUFFIXES as IMG_SUFFIXES
from yolofuse_scale.data.scan.listing import Walk, label_path_for, list_images, listed_twice, orphan_ir
from yolofuse_scale.data.scan.pair_checks import check_pair
from yolofuse_scale.data.scan.records import POLICIES, SplitScan, format_problems
from yolofuse_scale.data.scan.summary import examples, ir_read_report, label_record, split_summary
from yolofuse_scale.io import write_atomic


def scan_pairs(cfg: DatasetSpec, split: str, cache_dirs: list[Path] | tuple[Path, ...] = (),
               threads: int = 8) -> SplitScan:
    """Scan one split; read the result from the first of ``cache_dirs`` that holds a matching cache,
    else scan and write it into the first writable one. Raises :class:`DataError` only for what makes
    the split unusable as a whole (an entry that is not a folder, list or image; no images at all)."""
    listed: list[Listed] = []
    walk = Walk()
    for entry in cfg.split(split):
        if not entry.exists():
            raise DataError(f"{cfg.yaml_path}: split '{split}' entry {entry} does not exist")
        listed += list_images(entry, cfg, walk)
    renamed = 0
    if cfg.layout == "deyolo":  # train with train2, val with val2: by position (layouts.pair_by_position)
        ir_listed: list[Listed] = []
        for entry in (cfg.ir_splits or {}).get(split, []):
            if not entry.exists():
                raise DataError(f"{cfg.yaml_path}: split '{split}2' entry {entry} does not exist")
            ir_listed += list_images(entry, cfg, walk)
        listed, renamed = layouts.pair_by_position(cfg, split, listed, [it.rgb for it in ir_listed])
    if not listed and walk.problems:
        raise DataError(format_problems(f"{cfg.yaml_path}: split '{split}'", [p.message for p in walk.problems]))
    if not listed:
        where = ", ".join(str(p) for p in cfg.split(split))
        raise DataError(f"{cfg.yaml_path}: split '{split}' has no images (looked in {where})")
    in_order = list(listed)  # data.yaml's entries, a list's lines: where an image is named first
    listed.sort(key=lambda it: str(it.rgb))  # every process, every run: the same order
    key = fingerprint(cfg, split, listed) if cache_dirs else ""
    for folder in cache_dirs:
        path = cache_file(cfg, split, folder)
        if path.is_file():
            hit = from_json(path.read_text(), key, split, COLUMNS[cfg.task])
            if hit is not None:
                return _with_listing(hit, walk, renamed)
    scan = SplitScan(split)
    unique, scan.problems = listed_twice(in_order)
    unique.sort(key=lambda it: str(it.rgb))
    seen = {str(item.rgb) for item in unique}
    policy = cfg.policy(split)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for sample, problems in pool.map(lambda it: check_pair(cfg, it, policy), unique):
            scan.problems += problems
            if sample is not None:
                scan.samples.append(sample)
    for entry in cfg.split(split):
        if entry.is_dir():
            scan.problems += orphan_ir(cfg, entry, seen)
    for folder in cache_dirs:
        try:
            write_atomic(cache_file(cfg, split, folder), to_json(scan, key))
            break
        except OSError:
            continue  # a read-only dataset folder: try the next place
    return _with_listing(scan, walk, renamed)


def _with_listing(scan: SplitScan, walk: Walk, renamed: int = 0) -> SplitScan:
    """Add what listing the folders found (not cached: the listing runs every time anyway)."""
    scan.problems += walk.problems
    scan.hidden, scan.repeats, scan.renamed = walk.hidden, walk.repeats, renamed
    return scan


@dataclass
class ScanResult:
    """The outcome of scanning a run's splits under a policy, made on one process and sent to all.

    It never raises where it is built, so the process that scans can broadcast an error like any other
    result: every rank then raises the same :class:`DataError` (instead of the others waiting forever
    in the broadcast for a process that died).
    """

    samples: dict[str, list[Sample]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    error: str | None = None
    cached: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)  #: one line per split: pairs, boxes, background, skipped
    #: what the splits' labels are, as the run records it: ``task``, ``labels_ir`` and per split its policy, its
    #: ground truth in words and the counts of :func:`label_record`
    labels: dict = field(default_factory=dict)
    #: how every sample's IR is read (data.yaml's mapping, a percentile mapping's levels resolved; the homography)
    ir_read: IRRead = field(default_factory=IRRead)

    def report(self) -> str:
        """What each split trains or scores on, for the start-up log (see :func:`split_summary`)."""
        return "\n".join(self.summary)

    def take(self, log=print) -> dict[str, list[Sample]]:
        """The samples per split; raise the scan's :class:`DataError`; log what skipping left out."""
        if self.error is not None:
            raise DataError(self.error)
        if self.cached:
            log(f"data scan: {', '.join(self.cached)} read from the cache (files unchanged)")
        if self.skipped:
            log(format_problems(f"--on-bad-sample skip: trained without {len(self.skipped)} problem item(s)",
                                self.skipped, limit=None))
        return self.samples


def _resolve_read(cfg: DatasetSpec, samples: dict[str, list[Sample]], cache_dirs, mapping: IRMapping | None
                  ) -> IRRead:
    """data.yaml's IR reading with a percentile mapping's levels resolved over the training split (scanned here
    when the command reads no training split), or with ``mapping`` (the weights' own) instead."""
    if mapping is None and cfg.ir_read.mapping.mode == "percentile":
        from yolofuse_scale.data.levels import resolve_levels  # levels -> decode -> scan: imported when needed

        train = samples.get("train")
        if train is None:
            try:
                train = scan_pairs(cfg, "train", cache_dirs).kept()
            except DataError as e:
                raise DataError(f"{cfg.yaml_path}: ir_mapping {cfg.ir_read.mapping.stated} reads its levels from the "
                                f"training split, which cannot be read here ({e}); evaluate with weights that record "
                                "the levels (a training run writes them)") from None
        mapping = resolve_levels(cfg.ir_read.mapping, train, cache_dirs, str(cfg.yaml_path))
    return cfg.ir_read if mapping is None else replace(cfg.ir_read, mapping=mapping)


def _check_labels(cfg: DatasetSpec, split: str, samples: list[Sample], used: list[Sample],
                  evaluated: tuple[str, ...]) -> None:
    """Refuse what would train on background only or score against nothing, with no other sign."""
    if samples and all(s.label is None for s in samples):
        expected = [Path(layouts.label_of(cfg, str(s.rgb))) for s in samples]
        folders = sorted({str(p.parent) for p in expected})
        raise DataError(
            f"{cfg.yaml_path}: split '{split}': none of its {len(samples)} pairs has a label file. Looked in "
            f"{examples(folders)} for one .txt per image (e.g. {expected[0]}: {layouts.label_rule(cfg)}). Is the "
            f"labels folder misnamed? Images without objects need an empty .txt each")
    if cfg.labels_ir is not None and samples and all(s.label_ir is None for s in samples):
        expected = label_path_for(samples[0].rgb, cfg.images_dir, cfg.labels_ir)
        raise DataError(
            f"{cfg.yaml_path}: split '{split}': 'labels_ir: {cfg.labels_ir}' but none of its {len(samples)} pairs has "
            f"an IR label file (e.g. {expected}: the last '{cfg.images_dir}' folder of the image path becomes "
            f"'{cfg.labels_ir}'). Is the folder misnamed? Without IR labels, remove 'labels_ir'")
    if split in evaluated and used and not any(len(s.boxes) for s in used):
        raise DataError(
            f"{cfg.yaml_path}: split '{split}' has no boxes at all (its {len(used)} pairs have empty or missing "
            f"label files): its mAP would be 0 whatever the model learns; point '{split}' at labelled images")


def scan_dataset(cfg: DatasetSpec, splits: tuple[str, ...], policy: str = "error",
                 cache_dirs: list[Path] | tuple[Path, ...] = (), evaluated: tuple[str, ...] = ("val", "test"),
                 ir_mapping: IRMapping | None = None) -> ScanResult:
    """Scan ``splits`` and apply ``policy`` (``error``: any problem fails the run, with the full list;
    ``skip``: drop the pairs with problems). A split none of whose pairs has a label file, and an
    ``evaluated`` split without a box, fail under either policy. Every sample gets the dataset's IR reading
    (``Sample.ir_read``: a percentile mapping's levels resolved here, once, over the training split; ``ir_mapping``:
    a resolved mapping to use instead, the weights' own for ``val``). Never raises :class:`DataError`: see
    :class:`ScanResult`."""
    if policy not in POLICIES:
        raise ValueError(f"--on-bad-sample must be one of {', '.join(POLICIES)}, got {policy!r}")
    result = ScanResult()
    problems: list[str] = []
    try:
        for split in splits:
            scan = scan_pairs(cfg, split, cache_dirs)
            if scan.from_cache:
                result.cached.append(split)
            messages = [p.message for p in scan.problems]
            kept = scan.kept()
            if policy == "skip" and not kept:
                raise DataError(format_problems(f"{cfg.yaml_path}: split '{split}' has no usable pair left",
                                                messages))
            problems += messages
            result.samples[split] = used = kept if policy == "skip" else scan.samples
            _check_labels(cfg, split, scan.samples, used, evaluated)
            result.summary.append(split_summary(cfg, scan, used))
            record = label_record(cfg, split, used)
            result.labels.setdefault("task", cfg.task)
            result.labels.setdefault("labels_ir", cfg.labels_ir)
            result.labels.setdefault("splits", {})[split] = record
            if cfg.labels_ir is not None:
                counts = LabelCounts(*record["counts"].values())
                result.summary.append(summary_line(cfg, split, counts, record["without_ir_labels"]))
        if not (problems and policy == "error"):
            result.ir_read = read = _resolve_read(cfg, result.samples, cache_dirs, ir_mapping)
            result.summary += ir_read_report(cfg, read, result.samples)
            if read != IRRead():
                result.samples = {k: [replace(s, ir_read=read) for s in v] for k, v in result.samples.items()}
    except DataError as e:
        return ScanResult(error=str(e))
    if problems and policy == "error":
        hint = "fix them, or pass --on-bad-sample skip to train without the pairs concerned"
        return ScanResult(error=format_problems(f"{cfg.yaml_path}", problems) + f"\n({hint})")
    result.skipped = problems
    return result


def scan_split(cfg: DatasetSpec, split: str, on_bad_sample: str = "error",
               cache_dirs: list[Path] | tuple[Path, ...] = (), ir_mapping: IRMapping | None = None) -> list[Sample]:
    """The samples of one split for a single process (evaluation, tools); raises :class:`DataError`. ``ir_mapping``:
    as :func:`scan_dataset`'s."""
    return scan_dataset(cfg, (split,), on_bad_sample, cache_dirs, ir_mapping=ir_mapping).take(
        log=lambda _msg: None)[split]


def trained_mapping(cfg: DatasetSpec, record: Any, weights: str) -> IRMapping:
    """The IR mapping to evaluate ``weights`` with: the one it was trained with (``record``, its ``ir_mapping`` entry;
    None: the per-frame default of a run that stated none), a percentile's levels included. A data.yaml that states
    another rule is refused, as another ``ir_channels`` is: the model learnt its pixels under its own."""
    trained = IRMapping.from_record(record, weights)
    stated = cfg.ir_read.mapping
    if stated.chosen and not stated.same_rule(trained):
        raise DataError(f"{cfg.yaml_path}: ir_mapping is {stated.stated} but {weights} was trained with "
                        f"{trained.describe()}; evaluate with the mapping it was trained with (remove ir_mapping "
                        "from data.yaml to take the weights' own)")
    return trained
