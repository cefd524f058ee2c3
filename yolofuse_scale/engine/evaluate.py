"""Validation: every rank evaluates its shard, per-image statistics are gathered, Ultralytics' metrics.

Detections go through Ultralytics' NMS and its prediction-to-target matching; mAP50, mAP50-95,
precision and recall come from its ``DetMetrics``. Boxes are compared in letterboxed pixel space
(IoU is invariant to the letterbox's uniform scale and shift, so no rescaling is needed). Which NMS and
which IoU is the model's task's (``engine/boxes.py``): axis-aligned boxes as Ultralytics' ``DetectionValidator``
(``box_iou``), oriented boxes (``--task obb``) as its ``OBBValidator``: rotated NMS, matching by probabilistic IoU
(``batch_probiou``) of (cx, cy, w, h, angle), the same greedy matching at IoU 0.5:0.95, ``OBBMetrics`` (its
mAP50 and mAP50-95 are ``DetMetrics``') and a confusion matrix of task ``obb``.

Per-image statistics are gathered as Python objects (images have different numbers of detections),
ordered by dataset index, and reduced into metrics on every rank: the result is then identical to a
one-process evaluation, and every rank knows it without a broadcast. The confusion matrix is a sum of
per-image counts: each rank adds up its own and the matrices are summed (order-free, so also exact).

With a :class:`~yolofuse_scale.engine.missrate.MissRate` (a KAIST ``data.yaml``), each image's detections of its
pedestrian class are also kept in original-image pixels and gathered with the statistics, and KAIST's log-average
miss rate is computed from the whole gathered list on every rank (``engine/missrate.py``).

Plots (PR, F1, P and R curves, confusion matrix raw and normalised) are matplotlib figures written by
the main process only; :func:`yolofuse_scale._offline.forbid_font_downloads` makes sure no plotting
code path fetches a font.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch import nn
from ultralytics.engine.validator import BaseValidator
from ultralytics.utils.metrics import ConfusionMatrix

from yolofuse_scale._offline import forbid_font_downloads
from yolofuse_scale.data.loaders import move_images
from yolofuse_scale.data.transforms import normalize_images
from yolofuse_scale.engine.boxes import AXIS_ALIGNED, AxisAligned
from yolofuse_scale.engine.console import iterate
from yolofuse_scale.engine.missrate import MissRate, unletterbox
from yolofuse_scale.engine.storage import is_writer
from yolofuse_scale.engine.task import TASKS

forbid_font_downloads()

IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)
# BaseValidator.match_predictions only reads `self.iouv`; calling it on this holder reuses
# Ultralytics' greedy matching without building a whole validator (which wants its own dataset).
_MATCHER = SimpleNamespace(iouv=IOU_THRESHOLDS)


def boxes_of(model: nn.Module) -> AxisAligned:
    """The box geometry of ``model``'s task (``engine/task.py``'s :data:`TASKS`; a model without a task: detect)."""
    return TASKS[getattr(model, "task", "detect")].boxes


@torch.inference_mode()
def detect(
    model: nn.Module,
    images: torch.Tensor,
    conf: float = 0.001,
    iou: float = 0.7,
    max_det: int = 300,
    multi_label: bool = True,
) -> list[torch.Tensor]:
    """Run an eval-mode model on float images; return per image an (n, 6) tensor xyxy, conf, cls (an oriented-box
    model: (n, 7) cx, cy, w, h, conf, cls, angle; see ``engine/boxes.py``).

    ``multi_label`` keeps every class above ``conf`` per box (what mAP wants); prediction uses one
    label per box, the best class.
    """
    end2end = bool(getattr(model, "end2end", False))  # a one-to-one head's top-k (YOLO26 --nms-free): no NMS
    return suppress(model(images), conf, iou, max_det, multi_label, boxes_of(model), end2end)


def suppress(out: Any, conf: float, iou: float, max_det: int, multi_label: bool,
             boxes: AxisAligned = AXIS_ALIGNED, end2end: bool = False) -> list[torch.Tensor]:
    """Ultralytics' NMS of ``boxes``' kind on a model's eval-mode output (its first element, the decoded boxes and
    scores); ``end2end``: a one-to-one head's top-k, only filtered by ``conf``."""
    return boxes.suppress(out, conf, iou, max_det, multi_label, end2end)


