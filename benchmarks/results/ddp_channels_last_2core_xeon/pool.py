"""The README's pooled numbers: every sweep here that ran in rounds, grouped by image layout and all-reduce.

    python benchmarks/results/ddp_channels_last_2core_xeon/pool.py

Per group: the 1- and 2-process images/s over all repeats (median [min-max]), the 2-process run without
gradient synchronisation, and the efficiency two ways: of the medians, and per round (the 2-process repeat
over the 1-process repeat measured minutes before it, the estimate a drifting machine disturbs least).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _ips(run: dict | None) -> list[float]:
    return [rep["images_per_s"] for rep in (run or {}).get("repeats", []) if "error" not in rep]


def main() -> None:
    groups: dict[str, dict[str, list]] = {}
    for path in sorted(HERE.glob("*/results.json")):
        res = json.loads(path.read_text())
        if res["config"].get("order") != "rounds":
            continue
        flags = res["config"]["train_args"]
        key = ("nchw" if "no-channels-last" in flags else "channels-last") + " / " + ("gloo" if "gloo" in flags
                                                                                       else "shared memory")
        runs = {r["label"]: r for r in res["runs"]}
        one, two, free = (_ips(runs.get(label)) for label in ("weak_ddp_n1_b8", "weak_ddp_n2_b8",
                                                              "no_sync_ddp_n2_b8"))
        g = groups.setdefault(key, {"folders": [], "one": [], "two": [], "free": [], "eff": [], "eff_free": []})
        g["folders"].append(path.parent.name)
        g["one"] += one
        g["two"] += two
        g["free"] += free
        g["eff"] += [b / 2 / a for a, b in zip(one, two, strict=False)]
        g["eff_free"] += [b / 2 / a for a, b in zip(one, free, strict=False)]

    def spread(v: list[float]) -> str:
        return f"{statistics.median(v):.3f} [{min(v):.3f}-{max(v):.3f}] n={len(v)}" if v else "-"

    for key, g in sorted(groups.items()):
        print(f"{key}: {', '.join(g['folders'])}")
        print(f"  1 process img/s      {spread(g['one'])}")
        print(f"  2 processes img/s    {spread(g['two'])}")
        print(f"  2, no sync img/s     {spread(g['free'])}")
        print(f"  efficiency of medians {statistics.median(g['two']) / 2 / statistics.median(g['one']):.3f}, "
              f"no sync {statistics.median(g['free']) / 2 / statistics.median(g['one']):.3f}")
        print(f"  efficiency per round {spread(g['eff'])}; no sync {spread(g['eff_free'])}")


if __name__ == "__main__":
    main()
