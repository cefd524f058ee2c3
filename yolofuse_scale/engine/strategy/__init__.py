"""Every distributed nuance in one package: how the Accelerator is built and what it may wrap.

The training loop calls :func:`build_accelerator`, ``accelerator.prepare`` and :func:`unwrap`, and
nothing else distributed. Which strategy runs is decided by the launcher and its config file
(``accelerate launch --config_file configs/accelerate/*.yaml``, ``torchrun``, ``--deepspeed``), never
by branches in the loop. One concern per module, each saying in its docstring what it decides and why:

- ``launch``: what the launcher asked for (``strategy_name``, ``launched``, ``launched_world_size``),
  flags that contradict the accelerate config, launches whose ranks would train alone, and the
  process group of elastic restarts and of DeepSpeed without a launcher.
- ``accelerator``: ``build_accelerator`` (CPU path, backend and timeout, accumulation, DDP settings),
  ``prepare_model``, ``unwrap``, ``clip_grad_norm``.
- ``deepspeed``: the DeepSpeed JSON of a run (packaged configs included) and the loop's values
  written into it.
- ``cpu_comm_op``: DeepSpeed's CPU communication op, taken prebuilt (``make install``) or its compile
  announced before it starts.
- ``fsdp``: FSDP2 through Accelerate's plugin, its wrap units (the model's: ``model/units.py``), and the
  CPU path into it.
- ``sharded``: FSDP2 DTensors and ZeRO-3 partitions (local part, full tensor, full state dict).
- ``zero_state``: ZeRO-1/2 optimizer state saved whole and re-partitioned at another world size.
- ``memory_format``: convolution weights channels-last where the images are (one process, DDP), and their
  state saved contiguous and loaded back in that layout.
- ``batchnorm``: running statistics made equal on every rank before validation and saving; SyncBN.
- ``activation_checkpoint``: recomputed blocks whose BatchNorm statistics stay exact.
- ``resume``: which checkpoints this run can resume, refused before anything is loaded.

Memory accounting (``model_state_bytes``) and the precision probe (``PrecisionProbe``,
``effective_precision``) are measurements and live in ``engine/perf.py``. Nothing is re-exported here:
a caller imports a name from the module that defines it (``from yolofuse_scale.engine.strategy.accelerator
import build_accelerator``), so the module a name lives in is the one the import names.
"""
