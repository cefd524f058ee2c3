"""The loop's events told to Ray, from inside each Ray Train worker: an ``engine.callbacks.Callback``.

- **Every checkpoint is reported to Ray Train** (``ray.train.report``), once it is complete on every rank. The
  checkpoint folder already lies in Ray's experiment folder (the run folder is that folder: ``driver.py``), so
  it is reported as it is (``CheckpointUploadMode.NO_UPLOAD``: nothing copied) by rank 0, with the loop position
  and, at a validated epoch end, the validation's scalar metrics (mAP50, mAP50-95, precision, recall, fitness)
  and losses (``val_loss``: their sum; ``val_box_loss``, ...): the per-epoch metric a Tune scheduler reads.
  ``ray.train.report`` is a barrier of all workers, and every rank passes here the same number of times
  (``on_checkpoint`` follows the collective save).
- **Under Tune** (``validated_only``) only validated epoch ends are reported: Tune refuses a result without the
  scheduler's metric, and a restart resumes from the folder's newest checkpoint anyway (``worker.py``).
- **This launch took the folder**: at the first epoch start (after the resume was accepted and the folder
  claimed) rank 0 records it in the cluster's key-value store under the launch's id, so that a restarted worker
  group of the same launch continues the run (``--resume auto``) instead of starting it again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yolofuse_scale.engine.callbacks import Callback

#: validation metrics reported with an epoch end's checkpoint (scalars; per-class tables stay in metrics.json)
REPORTED_METRICS = ("mAP50", "mAP50-95", "precision", "recall", "fitness")
_KV_NAMESPACE = "yolofuse_scale"


def claimed_key(launch_id: str) -> bytes:
    return f"launch/{launch_id}/claimed".encode()


def launch_claimed(launch_id: str) -> bool:
    """Whether an earlier worker group of this launch took the run folder (so this one is a restart)."""
    from ray.experimental import internal_kv

    return internal_kv._internal_kv_exists(claimed_key(launch_id), namespace=_KV_NAMESPACE)


class RayReporter(Callback):
    """Reports checkpoints to Ray Train and marks the launch's claim (module docstring); on every rank."""

    def __init__(self, launch_id: str, validated_only: bool = False):
        import ray.train

        self.launch_id, self.validated_only = launch_id, validated_only
        self.rank = ray.train.get_context().get_world_rank()
        self._claimed = False

    def on_epoch_start(self, epoch: int) -> None:
        if self._claimed:
            return
        self._claimed = True
        if self.rank == 0:
            from ray.experimental import internal_kv

            internal_kv._internal_kv_put(claimed_key(self.launch_id), b"1", namespace=_KV_NAMESPACE)

    def on_checkpoint(self, path: Path, state: Any, metrics: dict[str, Any]) -> None:
        import ray.train

        if self.validated_only and not metrics:
            return
        record = {"step": state.step, "epoch": state.epoch, "epoch_end": state.step_in_epoch == 0,
                  **{k: float(metrics[k]) for k in REPORTED_METRICS if k in metrics}}
        losses = {f"val_{k}": float(v) for k, v in metrics.items() if k.endswith("_loss")}
        if losses:  # the validation's loss, Ultralytics' val/box_loss + cls_loss + dfl_loss: lower is better
            record.update(losses, val_loss=sum(losses.values()))
        checkpoint = ray.train.Checkpoint.from_directory(str(path)) if self.rank == 0 else None
        ray.train.report(record, checkpoint=checkpoint, checkpoint_dir_name=f"checkpoints/{path.name}",
                         checkpoint_upload_mode=ray.train.CheckpointUploadMode.NO_UPLOAD)
