"""What every Ray worker process of our jobs runs first (Ray's ``worker_process_setup_hook``; ``session.py``).

**Ray Train's placement-group cleaner, without a dashboard.** Ray Train V2 starts, for every run, a detached
``PlacementGroupCleaner`` actor that watches the run's controller and removes the run's placement group (the
workers' CPUs and GPUs) if the controller dies without doing it itself, which is how a Tune trial ends when a
scheduler stops it (Tune ends the trial's actor and the controller with it). The cleaner asks whether the
controller lives through Ray's state API, which is served by the dashboard, and ``ray[train,tune]`` installs no
dashboard (``ray[default]`` does). Without it every check fails, the cleaner warns every second and never
removes anything: the stopped trial's placement group keeps its CPUs for the rest of the job (seen here: the
next trial's workers waited for them until Ray's worker-group start timed out, forever), and the cleaner
process stays too. So in the worker process that imports the cleaner's module its ``is_actor_alive`` is
replaced by a look-up in the GCS actor table (``ray._private.state.actors``), which needs no dashboard: the
cleaner then sees the controller die, removes the placement group and exits, as it does on a cluster with a
dashboard. The replacement is installed by an import hook, so no other process pays for importing Ray Train.

**Quieter logs**: Accelerate's INFO lines ("Saving current state to ..."), which Ray's logging set-up shows and
a torchrun rank does not.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys

CLEANER_MODULE = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


def actor_alive_in_gcs(actor_id: str, timeout: float | None = None) -> bool:
    """Whether the actor ``actor_id`` (hex) lives, from the GCS actor table (no dashboard needed)."""
    import ray._private.state

    info = ray._private.state.actors(actor_id=actor_id)
    return bool(info) and str(info.get("State")) != "DEAD"


class _PatchCleaner(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Loads the cleaner's module as usual, then replaces its ``is_actor_alive`` (module docstring)."""

    def find_spec(self, fullname, path, target=None):
        if fullname != CLEANER_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        if hasattr(module, "is_actor_alive"):
            module.is_actor_alive = actor_alive_in_gcs


def setup_worker() -> None:
    """Ray's ``worker_process_setup_hook`` for our jobs (module docstring)."""
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    if CLEANER_MODULE not in sys.modules and not any(isinstance(f, _PatchCleaner) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchCleaner())
