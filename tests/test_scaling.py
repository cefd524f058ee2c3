"""The scaling benchmark's machinery (``yolofuse_scale/bench/``): projection arithmetic against hand-computed
cases, the summary and efficiency arithmetic on made-up logs, and one tiny real run of 1 and 2 processes
through the checkout's ``python -m benchmarks.scaling`` (never a speed). The same benchmark from an
installed wheel: tests/test_packaging.py."""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys

import pytest

from benchmarks import scaling
from tests.helpers import ENV, ROOT, launch
from yolofuse_scale.bench import measure, sweep
from yolofuse_scale.bench import plan as sweep_plan
from yolofuse_scale.bench import projection as proj

LINK = proj.Link("test", alpha_s=1e-5, beta_bytes_per_s=1e9)


def test_ring_times_match_hand_computation():
    # all-reduce of 100 MB over 4 ranks in 2 calls: 2 * 2 * 3 hops * 10 us + 2 * 3/4 * 0.1 s
    assert proj.ring_time("all_reduce", 2, 100e6, 4, LINK) == pytest.approx(2 * 6 * 1e-5 + 0.15)
    # all-gather of 100 MB over 8 ranks in 1 call: 7 hops * 10 us + 7/8 * 0.1 s
    assert proj.ring_time("all_gather", 1, 100e6, 8, LINK) == pytest.approx(7e-5 + 0.0875)
    assert proj.ring_time("all_reduce", 5, 100e6, 1, LINK) == 0.0


def test_projection_overlap_and_node_boundary():
    comm = {"all_reduce": [1, 1e8]}  # 0.1 GB gradient, one call
    fast, slow = proj.Link("intra", 0.0, 1e10), proj.Link("inter", 0.0, 1e9)
    # inside a node: 2 * 7/8 * 0.1 GB / 10 GB/s = 17.5 ms, backward 10 ms fully hideable -> 7.5 ms exposed
    p = proj.project("ddp", 0.1, 0.03, 0.01, comm, 8, fast, slow, per_node=8, overlap=1.0)
    assert p["comm_s"] == pytest.approx(0.0175)
    assert p["exposed_s"] == pytest.approx(0.0075)
    assert p["efficiency"] == pytest.approx(0.1 / 0.1075)
    # 16 devices cross the node: the slower link sets the ring: 2 * 15/16 * 0.1 s = 187.5 ms
    p = proj.project("ddp", 0.1, 0.03, 0.01, comm, 16, fast, slow, per_node=8, overlap=0.0)
    assert p["exposed_s"] == pytest.approx(0.1875)
    # ZeRO-1/2's all-gather after the step cannot hide; FSDP's can hide behind forward + backward
    gather = {"all_gather": [1, 1e8]}
    z = proj.exposed_comm("zero2", gather, 2, fast, 0.03, 0.01, overlap=1.0)
    f = proj.exposed_comm("fsdp", gather, 2, fast, 0.03, 0.01, overlap=1.0)
    assert z["exposed_s"] == pytest.approx(0.005) and f["exposed_s"] == 0.0


def test_link_fit_recovers_alpha_beta_and_step_needed_inverts_projection():
    truth = proj.Link("t", 2e-5, 5e9)
    points = [(n, s, proj.ring_time("all_reduce", 1, s, n, truth)) for n in (2, 4) for s in (4e3, 1e6, 16e6)]
    fit = proj.fit_link(points)
    assert fit.alpha_s == pytest.approx(2e-5, rel=1e-6) and fit.beta_bytes_per_s == pytest.approx(5e9, rel=1e-6)
    comm = {"all_reduce": [3, 4e7]}
    t = proj.step_needed("ddp", 0.97, 0.3, 0.6, comm, 64, truth, truth, 8, 0.75)
    p = proj.project("ddp", t, 0.3 * t, 0.6 * t, comm, 64, truth, truth, 8, 0.75)
    assert p["efficiency"] == pytest.approx(0.97, abs=1e-6)
    assert math.isinf(proj.step_needed("zero2", 1.0, 0.3, 0.6, {"all_gather": [1, 1e8]}, 8, truth, truth, 8, 1.0))
    with pytest.raises(ValueError, match="expected INTRA"):
        proj.parse_topology("nvswitch+warp9")


