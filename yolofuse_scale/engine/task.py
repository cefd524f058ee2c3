"""The task interface between the loop and the detector: ``step(model, batch) -> loss, items``.

The loop never knows which fusion it trains; it hands a batch here and backpropagates what comes
back. This is also the one place that defines what a step's gradient means, and the one place a task is
chosen: :data:`TASKS` maps each ``--task`` to its class, and :func:`make_task` picks the one of a model's
task (``FusionDetectionModel.task``, which its head says). A task class is what differs between them: its
criterion (the model's, Ultralytics' for that head), its loss names, and its boxes (``engine/boxes.py``:
NMS, matching and mapping back), which validation, ``val`` and prediction read as ``TASKS[task].boxes``.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.utils.loss import E2ELoss

from yolofuse_scale.data.transforms import normalize_images
from yolofuse_scale.engine.boxes import AXIS_ALIGNED, ROTATED, AxisAligned


class DetectionTask:
    """Detection with the model's own Ultralytics criterion and its default gains (box 7.5, cls 0.5,
    dfl 1.5): ``v8DetectionLoss`` for YOLOv8/YOLO11, ``E2ELoss`` (one-to-many + one-to-one branches,
    the one-to-many weight decaying over the epochs) for YOLO26's end-to-end head.

    Gradient semantics: ``v8DetectionLoss`` returns the per-batch loss times the batch size (a sum
    over images, as YOLO's hyper-parameters assume). We backpropagate ``nbs`` x the per-batch loss;
    Accelerate then divides by the accumulation count and DDP/DeepSpeed average over ranks, so a
    step's gradient is ``nbs`` x the mean micro-batch gradient: Ultralytics' own update when a step
    holds ``nbs`` images, and independent of world size x accumulation otherwise.

    Args:
        model: the *unwrapped* detector (the loss reads its Detect head and hyper-parameters).
        nbs: nominal batch size.
        epochs: the run's epochs (E2ELoss's branch weights follow them).
        channels_last: hand the model NHWC images (``--no-channels-last``: NCHW); see :meth:`images`.

    Attributes:
        loss_names: what the loss items are: ``box, cls, dfl``, or ``box, cls, l1`` for a head without
            distribution focal loss (``reg_max: 1``, YOLO26).
    """

    #: the ``--task`` this class trains (a model of another task is refused: its targets have another form)
    name = "detect"
    #: how this task's detections are suppressed, matched and mapped back (``engine/boxes.py``)
    boxes: AxisAligned = AXIS_ALIGNED

    def __init__(self, model: nn.Module, nbs: int = 64, epochs: int = 100, channels_last: bool = True):
        task = getattr(model, "task", "detect")
        if task != self.name:
            raise ValueError(f"{type(self).__name__} trains --task {self.name}; this model's head is a --task {task} "
                             f"head ({type(model.model[-1]).__name__}): use make_task(model), which picks by it")
        model.args.epochs = epochs  # a per-model copy of Ultralytics' defaults (detector.py)
        self.criterion = model.init_criterion()
        names = (self.criterion.one2one if isinstance(self.criterion, E2ELoss) else self.criterion).loss_names
        self.loss_names = tuple(n.removesuffix("_loss") for n in names)
        self.end_to_end = isinstance(self.criterion, E2ELoss)  # YOLO26: loss weights that follow the epochs
        self.nbs = nbs
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.epochs = epochs
        #: (epoch, new total) of each resume that changed --epochs (the trainer sets them from the checkpoint)
        self.extensions: tuple[tuple[int, int], ...] = ()

    def set_epoch(self, epoch: int) -> None:
        """Put epoch-dependent loss state where an uninterrupted run has it at ``epoch`` (0-based).

        Ultralytics steps E2ELoss's one-to-many/one-to-one weights once per finished epoch, and on
        resume sets them from the start epoch; here they are always a function of the epoch (and of the
        recorded extensions), so a resumed or re-sharded run computes the same loss.
        """
        if self.end_to_end:
            c = self.criterion
            c.updates = epoch  # what Ultralytics' own count would be after ``epoch`` finished epochs
            c.o2m = self.one_to_many_weight(epoch)
            c.o2o = max(c.total - c.o2m, 0)

    def one_to_many_weight(self, epoch: int) -> float:
        """E2ELoss's one-to-many weight at ``epoch``: linear from its start (0.8) at epoch 0 to its final (0.1) at
        the last epoch, as Ultralytics' schedule (the same expression without extensions). A resume that changed
        --epochs (``extensions``) continues it from the weight of the epoch it resumed in, linearly to the final
        weight at the new last epoch: no jump, whatever the new total."""
        c = self.criterion
        e0, w0, last, final = 0, c.o2m_copy, self.epochs - 1, c.final_o2m

        def line(e: int) -> float:
            return max(1 - (e - e0) / max(last - e0, 1), 0) * (w0 - final) + final

        extended = False
        for at, total in self.extensions:
            if epoch < at:
                break
            w0 = line(at)
            e0, last, extended = at, total - 1, True
        return w0 if extended and epoch == e0 else line(epoch)

    def images(self, batch: dict) -> torch.Tensor:
        """uint8 stacked RGB+IR -> float in [0, 1] (on the batch's device: no host round trip).

        Channels-last by default: every convolution then runs in NHWC, the layout oneDNN (CPU) and
        cuDNN prefer, and the activations stay NHWC through the network. Measured on yolov8n, batch 8 at
        128 px, one CPU thread: forward + backward 1.10-1.22x faster (``benchmarks/results/
        step_profile_2core_cpu``). The strategy lays the convolution weights out to match where it can (one
        process, DDP: ``strategy/memory_format.py``). Same arithmetic, other summation order: results agree to
        float rounding, not bit for bit, with ``--no-channels-last``.
        """
        return normalize_images(batch["img"]).contiguous(memory_format=self.memory_format)

    def step(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward ``batch`` through the (possibly wrapped) ``model``; return (loss to backprop, loss items).

        ``items`` are the detached per-batch box/cls/dfl losses (not multiplied by anything).
        """
        # The loss sums over thousands of anchors: always in fp32. Autocast (DDP, DeepSpeed) hands back
        # fp32 already; FSDP2's bf16 policy returns the head's bf16 outputs (cls loss off by ~5x).
        preds = _to_fp32(model(self.images(batch)))
        loss, items = self.criterion(preds, batch)
        bs = batch["img"].shape[0]
        detached = torch.stack([items[k] for k in items]) if isinstance(items, dict) else items.detach()
        return loss.sum() * (self.nbs / bs), detached

    def loss_items(self, preds, batch: dict) -> torch.Tensor:
        """The loss items (``loss_names``' order, detached) of a model's output ``preds`` against ``batch``'s targets,
        by the training criterion: what validation reports as its loss (``evaluate(loss_items=...)``). The
        output of an eval-mode model works (Ultralytics' criterion takes the raw head outputs from it)."""
        _, items = self.criterion(_to_fp32(preds), batch)
        return torch.stack([items[k] for k in items]).detach() if isinstance(items, dict) else items.detach()


class OBBTask(DetectionTask):
    """Oriented boxes (``--task obb``): the model's ``OBB``/``OBB26`` head trained with Ultralytics' ``v8OBBLoss``
    (YOLO26: ``E2ELoss`` over it, the same epoch-following branch weights as detection), whose items are ``box, cls,
    dfl, angle`` (``box, cls, l1, angle`` for YOLO26). Targets are the contract's: ``bboxes`` (N, 5) cx, cy, w, h
    normalised to the image and the angle in radians (Ultralytics' ``Format(return_obb=True)``).

    Gradient semantics: :class:`DetectionTask`'s, unchanged: ``v8OBBLoss`` too returns the per-batch loss times the
    batch size, and ``nbs`` x the per-batch loss is backpropagated. Host syncs, not ours: on top of detection's,
    ``v8OBBLoss`` reads the image size, the summed target scores and whether any anchor matched on the host
    (``float(imgsz)``, ``max(target_scores.sum(), 1)``, ``if fg_mask.sum()``), ~3 more waits per micro-batch on a
    GPU. Boxes under 2 px on a side are left out of the loss by it (to stabilise training), as in Ultralytics."""

    name = "obb"
    boxes = ROTATED


#: Every task, by its ``--task`` name: the one place a task is chosen (see the module docstring).
TASKS: dict[str, type[DetectionTask]] = {"detect": DetectionTask, "obb": OBBTask}


def make_task(model: nn.Module, **kwargs) -> DetectionTask:
    """The task of ``model``'s head (``model.task``), built for the *unwrapped* model (see :class:`DetectionTask`)."""
    return TASKS[getattr(model, "task", "detect")](model, **kwargs)


def _to_fp32(x):
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() else x
    if isinstance(x, dict):
        return {k: _to_fp32(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_fp32(v) for v in x)
    return x