def _image_slice(out: Any, i: int) -> Any:
    """Image ``i`` of a model's output, as a batch of one (every tensor's first dimension; dicts, lists kept)."""
    if isinstance(out, torch.Tensor):
        return out[i: i + 1]
    if isinstance(out, dict):
        return {k: _image_slice(v, i) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(_image_slice(v, i) for v in out)
    return out


def image_losses(loss_items: Callable[[Any, dict], torch.Tensor], out: Any, batch: dict) -> torch.Tensor:
    """(B, k) loss items of each image of the batch, each computed as a batch of one against its own targets.

    Per image, not per batch: the criterion normalises by the batch's summed target scores, so a batch's items
    depend on which images share it, and the ranks of a sharded validation hold other batches than one process
    does. The mean of per-image items over the dataset is the same at any world size and batch size. It costs a
    criterion call per image (its assigner; ~4 host syncs each on a GPU), on top of validation's forward and NMS.
    """
    rows = []
    for i in range(len(batch["img"])):
        sel = batch["batch_idx"] == i
        targets = {"batch_idx": torch.zeros(int(sel.sum())), "cls": batch["cls"][sel], "bboxes": batch["bboxes"][sel]}
        rows.append(loss_items(_image_slice(out, i), targets))
    return torch.stack(rows)


def image_stats(det: torch.Tensor, gt_cls: torch.Tensor, gt_boxes: torch.Tensor,
                boxes: AxisAligned = AXIS_ALIGNED) -> dict[str, np.ndarray]:
    """Ultralytics' per-image statistics: tp (n, 10) at IoU 0.5:0.95, conf, pred_cls, target_cls. ``gt_boxes`` are in
    ``boxes``' form (xyxy; xywhr for oriented boxes) in the image's pixels, compared by ``boxes.iou``."""
    det, gt_cls, gt_boxes = det.cpu(), gt_cls.cpu(), gt_boxes.cpu()
    n = det.shape[0]
    if n == 0 or gt_cls.numel() == 0:
        tp = np.zeros((n, len(IOU_THRESHOLDS)), dtype=bool)
    else:
        iou = boxes.iou(gt_boxes, boxes.boxes(det))
        tp = BaseValidator.match_predictions(_MATCHER, det[:, 5], gt_cls, iou).numpy()
    cls = gt_cls.numpy()
    return {
        "tp": tp,
        "conf": det[:, 4].numpy(),
        "pred_cls": det[:, 5].numpy(),
        "target_cls": cls,
        "target_img": np.unique(cls),
    }


def evaluate(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    accelerator: Accelerator,
    names: dict[int, str],
    conf: float = 0.001,
    iou: float = 0.7,
    max_det: int = 300,
    desc: str = "val",
    plot_dir: str | Path | None = None,
    batch_to_device: Callable[[dict], dict] | None = None,
    missrate: MissRate | None = None,
    loss_items: Callable[[Any, dict], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` (bare, eval mode) on this rank's shard; return the job-wide metrics.

    With ``plot_dir`` the writing process (``storage.is_writer``) writes PR/F1/P/R curves and the
    confusion matrix there as PNG. ``batch_to_device``: turns each loader batch into one whose ``img`` is uint8
    on the device, targets on the host: the validation feed's ``to_device`` (``data/loaders.py``; ``--loader
    device`` decodes and letterboxes there); None: the batch is ``collate_pairs``' and only ``img`` is moved.
    ``missrate``: also KAIST's log-average miss rate, under ``"missrate"`` (batches must carry ``ratio_pad``, as
    both loaders' validation batches do). ``loss_items``: the training criterion's detached loss items of a model
    output against a batch's targets (``DetectionTask.loss_items``); with it the result holds ``losses``, their
    mean over the images (see :func:`image_losses`). Collective: every rank must call this (two
    ``all_gather_object``). The NMS and IoU are the model's task's (:func:`boxes_of`); the batches' ``bboxes`` must
    be that task's targets (oriented boxes: (N, 5) with the angle).
    """
    was_training = model.training
    model.eval()
    geometry, end2end = boxes_of(model), bool(getattr(model, "end2end", False))
    if missrate is not None and geometry is not AXIS_ALIGNED:
        raise ValueError("KAIST's miss rate (data.yaml 'missrate:') scores axis-aligned pedestrian boxes; this model "
                         "predicts oriented boxes (--task obb)")
    person = missrate.class_id(names) if missrate is not None else None
    local: list[tuple[int, str, dict[str, np.ndarray], np.ndarray | None, np.ndarray | None]] = []
    # As Ultralytics 8.4's detection and OBB validators (in training and in `val`): the matrix counts every detection
    # above the validation conf (0.001 by default, not ConfusionMatrix's own 0.25), matched at IoU > 0.45.
    confusion = ConfusionMatrix(names=dict(names), task=geometry.matrix_task)
    to_device = batch_to_device or partial(move_images, device=accelerator.device)
    # a transient bar on the main process's terminal; redirected output gets none (console.py: no '\r' in a log)
    for batch in iterate(loader, desc, enabled=accelerator.is_main_process):
        batch = to_device(batch)
        imgs = normalize_images(batch["img"])
        h, w = imgs.shape[2:]
        with torch.inference_mode():
            out = model(imgs)
            dets = suppress(out, conf, iou, max_det, True, geometry, end2end)
            # host sync: one copy of the batch's per-image loss items
            losses = image_losses(loss_items, out, batch).double().cpu().numpy() if loss_items else None
        for i, det in enumerate(dets):
            sel = batch["batch_idx"] == i
            gt_boxes = geometry.targets(batch["bboxes"][sel], w, h)
            gt_cls = batch["cls"][sel].view(-1)
            stats = image_stats(det, gt_cls, gt_boxes, geometry)
            boxes = unletterbox(det, person, batch["ratio_pad"][i]) if missrate is not None else None
            local.append((int(batch["index"][i]), batch["im_file"][i], stats, boxes,
                          None if losses is None else losses[i]))
            det = det.cpu()
            confusion.process_batch({"bboxes": geometry.boxes(det), "conf": det[:, 4], "cls": det[:, 5]},
                                    {"bboxes": gt_boxes, "cls": gt_cls}, conf=conf)
    model.train(was_training)

    everything = sorted(gather_object(local), key=lambda t: t[0])  # collective; one-process order
    confusion.matrix = np.sum(gather_object([confusion.matrix]), axis=0)  # collective; integer counts
    metrics = geometry.metrics(names=dict(names))
    for _, im_file, stats, _, _ in everything:
        metrics.update_stats({**stats, "im_name": im_file})
    n_instances = int(sum(len(s["target_cls"]) for _, _, s, _, _ in everything))
    if not everything:
        raise ValueError("validation set is empty")
    plot = plot_dir is not None and is_writer(accelerator)  # the same rule as training's files
    if plot:
        Path(plot_dir).mkdir(parents=True, exist_ok=True)
    metrics.process(save_dir=Path(plot_dir or "."), plot=plot)
    if plot:
        for normalize in (False, True):
            confusion.plot(normalize=normalize, save_dir=plot_dir)
    p, r, map50, map5095 = (float(x) for x in metrics.mean_results())
    per_class = {}
    for j, c in enumerate(metrics.box.ap_class_index):
        cp, cr, c50, c5095 = (float(x) for x in metrics.class_result(j))
        per_class[names.get(int(c), str(c))] = {"precision": cp, "recall": cr, "mAP50": c50, "mAP50-95": c5095,
                                                "instances": int(metrics.nt_per_class[int(c)])}
    extra = {"missrate": missrate([(Path(f).stem, b) for _, f, _, b, _ in everything])} if missrate is not None else {}
    result = {
        "precision": p,
        "recall": r,
        "mAP50": map50,
        "mAP50-95": map5095,
        "fitness": float(metrics.fitness),  # best.pt's criterion, Ultralytics' own: in 8.4, mAP50-95 alone
        "images": len(everything),
        "instances": n_instances,
        "per_class": per_class,
        # rows: predicted class (last: background), columns: true class (last: background)
        "confusion_matrix": confusion.matrix.astype(int).tolist(),
        **extra,
    }
    if loss_items is not None:  # in dataset order: the same sum at any world size
        result["losses"] = [float(v) for v in np.mean([lo for _, _, _, _, lo in everything], axis=0)]
    return result


def format_metrics_table(m: dict) -> str:
    """The metrics of :func:`evaluate` as the per-class text table `val` prints and training writes at its end."""
    rows = [("all", m["images"], m["instances"], m["precision"], m["recall"], m["mAP50"], m["mAP50-95"])]
    rows += [(name, "", c.get("instances", ""), c["precision"], c["recall"], c["mAP50"], c["mAP50-95"])
             for name, c in m["per_class"].items()]
    lines = [f"{'class':>12} {'images':>7} {'labels':>7} {'P':>7} {'R':>7} {'mAP50':>7} {'mAP50-95':>9}"]
    lines += [f"{r[0]:>12} {r[1]!s:>7} {r[2]!s:>7} {r[3]:7.4f} {r[4]:7.4f} {r[5]:7.4f} {r[6]:9.4f}" for r in rows]
    mr = m.get("missrate")
    if mr is not None:  # KAIST: its own metric under mAP's table, the number its papers quote (lower is better)
        value = "n/a (no pedestrian counts)" if mr["MR-2"] is None else f"{100 * mr['MR-2']:.2f}%"
        lines.append(f"{mr['protocol']}: log-average miss rate MR-2 {value} over FPPI 1e-2..1e0 "
                     f"({mr['images']} images, {mr['pedestrians']} pedestrians, {mr['ignore_regions']} ignore regions)")
    return "\n".join(lines)
