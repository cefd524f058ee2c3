"""The suite's own scheduling (tests/conftest.py): under ``-n 2 --dist loadgroup`` (``make test``, CI) each test
module runs on one worker, and the groups are handed out heaviest first (tests/durations.json).

Why a test: pytest 9.2 silently broke pytest-xdist's own ``loadgroup`` (it writes the group into a test-id attribute
pytest no longer reads), so every test became a work unit of its own, module-scoped fixtures (three 2-node jobs, a
finished training) were made on both workers, and CI's suite took 15-16 minutes instead of 11-12 (measured on
fresh clones). This catches the next such break.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ENV, ROOT

pytestmark = pytest.mark.slow  # a pytest session with two xdist workers (~10 s; ~30 s on a 2-core Xeon in CI)

MODULES = ["tests/test_sampler.py", "tests/test_layers.py", "tests/test_config.py", "tests/test_ema.py"]

WHERE = """
import os
def pytest_runtest_setup(item):
    with open(os.environ["WHERE_LOG"], "a") as fh:
        fh.write(os.environ.get("PYTEST_XDIST_WORKER", "-") + " " + item.nodeid + "\\n")
"""


def test_each_module_runs_on_one_worker_and_the_heaviest_group_goes_first(tmp_path):
    (tmp_path / "where_plugin.py").write_text(WHERE)
    log = tmp_path / "where.log"
    env = {**ENV, "WHERE_LOG": str(log), "PYTHONPATH": os.pathsep.join([str(tmp_path), ENV["PYTHONPATH"]])}
    proc = subprocess.run([sys.executable, "-m", "pytest", *MODULES, "-q", "-n", "2", "--dist", "loadgroup",
                           "-p", "where_plugin", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    workers: dict[str, set[str]] = {}
    for line in log.read_text().splitlines():
        worker, nodeid = line.split(" ", 1)
        workers.setdefault(nodeid.split("::")[0], set()).add(worker)
    assert sorted(workers) == sorted(MODULES)
    assert all(len(w) == 1 for w in workers.values()), f"a module ran on two workers: {workers}"
    assert len(set().union(*workers.values())) == 2, "both workers had work"

    # The collection order the workers are handed: modules by their recorded seconds, heaviest first.
    listed = subprocess.run([sys.executable, "-m", "pytest", *reversed(MODULES), "-q", "--collect-only",
                             "-p", "no:cacheprovider"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    order = list(dict.fromkeys(line.split("::")[0] for line in listed.stdout.splitlines() if "::" in line))
    seconds = json.loads((ROOT / "tests" / "durations.json").read_text())
    recorded = {m: seconds[m.removeprefix("tests/").removesuffix(".py")] for m in MODULES}  # all four recorded
    assert len(set(recorded.values())) > 1, "the modules' recorded seconds leave nothing to order"
    assert order == sorted(MODULES, key=lambda m: (-recorded[m], m)), (order, recorded)  # ties: by name