def _log(step_s: float, n: int = 6) -> list[dict]:
    return [{"step": i + 1, "step_time_s": step_s * (3 if i == 0 else 1), "time_data_s": 0.1 * step_s,
             "time_forward_s": 0.3 * step_s, "time_backward_s": 0.5 * step_s, "time_optim_s": 0.1 * step_s,
             "comm": {"all_reduce": [2, 1000]}} for i in range(n)]


def test_summary_efficiency_and_overhead_arithmetic():
    s1 = measure.summarize_log(_log(0.5), warmup=1, images_per_step=8)
    assert s1["images_per_s"] == pytest.approx(16.0) and s1["steps_timed"] == 5  # warm-up step excluded
    assert s1["phases_s"]["backward"] == pytest.approx(0.25) and s1["comm"] == {"all_reduce": [2, 1000]}
    s2 = measure.summarize_log(_log(0.625), warmup=1, images_per_step=16)
    def entry(scaling: str, devices: int, repeat: dict) -> dict:  # a results.json run of one repeat
        return {"scaling": scaling, "strategy": "ddp", "devices": devices, "per_device_batch": 8,
                "repeats": [repeat], **measure.combine([repeat], devices)}

    one = entry("weak", 1, {**s1, "peak_memory": []})
    two = entry("weak", 2, {**s2, "peak_memory": [{"rss_bytes": 5}, {"rss_bytes": 7}]})
    nosync = entry("no_sync", 2, {**measure.summarize_log(_log(0.55), 1, 16), "peak_memory": []})
    measure.derive([one, two, nosync])
    assert two["efficiency"] == pytest.approx(25.6 / (2 * 16))  # 16 images / 0.625 s = 25.6 img/s
    assert two["overhead_vs_1_s"] == pytest.approx(0.125)
    assert two["exposed_comm_s"] == pytest.approx(0.075)
    assert two["peak_memory_max"] == {"rss_bytes": 7} and two["data_share"] == pytest.approx(0.1)


def test_plan_vary_and_bad_items():
    args = sweep.build_parser().parse_args(["--strategies", "ddp,zero2", "--devices", "2,1", "--scaling", "both",
                                              "--batch-size", "4", "--vary", "batch_size=8 precision=bf16 compile=on",
                                              "--no-sync-baseline"])
    labels = [s.label for s in sweep_plan.plan(args)]
    assert labels[:4] == ["weak_ddp_n1_b4", "weak_ddp_n2_b4", "weak_zero2_n1_b4", "weak_zero2_n2_b4"]
    assert "strong_zero2_n2_b4" in labels and "strong_zero2_n1_b8" in labels  # global batch 8 kept
    assert "no_sync_ddp_n2_b4" in labels and not any(lab.startswith("no_sync_zero2") for lab in labels)
    options = [s for s in sweep_plan.plan(args) if s.scaling == "option"]
    assert [(s.batch_size, s.extra) for s in options] == [(8, []), (4, ["--mixed-precision", "bf16"]),
                                                          (4, ["--compile"])]
    with pytest.raises(ValueError, match="NAME=V1"):
        sweep_plan.parse_vary("compile")


def test_the_package_never_imports_the_checkout_benchmarks():
    """The benchmark ships in the wheel: nothing under yolofuse_scale/ imports benchmarks/ (before, the CLI
    did, closing the circle cli -> benchmarks.scaling -> compare_ultralytics -> cli)."""
    for path in sorted((ROOT / "yolofuse_scale").rglob("*.py")):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {n for n in names if n.split(".")[0] == "benchmarks"}, path


def test_the_checkout_script_is_the_package_benchmark_plus_the_comparisons():
    """``python -m benchmarks.scaling`` takes every flag of ``yolofuse-scale bench`` and adds only the
    sections that need other trainers' code."""
    ours = {a.dest: a.default for a in sweep.build_parser()._actions}
    checkout = {a.dest: a.default for a in scaling.build_parser()._actions}
    assert checkout.items() >= ours.items() and set(checkout) - set(ours) == {"compare_ultralytics", "yolofuse"}


