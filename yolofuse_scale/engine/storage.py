"""Which processes write the run's files: one per job (shared storage) or one per node (node-local).

With ``--output-dir`` on storage every node sees (NFS, Lustre, a cloud bucket mount) the global main
process writes each file once. With ``--save-on-each-node`` the output directory is taken to be
node-local (a scratch disk): each node's local main process writes its own copy of the logs,
checkpoints, weights and (when no ``--data`` is given) the synthetic dataset, so every node can
resume from its own disk. Accelerate's ``ProjectConfiguration(save_on_each_node=...)`` makes its
``save_state`` follow the same rule, and DeepSpeed is told through its ``use_node_local_storage``
setting (see ``strategy.deepspeed_config``).

Every file the training run writes asks these functions; only the data caches decide otherwise (the
scan runs on the main process and is broadcast; the pair cache is built by whoever takes its lock).
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from accelerate import Accelerator


def node_local(accelerator: Accelerator) -> bool:
    """Whether each node keeps its own copy of the run's files (``--save-on-each-node``)."""
    return accelerator.project_configuration.save_on_each_node


def is_writer(accelerator: Accelerator) -> bool:
    """Whether this process writes the run's files: the job's main process, or each node's with node-local storage."""
    return accelerator.is_local_main_process if node_local(accelerator) else accelerator.is_main_process


def writer_first(accelerator: Accelerator) -> AbstractContextManager:
    """A block the writer of this process's storage runs before the other processes that read it (a barrier)."""
    return accelerator.local_main_process_first() if node_local(accelerator) else accelerator.main_process_first()
