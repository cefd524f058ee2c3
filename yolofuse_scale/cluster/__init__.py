"""Ray: the one training loop on Ray Train workers (``train --engine ray``) and sweeps of it on Ray Tune (``tune``).

Nothing here changes what a step computes: each Ray Train worker runs the project's ``Trainer`` as one rank of
the job, in the process group Ray sets up (a 2-worker run ends with the weights of a 2-process torchrun run, bit
for bit). One concern per module; Ray itself is imported only once a run or a sweep starts:

- ``settings``: ``--engine`` and the ``--ray-*`` flags (workers or an elastic range, resources, restarts, cluster).
- ``rules``: what a Ray launch may ask for, refused in the driver before Ray starts (elastic world sizes).
- ``session``: the connection (an existing cluster or a local one), offline, and what every worker inherits.
- ``worker_setup``: what every Ray worker process runs first (Ray Train's cleaner without a dashboard).
- ``driver``: one run: the run folder as Ray's experiment folder, the ``TorchTrainer``, the result.
- ``worker``: what each Ray Train worker runs: where the run resumes, the Trainer, bad input vs failures.
- ``report``: the loop's checkpoints and per-epoch metrics reported to Ray (a Trainer callback).
- ``space``: the sweep file (``tune --space``), read and checked.
- ``tune``: the sweep: Tune trials, each a Ray Train run; schedulers; results table and best config.
"""