def test_repeats_run_in_rounds_unless_blocks_are_asked_for():
    """A drifting machine slows every configuration alike only if their repeats alternate (issue 23's DDP
    numbers on a 2-core Xeon VM: the same 1-process run measured 18.4 and 25.1 img/s minutes apart)."""
    from yolofuse_scale.bench.sweep import build_parser, measurement_order

    assert build_parser().parse_args([]).order == "rounds"
    assert measurement_order(3, 2, "rounds") == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]
    assert measurement_order(3, 2, "blocks") == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert sorted(measurement_order(4, 3, "rounds")) == sorted(measurement_order(4, 3, "blocks"))


@pytest.mark.slow
def test_tiny_real_run_writes_schema_report_and_plots(tmp_path):
    """1 and 2 real DDP processes through torchrun: the report's numbers come from the loop's own log."""
    out = tmp_path / "report"
    # In its own process with the suite's environment: the benchmark is a command, and the pytest process
    # carries state from earlier tests (imported engines, variables, thread settings) a user's run lacks.
    proc = subprocess.run([sys.executable, "-m", "benchmarks.scaling", "--strategies", "ddp", "--devices", "1,2",
                           "--model", "yolov8t", "--imgsz", "64", "--batch-size", "4", "--steps", "2", "--warmup",
                           "1", "--repeats", "1", "--threads", "1", "--workers", "0", "--project", "8,64",
                           "--topologies", "nvswitch+ib400", "--machine-label", "test box", "--out", str(out)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads((out / "results.json").read_text())
    failed = {r["label"]: r["error"] for r in res["runs"] if "error" in r}
    assert not failed, failed  # a failed run's own output, not a KeyError further down
    assert res["schema_version"] == 1 and res["environment"]["machine_label"] == "test box"
    assert {"torch", "accelerate", "deepspeed", "ultralytics"} <= set(res["environment"]["versions"])
    runs = {r["label"]: r for r in res["runs"]}
    two = runs["weak_ddp_n2_b4"]
    assert "error" not in two, two.get("error")
    assert two["global_batch"] == 8 and len(two["repeats"]) == 1 and two["repeats"][0]["steps_timed"] == 2
    one = runs["weak_ddp_n1_b4"]
    assert two["efficiency"] == pytest.approx(two["images_per_s"]["median"] / (2 * one["images_per_s"]["median"]))
    # DDP all-reduces every gradient once per step: the counted payload is the fp32 parameter bytes
    # (+ the 20-byte logged-loss reduction), measured through the comm hook on the real process group
    params = two["model_state_bytes_max"] // 3  # params + grads + SGD momentum, equal sizes
    assert two["comm"]["all_reduce"][1] == pytest.approx(params, rel=0.01)
    assert all(two["phases_s"][p] > 0 for p in measure.PHASES)
    assert two["peak_memory_max"]["rss_bytes"] > 50 * 2**20
    assert "error" not in res["link_fit"], res["link_fit"]["error"]
    assert res["link_fit"]["backend"] == "gloo" and res["link_fit"]["beta_bytes_per_s"] > 0  # clamped by the fit
    assert set(res["projection"]["topologies"]["nvswitch+ib400"]["ddp"][0]) >= {"efficiency", "step_needed_s"}
    # the machine's load, sampled before, around each run and after (the report's loaded-machine warning)
    assert res["load"]["cores_needed"] == 2 and set(res["load"]) >= {"before", "during", "after"}
    assert all(res["load"][w]["others_cores"] >= 0 for w in ("before", "during", "after"))
    assert all(rep["load"]["wall_s"] > 0 for r in res["runs"] for rep in r["repeats"])
    assert [rep["sequence"] for r in res["runs"] for rep in r["repeats"]] == [0, 1]  # the order they ran in
    report = (out / "report.md").read_text()
    for needle in ("## Weak scaling", "Where a weak-scaling step goes", "Projected weak-scaling efficiency",
                   "DDP weak-scaling efficiency at 2", "## Definitions", "test box", "## Read this first",
                   "**Too few timed steps**: 2 per run", "**Too few repeats**: 1 per configuration",
                   "### Does the model fit this machine?", "**What the projection means for your cluster**"):
        assert needle in report
    assert "warning: Too few timed steps" in proc.stderr
    assert all((out / f).stat().st_size > 1000 for f in ("throughput.png", "efficiency.png", "memory.png",
                                                          "breakdown.png"))
    assert not any(out.glob("runs/*/rep0/checkpoints"))  # raw logs kept, checkpoints dropped
    # no pictures: with --warmup 1 the three batch previews were drawn inside timed steps 2 and 3 (rank 0 only)
    kept = [f for d in out.glob("runs/*/rep0") for f in d.iterdir()]
    assert kept and not [f.name for f in kept if f.suffix in (".jpg", ".png")], sorted(f.name for f in kept)


@pytest.mark.slow
def test_the_no_sync_baseline_trains_without_gradient_communication(tiny_data, tmp_path):
    """``--no-sync-baseline``'s program (no user flag any more): the train flags, and no gradient all-reduce
    (2 DDP ranks; only the step's 20-byte reduction of the logged losses is left)."""
    out = tmp_path / "nosync"
    run = launch("torchrun", 2, ["-m", "yolofuse_scale.bench.no_sync", "--data", str(tiny_data), "--model", "yolov8t",
                                 "--imgsz", "64", "--batch-size", "4", "--workers", "0", "--epochs", "1",
                                 "--max-steps", "2", "--no-val", "--warmup-epochs", "0", "--measure-comm",
                                 "--output-dir", str(out)], out)
    assert "WARNING skip_grad_sync (benchmark): gradients are never synchronised" in run.output
    assert [r["step"] for r in run.log] == [1, 2]
    assert all(r["comm"]["all_reduce"][1] < 1000 for r in run.log), [r["comm"] for r in run.log]


def test_efficiency_per_round_pairs_each_repeat_with_its_rounds_baseline():
    """A machine that slows down in round 3: the ratio of medians pairs the baseline's fast window with a slow
    2-process one (0.667); within each round the two ran together (0.9, 0.9, 0.645: median 0.9). Only for a
    sweep that ran in rounds; a failed repeat drops its round."""
    def run(devices: int, ips: list[float]) -> dict:
        reps = [{"images_per_s": v, "step_s": 8 * devices / v, "phases_s": dict.fromkeys(measure.PHASES, 0.01),
                 "comm": {}, "peak_memory": []} for v in ips]
        return {"scaling": "weak", "strategy": "ddp", "devices": devices, "per_device_batch": 8, "repeats": reps,
                **measure.combine(reps, devices)}

    one, two = run(1, [10.0, 30.0, 31.0]), run(2, [18.0, 54.0, 40.0])
    measure.derive([one, two])
    assert two["efficiency"] == pytest.approx(40 / (2 * 30))
    rounds = two["efficiency_per_round"]
    assert rounds["median"] == pytest.approx(0.9) and rounds["rounds"] == 3
    assert (rounds["min"], rounds["max"]) == (pytest.approx(40 / 62), pytest.approx(0.9))
    assert "efficiency_per_round" not in one  # the baseline against itself says nothing

    blocks = [run(1, [10.0, 30.0, 31.0]), run(2, [18.0, 54.0, 40.0])]
    measure.derive(blocks, order="blocks")  # repeat k of each ran far apart: no pairing
    assert "efficiency_per_round" not in blocks[1]
    two["repeats"][1]["error"] = "killed"  # its round drops out; one round left is no spread
    measure.derive([one, two])
    assert two["efficiency_per_round"]["rounds"] == 2
    two["repeats"][2]["error"] = "killed"
    del two["efficiency_per_round"]
    measure.derive([one, two])
    assert "efficiency_per_round" not in two

    from yolofuse_scale.bench import report

    two["repeats"][1].pop("error"), two["repeats"][2].pop("error")
    measure.derive([one, two])
    lines = report._per_round_lines([one, two])
    assert "| ddp | 2 | 0.900 [0.645-0.900] | 3 | 0.667 |" in lines
    assert report._target_lines([one, two]) == [
        "- DDP weak-scaling efficiency at 2: 0.667, per round 0.900 [0.645-0.900] (target >= 0.90): NOT met"]
