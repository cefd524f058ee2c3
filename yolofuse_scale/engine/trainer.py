"""The one training loop. It runs unchanged on one CPU, one GPU, DDP over gloo or NCCL.

Read top to bottom it is the algorithm: build, prepare, then for each optimizer step accumulate
micro-batch gradients, clip, step, update the EMA, log; at each epoch end validate and save.
Distributed specifics live in ``strategy/``; what a step's gradient means lives in ``task.py``;
which samples a rank sees lives in ``data/sampler.py``; what a step measures (times, bytes, MFU) lives in
``perf.StepMeter``. A step reads device values on the host once (``step_values``), after its one all-reduce.

Why one file of ~560 lines (above the package's ~450): it is the algorithm and the set-up the algorithm reads
(``_build_data``, ``_build_model``, ``_load``: which feed, which model, where the run resumes). Split apart, each
of the ~60 knobs they hand to the loop would cross one more interface, and the loop would no longer read top to
bottom. What is not the loop lives beside it: ``state.py`` (what a checkpoint saves), ``callbacks.py``,
``step_values.py``, ``course.py``, ``outputs.py``, ``runlog.py``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType, broadcast_object_list, gather_object, set_seed
from torch.utils.data import DataLoader

from yolofuse_scale.config import RunConfig
from yolofuse_scale.data import load_data_config, scan_dataset, write_synthetic_dataset
from yolofuse_scale.data.config import check_task
from yolofuse_scale.data.loaders import training_feed, validation_feed
from yolofuse_scale.data.modality import ground_truth
from yolofuse_scale.data.sampler import ShardSampler, StepShardedBatchSampler
from yolofuse_scale.engine import checkpoint as ckpt
from yolofuse_scale.engine import course, guards
from yolofuse_scale.engine.callbacks import Callback
from yolofuse_scale.engine.ema import ShardedEMA
from yolofuse_scale.engine.evaluate import evaluate
from yolofuse_scale.engine.optim import Schedule, build_optimizer, effective_lr_wd
from yolofuse_scale.engine.outputs import make_outputs
from yolofuse_scale.engine.perf import (
    CommMeter,
    PrecisionProbe,
    StepMeter,
    effective_precision,
    peak_flops,
    peak_memory,
    precision_key,
    train_flops_per_image,
)
from yolofuse_scale.engine.run_dir import resolve_output_dir
from yolofuse_scale.engine.runlog import make_log
from yolofuse_scale.engine.state import TrainState
from yolofuse_scale.engine.step_values import NonFiniteError, non_finite, step_values
from yolofuse_scale.engine.storage import is_writer, writer_first
from yolofuse_scale.engine.strategy.accelerator import build_accelerator, clip_grad_norm, prepare_model, unwrap
from yolofuse_scale.engine.strategy.batchnorm import sync_batchnorm_buffers
from yolofuse_scale.engine.strategy.grad_reduce import attach_grad_reduce
from yolofuse_scale.engine.strategy.launch import launched_world_size, strategy_name
from yolofuse_scale.engine.strategy.memory_format import keep_optimizer_layout
from yolofuse_scale.engine.strategy.sharded import full_state_dict
from yolofuse_scale.engine.task import make_task
from yolofuse_scale.errors import ConfigError, DistributedSetupError
from yolofuse_scale.model import build_model, model_summary
from yolofuse_scale.model.pretrained import apply_pretrained
from yolofuse_scale.startup import collector_paused
from yolofuse_scale.weights import plain_meta, write_weights


class Trainer:
    """Train a fusion detector as ``cfg`` says. ``Trainer(cfg).fit()`` returns the final metrics.

    ``callbacks``: :class:`Callback` objects the loop calls at epoch starts and step ends, in order.
    ``skip_grad_sync``: never synchronise gradients (ranks train apart): the scaling benchmark's step time
    without communication (``bench/no_sync.py``), DDP and FSDP only; no user setting.
    """

    def __init__(self, cfg: RunConfig, callbacks: Sequence[Callback] = (), *, skip_grad_sync: bool = False):
        self.cfg = cfg
        self.callbacks = list(callbacks)
        self.skip_grad_sync = skip_grad_sync
        cfg.train.resolve_grad_accum(launched_world_size())
        # Before the process group and the strategy exist: DeepSpeed binds collectives when it starts.
        self.comm = CommMeter().install() if cfg.log.measure_comm else None
        self.accelerator = build_accelerator(cfg, project_dir=cfg.checkpoint.output_dir or None)
        acc = self.accelerator
        # Without --output-dir: <project>/<name>, numbered, chosen by the main process (collective; run_dir.py)
        self.out, run_dir_note = resolve_output_dir(cfg.checkpoint, acc)
        if not cfg.checkpoint.output_dir:
            cfg.checkpoint.output_dir = str(self.out)  # config.yaml says where the run wrote
            acc.project_configuration.set_directories(str(self.out))  # the trackers' folder
        if skip_grad_sync and acc.distributed_type == DistributedType.DEEPSPEED:
            raise DistributedSetupError("skipping gradient synchronisation works with ddp and fsdp only (DeepSpeed's "
                                        "engine owns the gradient reduction and has no no_sync)")
        # Which run owns the output folder and where this one resumes from, before anything is
        # written there: a refused start changes nothing (collective).
        # Holds the folder's lock (run_lock.py) until the run ends: every exit below gives it back.
        self.checkpointer = ckpt.Checkpointer(acc, self.out, cfg.checkpoint)
        try:
            self.log = make_log(acc, self.out, cfg.to_dict(), self.checkpointer.run_id, cfg.log.log_every)
            for note in [run_dir_note] if run_dir_note else []:
                self.log.info(note)
            for note in self.checkpointer.notes:
                self.log.info(note)
            set_seed(cfg.train.seed)  # same seed on every rank: identical initial weights everywhere

            self._build_data()  # a loop over the user's files (scan, --cache): with the collector on
            with collector_paused():  # imports torch._dynamo; the model, optimizer, strategy (startup.py)
                self._build_model()
            # results.csv, results.png, labels, batch previews, the final curves (engine/outputs.py; the writer's)
            self.outputs = make_outputs(acc, self.out, self.log, self.task.loss_names, self.data_cfg.names,
                                        cfg.log.plots)
        except BaseException:
            self.checkpointer.release()
            raise

    # ----------------------------------------------------------------------------------------- setup
    def _build_data(self) -> None:
        cfg, acc = self.cfg, self.accelerator
        data_yaml = cfg.data.data
        if not data_yaml:  # the demo/test default: a small synthetic set inside the run folder
            data_yaml = str(self.out / "synthetic" / "data.yaml")
            with writer_first(acc):
                if is_writer(acc) and not Path(data_yaml).is_file():
                    write_synthetic_dataset(self.out / "synthetic", imgsz=cfg.data.imgsz, seed=cfg.train.seed)
        self.data_cfg = load_data_config(data_yaml)  # train and val must exist; a missing test entry is a warning
        # --task: the dataset's when not given (a -obb model name gives it); the two must agree
        cfg.model.task = check_task(self.data_cfg, cfg.model.task)
        for warning in self.data_cfg.warnings:
            self.log.info(f"warning: {warning}")
        # The scan (pairing, headers, labels; cached) runs once, on the main process, and its result,
        # errors included, is broadcast (one pickled list, ~1 MB for LLVIP): every rank trains on the
        # identical list even if the file system changes meanwhile (ranks that disagree on the dataset
        # length hang the job) and every rank raises the same error instead of waiting for a dead rank 0.
        d, t = cfg.data, cfg.train
        scanned = [None]
        if acc.is_main_process:
            cache_dirs = (self.data_cfg.root / ".yolofuse_cache", self.out / "scan_cache")
            scanned = [scan_dataset(self.data_cfg, ("train", "val"), d.on_bad_sample, cache_dirs)]
        scanned = broadcast_object_list(scanned) if acc.num_processes > 1 else scanned
        samples = scanned[0].take(self.log.info)
        self.label_record = scanned[0].labels  # task, IR labels, each split's label policy and counts: run_meta
        for line in scanned[0].summary:  # per split: pairs, boxes, background, skipped (is it the data meant?)
            self.log.info(line)
        train_samples, val_samples = samples["train"], samples["val"]
        self.box_sides = guards.box_sides(train_samples, d.imgsz)  # for the small-box warning (guards.py)
        self.ir_read = scanned[0].ir_read  # how IR is read (16-bit mapping, its levels; homography): recorded below
        self.train_fingerprint = ckpt.dataset_fingerprint([(s.rgb, s.ir) for s in train_samples], self.data_cfg.root)
        # --loader (data/loaders.py): which pipeline decodes and augments is decided there; the loop only calls
        # each split's to_device (--loader device: decode and augment on acc.device, in the step's data time)
        geometry = {"imgsz": d.imgsz, "ir_channels": self.data_cfg.ir_channels, "device": acc.device}
        recipe = cfg.training_recipe(self.data_cfg)  # the misregistration's default follows the data
        if d.augment:
            self.log.info(cfg.misregistration_line(self.data_cfg))
        train = training_feed(d.loader, train_samples, **geometry, augment=d.augment, recipe=recipe, seed=t.seed,
                              epochs=t.epochs, batch_size=t.batch_size, shuffle=d.shuffle, cache=d.cache,
                              cache_folders=(self.data_cfg.root / ".yolofuse_cache", self.out / "pair_cache"),
                              log=self.log.info, build_log=self._any_rank)
        val = validation_feed(d.loader, val_samples, **geometry)
        self.train_set, self.batch_to_device = train.dataset, train.to_device
        self.val_set, self.val_to_device = val.dataset, val.to_device
        self.sampler = StepShardedBatchSampler(
            len(self.train_set), t.batch_size, acc.num_processes, acc.process_index, t.grad_accum,
            shuffle=d.shuffle, seed=t.seed,
        )
        if self.sampler.steps_per_epoch < 1:
            raise ConfigError(
                f"{self.data_cfg.yaml_path}: {len(self.train_set)} training pairs cannot fill one optimizer step of "
                f"{self.images_per_step} images (batch-size x processes x grad-accum); lower them or add data"
            )
        loader_kw = {"num_workers": d.workers, "pin_memory": acc.device.type == "cuda",
                     "persistent_workers": d.workers > 0}
        self.train_loader = DataLoader(self.train_set, batch_sampler=self.sampler, collate_fn=train.collate,
                                       **loader_kw)
        self.val_loader = DataLoader(
            self.val_set, batch_size=t.batch_size,
            sampler=ShardSampler(len(self.val_set), acc.num_processes, acc.process_index),
            collate_fn=val.collate, **loader_kw,
        )

    def _position(self) -> dict[str, Any]:
        """What the saved loop position means (checked on resume): images per step, the training set, the model."""
        t, m = self.cfg.train, self.cfg.model
        return {"images_per_step": self.images_per_step, "batch_size": t.batch_size,
                "world_size": self.accelerator.num_processes, "grad_accum": t.grad_accum,
                "steps_per_epoch": self.sampler.steps_per_epoch, "dataset": self.train_fingerprint,
                "model": f"--model {m.model} --fusion {m.fusion}" + (f" --scale {m.scale}" if m.scale else "")
                + (f" --task {m.task}" if m.task != "detect" else ""),  # a detection run's words as before
                # what the lr schedule, mosaic epochs, loss weights and data order follow (engine/course.py)
                "course": course.course_of(self.cfg)}

    def _apply_pretrained(self, model: torch.nn.Module) -> None:
        """--pretrained: every rank reads the same file into its own copy (deterministic; no collective). A
        resume skips it: the checkpoint's weights replace the model's anyway and the file may be gone."""
        path = self.cfg.model.pretrained
        self.pretrained: dict[str, Any] | None = None
        if not path:
            return
        if self.checkpointer.resume_from is not None:
            self.log.info(f"--pretrained {path}: not applied, resuming from {self.checkpointer.resume_from}")
            return
        report = apply_pretrained(model, path)
        for line in report.lines():
            self.log.info(line)
        self.pretrained = report.summary()  # into metrics.json: what the run started from

    @property
    def images_per_step(self) -> int:
        t = self.cfg.train
        return t.batch_size * self.accelerator.num_processes * t.grad_accum

    def _build_model(self) -> None:
        cfg, acc = self.cfg, self.accelerator
        m = cfg.model
        model = build_model(m.model, m.fusion, nc=self.data_cfg.nc, ir_channels=self.data_cfg.ir_channels,
                            scale=m.scale, names=self.data_cfg.names, task=m.task)
        self._apply_pretrained(model)  # before anything copies the model (summary, eval copy, EMA, wrapper)
        params, gflops = model_summary(model, cfg.data.imgsz)
        self.log.info(f"model {m.model} fusion={m.fusion} task={m.task} ir_channels={self.data_cfg.ir_channels}: "
                      f"{params / 1e6:.2f} M parameters, {gflops:.2f} GFLOPs at {cfg.data.imgsz} px")
        self.model_meta = {"params": params, "gflops": gflops}
        if self.pretrained is not None:
            self.model_meta["pretrained"] = self.pretrained
        # A plain copy for validation and the weights files: sharded strategies gather the full
        # weights (EMA or model) into it when needed; it costs one model's memory per rank.
        self.eval_model = copy.deepcopy(model).to(acc.device).eval()
        self._gathered_at = -1
        self._validated_at = -1  # the step of the last validation: only a fresh one can make a new best.pt
        self._val_losses: dict[str, float] = {}
        model = prepare_model(acc, model, cfg.parallel, self.log)
        optimizer = build_optimizer(model, cfg.optim, self.images_per_step,
                                    dtensor_params=acc.distributed_type == DistributedType.FSDP)
        keep_optimizer_layout(optimizer)  # its state saved NCHW, loaded in the weights' layout (channels-last)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        # DDP's gradient all-reduce: shared memory among one machine's CPU processes, else gloo/NCCL as they are
        attach_grad_reduce(getattr(self.model, "_orig_mod", self.model), cfg.parallel.cpu_allreduce, self.log,
                           self.comm)  # under --compile: the DDP inside
        if self.skip_grad_sync:
            self.log.info("WARNING skip_grad_sync (benchmark): gradients are never synchronised, ranks train apart; "
                          "for measuring step time without communication only")
        # The bare model under the strategy's wrapper; the same object for the whole run (DDP, DeepSpeed and
        # compile wrap it, FSDP2 shards it in place), so it is looked up once: per step it cost ~4 ms.
        self.bare = bare = unwrap(acc, self.model)
        # the one choice of task: the model's head says it (engine/task.py's TASKS)
        self.task = make_task(bare, nbs=cfg.optim.nbs, epochs=cfg.train.epochs,
                              channels_last=cfg.parallel.channels_last)
        self.ema = ShardedEMA(bare) if cfg.optim.ema else None
        # Every step's measurements. MFU: training FLOPs per image / the device's peak (0: unknown), at the
        # precision the model computes in (DeepSpeed's is its JSON's torch_autocast: see effective_precision).
        precision = precision_key(effective_precision(acc))
        self.meter = StepMeter(
            acc.device, phases=cfg.log.time_phases, images_per_step=self.images_per_step,
            world_size=acc.num_processes, flops_per_image=train_flops_per_image(self.model_meta["gflops"]),
            peak_flops=peak_flops(acc.device, precision, cfg.log.peak_tflops), mfu_precision=precision,
            comm=self.comm, probe=PrecisionProbe(bare),
            scaled_optimizer=self.optimizer if acc.scaler is not None else None,
        )
        self.state = TrainState(self.ema)
        self.state.world_size, self.state.distributed_type = acc.num_processes, acc.distributed_type.value
        self.run_meta = plain_meta({
            "model_yaml": bare.yaml, "rgb_channels": bare.rgb_channels, "ir_channels": bare.ir_channels,
            "names": dict(self.data_cfg.names), "imgsz": cfg.data.imgsz, "task": bare.task,
            "labels": self.label_record,  # the task, the IR labels, each split's label policy and counts (data/scan.py)
            # the 16-bit IR mapping the model learns from (a percentile's levels included): val and predict apply it
            **({"ir_mapping": self.ir_read.mapping.record()} if self.ir_read.mapping.chosen else {}),
        })
        self.log.info(
            f"{acc.num_processes} process(es) on {acc.device.type} ({strategy_name(cfg.parallel)}: "
            f"{acc.distributed_type.value}, "
            f"mixed precision {effective_precision(acc)}); batch {cfg.train.batch_size}/device x "
            f"{acc.num_processes} x accumulation {cfg.train.grad_accum} = {self.images_per_step} images/step; "
            f"{self.sampler.steps_per_epoch} steps/epoch"
        )

    # ------------------------------------------------------------------------------------------ loop
    def fit(self) -> dict[str, Any]:
        """Train from the resume point to --epochs (or --max-steps); return the last validation's metrics."""
        try:
            return self._fit()
        except BaseException:  # an error, Ctrl-C: the folder's lock goes back (SIGTERM: run_lock's handler)
            self.log.interrupt()  # the live bar goes before the error's line
            self.checkpointer.release()
            raise

    def _fit(self) -> dict[str, Any]:
        """The loop itself (``fit`` adds the lock's release on an error)."""
        cfg, state = self.cfg, self.state
        start_step = self._load()
        self.outputs.start(state.epoch, state.step, self.train_set.samples)  # results.csv rewound to here too
        self.stopped_early: dict[str, int] | None = None  # set by _patience_exhausted, into metrics.json
        self._call_back("on_train_start", self)
        max_steps = cfg.train.max_steps or math.inf
        stopped = state.step >= max_steps or self._patience_exhausted()  # a resume of a run that stopped there
        while state.epoch < cfg.train.epochs and not stopped:
            self._start_epoch()
            stopped = self._train_epoch(max_steps)
            if stopped and state.step_in_epoch < self.sampler.steps_per_epoch:
                break  # --max-steps inside an epoch: keep the position, skip the epoch-end work
            final = self._is_last_epoch(stopped)
            validated = cfg.train.val or final
            if validated:
                state.metrics = self._validate(final)
                state.early_stopping.update(state.epoch, state.metrics["fitness"])
            self.outputs.epoch_end(state.epoch, [g["lr"] for g in self.optimizer.param_groups])  # its results.csv row
            state.epoch += 1
            state.step_in_epoch = 0
            self._save(state.metrics)
            self.log.end_epoch(state.epoch)  # the epoch's summary line; its values to the trackers
            self._call_back("on_epoch_end", state.epoch - 1, state.metrics if validated else {})
            stopped = stopped or self._patience_exhausted()
        return self._finish(start_step, stopped)

    def _call_back(self, event: str, *args: Any) -> None:
        """Call ``event`` on every callback that has it (a callback need not subclass :class:`Callback`)."""
        for cb in self.callbacks:
            hook = getattr(cb, event, None)
            if hook is not None:
                hook(*args)

    def _patience_exhausted(self) -> bool:
        """--patience: whether the finished epochs have gone without a better fitness for too long (logged)."""
        state, patience = self.state, self.cfg.train.patience
        if not state.early_stopping.exhausted(state.epoch, patience) or state.epoch >= self.cfg.train.epochs:
            return False
        best, waited = state.early_stopping, state.epoch - 1 - state.early_stopping.best_epoch
        self.log.info(f"early stop (--patience {patience}): no better fitness in the {waited}"
                      f" epoch(s) since epoch {best.best_epoch + 1} (fitness {best.best_fitness:.4g}); stopping after "
                      f"epoch {state.epoch} of {self.cfg.train.epochs}, weights/best.pt holds the best validated epoch")
        self.stopped_early = {"patience": patience, "epoch": state.epoch, "best_epoch": best.best_epoch + 1}
        return True

    def _load(self) -> int:
        """Resume where the Checkpointer says (nothing: a fresh start); return the step this launch starts at."""
        state = self.state
        restored = self.checkpointer.load(self.model, self._position(), self.run_meta)  # None: a fresh start
        for note in self.checkpointer.folder_notes:  # what it moved aside, once every refusal was made
            self.log.info(note)
        if restored is not None:
            state.restore(*restored, self.bare)
            self.log.info(f"resumed from {self.checkpointer.resume_from} at step {state.step} (epoch {state.epoch})")
            for note in self.checkpointer.resume_notes:
                self.log.info(note)
            self._keep_best_consistent()
        self._follow_course(self.checkpointer.position["course"], self.checkpointer.extended_from)
        if is_writer(self.accelerator):  # once the resume is accepted: a refused one leaves the run's config as it was
            self.cfg.save(self.out / "config.yaml")
        self.log.rewind(state.step)  # the log holds each step once: later records are logged again
        return state.step

    def _follow_course(self, recorded: dict[str, Any], extended_from: int | None) -> None:
        """The lr schedule and the YOLO26 loss weights as the run's course records them (its first --epochs and
        every extension; engine/course.py), and one log line saying what they do from here."""
        spe = self.sampler.steps_per_epoch
        extensions = tuple((step, total) for step, total in recorded["extensions"])
        lr, _ = effective_lr_wd(self.cfg.optim, self.images_per_step)
        self.schedule = Schedule(self.cfg.optim, spe, recorded["first_epochs"], lr, extensions)
        self.task.epochs = recorded["first_epochs"]
        self.task.extensions = tuple((step // spe, total) for step, total in extensions)
        d = self.cfg.data
        mosaic = d.recipe.close_mosaic if d.augment and d.recipe.mosaic > 0 else None
        self.log.info(course.describe(self.schedule, self.state.step, extended_from, mosaic,
                                      self.task if self.task.end_to_end else None))
        for warning in guards.small_run_warnings(self.schedule, self.state.step, self.box_sides, d.imgsz,
                                                 int(self.bare.stride.min())):
            self.log.info(f"warning: {warning}")  # a long warm-up, boxes under the finest stride: with the fix

    def _keep_best_consistent(self) -> None:
        """best_fitness describes weights/best.pt or nothing: when the resume found no best.pt of this timeline
        (the Checkpointer moved a later one aside, or it is gone), the next validated epoch writes a new one."""
        state = self.state
        if state.best_fitness >= 0 and not (self.out / "weights" / "best.pt").exists():
            self.log.info(f"best fitness {state.best_fitness:.4g} (recorded at step {state.step}) has no "
                          "weights/best.pt of this timeline any more (moved aside as a later step's, or deleted): "
                          "best_fitness restarts and the next validated epoch writes a new best.pt")
            state.best_fitness = -1.0

    def _start_epoch(self) -> None:
        """Data order, augmentation and loss weights as an uninterrupted run has them at this epoch; callbacks."""
        epoch = self.state.epoch
        self.sampler.set_epoch(epoch, start_step=self.state.step_in_epoch)
        self.train_set.set_epoch(epoch)
        self.task.set_epoch(epoch)
        self._call_back("on_epoch_start", epoch)
        self.log.start_epoch(epoch, self.cfg.train.epochs, self.sampler.steps_per_epoch, self.state.step_in_epoch,
                             self.images_per_step, self.task.loss_names, self.state.best_fitness)

    def _train_epoch(self, max_steps: float) -> bool:
        """Train until the epoch ends or ``max_steps`` is reached; return whether training must stop."""
        acc, state, cfg, meter = self.accelerator, self.state, self.cfg, self.meter
        self.model.train()
        accum, names = cfg.train.grad_accum, self.task.loss_names
        sums = torch.zeros(len(names) + 2, device=acc.device)  # loss items, backprop objective, non-finite
        files: list[str] = []
        skip_sync = acc.no_sync if self.skip_grad_sync else lambda _: contextlib.nullcontext()
        meter.start()
        for micro, batch in enumerate(self.train_loader):
            batch = self.batch_to_device(batch)  # the loader's own (--loader device: decodes and augments here)
            if self.outputs.wants_batches:  # the run's first 3 micro-batches only: train_batch<i>.jpg (a host copy)
                self.outputs.preview(batch)
            meter.mark("data")
            if micro % accum == 0:
                # Set before the step's first backward: under DeepSpeed the engine already steps
                # inside the last micro-batch's backward.
                lr = self.schedule.apply(self.optimizer, state.step)
            with acc.accumulate(self.model), skip_sync(self.model):
                # host sync, not ours: Ultralytics' loss reads the targets' per-image counts (unique, max) and
                # the assigner's matches (nonzero), ~4 waits per micro-batch on a GPU
                loss, items = self.task.step(self.model, batch)
                meter.mark("forward")
                acc.backward(loss)
                meter.mark("backward")
                sums[: len(names)] += items
                sums[-2] += loss.detach() / accum
                files += batch["im_file"]
                if not acc.sync_gradients:
                    continue
                # Under DeepSpeed this only reports the norm: the engine clipped (at --clip-grad,
                # written into its config) and stepped inside backward; elsewhere it clips here.
                grad_norm = clip_grad_norm(acc, self.model, cfg.optim.clip_grad)  # unscaled under fp16
                # Under fp16 an overflowing gradient is routine: the grad scaler skips that step and
                # lowers its scale (logged as step_skipped). A non-finite loss is never routine.
                sums[-1] = non_finite(sums[-2], grad_norm, check_norm=acc.scaler is None)
                # One all-reduce per step carries the logged losses and the non-finite flag (a step
                # must never update on some ranks and stop on others; any rank's flag makes the mean > 0).
                # host sync: the step's one copy to the host (losses, flag, grad norm), see step_values
                done = step_values(acc.reduce(sums, reduction="mean"), grad_norm, accum, names)
                if done.non_finite:
                    self._raise_non_finite(sums, files)
                self.optimizer.step()  # host sync under fp16 only: the grad scaler reads its inf flag and scale
                if state.step == 0:  # once, while gradients exist: what each rank holds (one gather)
                    meter.capture_state(self.model, self.optimizer)
                self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update(self.bare)
            meter.mark("optim")
            state.step += 1
            state.step_in_epoch += 1
            self._log_step(meter.record(state.step, state.epoch, done.losses, lr, done.grad_norm))
            if cfg.checkpoint.save_every_steps and state.step % cfg.checkpoint.save_every_steps == 0:
                self._save({}, weights=False)
            sums.zero_()
            files = []
            if state.step >= max_steps:
                return True
            meter.start()  # logging and saving belong to no step
        return False

    def _log_step(self, record: dict[str, Any]) -> None:
        """Callbacks, then the record into train_log.jsonl and onto the console (its bar or lines: console.py)."""
        self._call_back("on_step_end", record)
        self.log.step(record)

    def _finish(self, start_step: int, stopped: bool) -> dict[str, Any]:
        """A mid-epoch stop's checkpoint, metrics.json, the log closed and the process group ended (every rank)."""
        acc, state = self.accelerator, self.state
        trained = state.step > start_step  # False: a finished run relaunched, its outputs stay as they are
        if stopped and state.step_in_epoch and trained:  # a mid-epoch stop still leaves a resumable checkpoint
            self._save(state.metrics)
        if self.meter.state_bytes is not None:  # measured on this launch's first step (a fresh run)
            self.model_meta["model_state_bytes"] = self.meter.state_bytes
        self.model_meta["peak_memory"] = gather_object([peak_memory(acc.device)])  # per rank (collective)
        if not trained and start_step and (self.out / "metrics.json").is_file():
            self.log.info(f"nothing left to train at step {state.step}: checkpoints, weights and metrics.json kept")
        elif is_writer(acc):
            (self.out / "metrics.json").write_text(json.dumps(self._summary(), indent=2))
        self.outputs.finish()  # results.png
        self.log.done(state.step)  # time, best epoch, where the weights and metrics are
        self._call_back("on_fit_end", state.metrics)
        self.log.close()
        acc.wait_for_everyone()
        self.checkpointer.release()  # every rank has written its part: another training may take the folder
        # Every rank: finishes the trackers (main process) and destroys the process group. Left to
        # interpreter exit, gloo's threads were once torn down mid-flight ("terminate called without
        # an active exception", SIGABRT after a finished run).
        acc.end_training()
        return state.metrics

    def _summary(self) -> dict[str, Any]:
        """metrics.json: where the run ended, its last validation, the model's size and memory, its weights."""
        state, best = self.state, self.out / "weights" / "best.pt"
        return {"step": state.step, "epoch": state.epoch, "metrics": state.metrics, **self.model_meta,
                "labels": self.label_record,  # what each split trained on or was scored against (data.yaml's policy)
                "weights": str(self.out / "weights" / "last.pt"),
                # best.pt is chosen among validated epochs only: with --no-val, the final one
                "validated": "each epoch" if self.cfg.train.val else "final epoch only (--no-val)",
                "best_weights": str(best) if best.exists() else None,
                "best_fitness": state.best_fitness if state.best_fitness >= 0 else None,
                # --patience ended the run: after which epoch (1-based), its best epoch
                "stopped_early": self.stopped_early}

    def _raise_non_finite(self, sums: torch.Tensor, files: list[str]) -> None:
        """Collective (every rank gets here together): name the step, the bad ranks and their files."""
        acc = self.accelerator
        mine = bool(sums[-1] > 0)  # host sync: this rank's own flag, on the way to the error only
        bad = gather_object([(acc.process_index, files)] if mine else [])
        detail = "; ".join(f"rank {r}: {', '.join(f)}" for r, f in bad) or "gradient norm (all ranks)"
        raise NonFiniteError(
            f"non-finite loss or gradient at optimizer step {self.state.step + 1} (epoch {self.state.epoch + 1}); "
            f"batch files: {detail}. Check these labels/images, lower --lr, or disable mixed precision."
        )

    # ----------------------------------------------------------------------------- validate and save
    def _eval_model(self) -> torch.nn.Module:
        """The plain model holding the full EMA (or model) weights, gathered once per step. Collective."""
        if self._gathered_at != self.state.step:
            acc = self.accelerator
            bare = self.bare
            sync_batchnorm_buffers(acc, bare)
            sd = self.ema.full_state_dict(acc, bare) if self.ema is not None else full_state_dict(bare)
            self.eval_model.load_state_dict(sd)
            self._gathered_at = self.state.step
        return self.eval_model

    def _any_rank(self, msg: str) -> None:
        """A line any rank prints (the run log prints the main process's only): for what only the rank that does it
        can say, e.g. which process is decoding the pair cache while the others wait for it."""
        acc = self.accelerator
        who = f" [rank {acc.process_index}]" if acc.num_processes > 1 else ""
        print(f"{time.strftime('%H:%M:%S')}{who} {msg}", flush=True)

    def _is_last_epoch(self, stopped: bool) -> bool:
        """Whether the epoch ending now is the run's last: the last of --epochs, or --max-steps ends here.
        (The start-up scan refuses a val split with no usable pair, so there is always one to validate.)"""
        last = stopped or self.state.epoch == self.cfg.train.epochs - 1
        if last and not self.cfg.train.val:
            self.log.info("--no-val: validating the final epoch only; best.pt will be these weights")
        return last

    def _validate(self, final: bool = False) -> dict[str, Any]:
        """Metrics of the EMA (or model) weights on the val split, and their loss; ``final``: the run's last, whose
        curves and confusion matrices go into the run folder (``outputs.plot_dir``)."""
        metrics = evaluate(self._eval_model(), self.val_loader, self.accelerator, self.data_cfg.names,
                           plot_dir=self.outputs.plot_dir(final), batch_to_device=self.val_to_device,
                           loss_items=self.task.loss_items)
        losses = dict(zip((f"{n}_loss" for n in self.task.loss_names), metrics.pop("losses")))
        self.log.info(
            f"val epoch {self.state.epoch + 1}: mAP50 {metrics['mAP50']:.4f} mAP50-95 {metrics['mAP50-95']:.4f} "
            f"P {metrics['precision']:.4f} R {metrics['recall']:.4f} loss "
            f"{' '.join(f'{k} {v:.3f}' for k, v in zip(self.task.loss_names, losses.values()))} "
            f"({metrics['images']} images)"
        )
        self.log.metrics({**metrics, **losses}, self.state.step)  # the epoch's summary; trackers: val/box_loss, ...
        self.outputs.validated(metrics, losses, final)
        self._validated_at = self.state.step
        self._val_losses = losses  # for on_checkpoint (not in metrics.json, which `val` reproduces)
        # which labels scored it, as `val` records it (after the trackers and results.csv, which take numbers)
        metrics["ground_truth"] = ground_truth(self.data_cfg, "val")
        return metrics

    def _save(self, metrics: dict[str, Any], weights: bool = True) -> None:
        """Checkpoint (collective) and, at epoch ends, the portable weights (gathered, written once)."""
        acc, state = self.accelerator, self.state
        # a validation of these weights (not the last one's metrics, which a mid-epoch stop saves again)
        improved = bool(metrics) and self._validated_at == state.step and metrics["fitness"] > state.best_fitness
        if improved:
            state.best_fitness = metrics["fitness"]
        eval_model = self._eval_model()  # syncs BatchNorm statistics and gathers the EMA (collective)
        ema = eval_model.state_dict() if self.ema is not None else None
        path = self.checkpointer.save(state.step, state.to_json(), ema)  # collective (and the strategy's gathers)
        if weights and is_writer(acc):
            meta = {**self.run_meta, "step": state.step, "epoch": state.epoch, "metrics": plain_meta(metrics),
                    "ema": self.ema is not None}
            write_weights(self.out / "weights" / "last.pt", eval_model.state_dict(), meta)
            if improved:  # validated epochs only (with --no-val the final epoch is validated)
                write_weights(self.out / "weights" / "best.pt", eval_model.state_dict(), meta)
        acc.wait_for_everyone()
        # a validation of these weights (and its losses: box_loss, cls_loss, dfl_loss), else nothing
        fresh = {**metrics, **self._val_losses} if metrics and self._validated_at == state.step else {}
        for cb in self.callbacks:  # a callback may define only some events
            hook = getattr(cb, "on_checkpoint", None)
            if hook is not None:
                hook(path, state, fresh)
