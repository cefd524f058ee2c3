"""The scaling benchmark (``yolofuse-scale bench``), shipped with the package: it needs no checkout.

One concern per module, in the order a sweep uses them:

- ``sweep``: the command line and the sweep itself (plan, measure, ratios, link fit, projection,
  report, plots); its docstring is ``bench --help``'s, with the results.json schema.
- ``plan``: which runs a sweep makes (:class:`~yolofuse_scale.bench.plan.RunSpec`) and their train flags.
- ``launch``: launching ``-m yolofuse_scale train`` under python, torchrun, accelerate or a user's
  prefix, with its environment and a timeout that stops the whole process tree.
- ``no_sync``: the program the no-sync baseline runs launch: the train flags, gradients never synchronised.
- ``measure``: one run's numbers from its ``train_log.jsonl`` and ``metrics.json``, medians over
  repeats, efficiency and the ratios between runs.
- ``collectives``: all-reduce timings on the launched ranks and the link fitted to them.
- ``projection``: the alpha-beta ring model and the sweep's projection to device counts not present.
- ``environment``: the record of where and with what a number was measured.
- ``report`` and ``plots``: ``report.md`` and the PNGs, from ``results.json`` alone.

A checkout's ``benchmarks/`` keeps the scripts that need more than the package (other trainers'
code, committed results); they import ``launch``, ``measure`` and ``environment`` from here, and
nothing here imports them.
"""
