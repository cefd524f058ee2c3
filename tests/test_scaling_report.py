"""The scaling report read at a glance (``yolofuse_scale/bench/{report,plots,checks,load}.py``): integer device
ticks, a projection that shows and says what it is worth, memory on a scale where every bar shows, warnings
on too few steps or repeats and on a loaded machine, and ``--render-only``. Everything is rendered from the
committed sweep's ``results.json`` (or one derived from it): no training runs here."""

from __future__ import annotations

import copy
import json

import pytest

from tests.helpers import ROOT
from yolofuse_scale.bench import checks, load, measure, plots, projection, report, sweep
from yolofuse_scale.cli import main

COMMITTED = ROOT / "benchmarks" / "results" / "scaling_2core_cpu" / "results.json"
MiB = 2**20


@pytest.fixture(autouse=True)
def _close_figures():
    """The figures tests read back stay open in pyplot until closed."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads(COMMITTED.read_text())


def _args(**flags) -> object:
    argv = [x for k, v in flags.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    return sweep.build_parser().parse_args(argv)


def _idle_load(cores: int = 2, needed: int = 2) -> dict:
    quiet = {"wall_s": 2.0, "others_cores": 0.01, "steal_share": 0.0, "loadavg": [0.05, 0.1, 0.1]}
    return {"cores": cores, "threads": 1, "gpu": False, "per_rank": 1, "cores_needed": needed,
            "before": dict(quiet), "during": dict(quiet), "after": dict(quiet)}


def tiny(committed: dict, *, efficiency_at_2: float = 0.409, steps: int = 2, repeats: int = 1,
         model_state: int = 9 * MiB, rss: int = int(1.1 * 2**30)) -> dict:
    """The issue's sweep: DDP at 1 and 2 processes, ``steps`` timed steps, ``repeats`` identical repeats, the
    measured efficiency at 2 given, a small model beside a large process; projection computed by the package."""
    res = copy.deepcopy(committed)
    runs = {r["label"]: r for r in res["runs"]}
    one, two = runs["weak_ddp_n1_b8"], runs["weak_ddp_n2_b8"]
    ips1 = one["images_per_s"]["median"]
    for run, ips in ((one, ips1), (two, efficiency_at_2 * 2 * ips1)):
        step = run["global_batch"] / ips
        rep = {**run["repeats"][0], "steps_timed": steps, "images_per_s": ips, "step_s": step,
               "model_state_bytes": [{"total": model_state}], "peak_memory": [{"rss_bytes": rss}]}
        run["repeats"] = [dict(rep) for _ in range(repeats)]
        run.update(measure.combine(run["repeats"], run["devices"]))
    res["runs"] = [one, two]
    measure.derive(res["runs"])
    args = _args(strategies="ddp", devices="1,2", steps=steps, warmup=1, repeats=repeats, project="8,64",
                 topologies="nvswitch+ib400", threads=1, batch_size=8, model="yolov8n", imgsz=160)
    res["config"] = vars(args)
    res["projection"] = projection.projections(res["runs"], args, res["link_fit"])
    res["load"] = _idle_load()
    return res


def _line(ax, label: str):
    return next(line for line in ax.get_lines() if line.get_label() == label)


# ------------------------------------------------------------------------------------------ plots
def test_device_axes_are_marked_at_the_device_counts_only(committed):
    assert plots.device_ticks([2, 1, 2], [8, 256]) == [1, 2, 8, 256]
    figs = plots.figures(committed)
    for name, expected in (("throughput.png", [1, 2]), ("efficiency.png", [1, 2, 8, 16, 64, 256])):
        ax = figs[name].axes[0]
        assert [float(t) for t in ax.get_xticks()] == expected, name
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(n) for n in expected], name
        assert list(ax.xaxis.get_minorticklocs()) == [], name  # no 1.2, 1.4 or log-minor marks between
        lo, hi = ax.get_xlim()
        assert lo < expected[0] and hi > expected[-1]  # every marked point inside the axes


def test_the_projection_is_drawn_above_in_its_own_style_and_readable_on_the_one_line(committed):
    ax = plots.figures(committed)["efficiency.png"].axes[0]
    measured = _line(ax, "ddp measured")
    projected = {s: _line(ax, f"{s} projected" + (" (upper bound)" if s in ("ddp", "fsdp", "zero3") else ""))
                 for s in ("ddp", "fsdp", "zero1", "zero2", "zero3")}
    for line in projected.values():
        assert line.get_zorder() > measured.get_zorder()
        assert line.get_linestyle() == "--" and measured.get_linestyle() == "-"
        assert line.get_marker() != measured.get_marker() and line.get_markerfacecolor() == "white"
    # ddp, fsdp and zero3 all project 1.000 at every count: their markers stand side by side, not on each other
    xs = [tuple(projected[s].get_xdata()) for s in ("ddp", "fsdp", "zero3")]
    assert all(y == pytest.approx(1.0, abs=1e-3) for s in ("ddp", "fsdp", "zero3") for y in projected[s].get_ydata())
    assert len(set(xs)) == 3
    text = "\n".join(t.get_text() for t in ax.texts)
    assert "ddp: <=1.000" in text and "zero1: 0.984" in text and "upper bound" in text


@pytest.mark.parametrize(("state", "rss"), [(9 * MiB, int(1.1 * 2**30)), (300 * 2**10, 60 * 2**30)],
                         ids=["issue-9MiB-beside-1.1GiB", "300KiB-beside-60GiB"])
def test_memory_every_bar_shows_and_says_its_value(committed, state, rss):
    res = tiny(committed, model_state=state, rss=rss)
    res["runs"][1]["model_state_bytes_max"] = 500 * MiB  # and one bar 55x another within the same panel
    fig = plots.figures(res)["memory.png"]
    panels = [ax for ax in fig.axes if ax.patches]
    assert len(panels) == 2  # peak and model state: each on its own scale
    for ax in panels:
        ylo, yhi = ax.get_ylim()
        for bar in ax.patches:
            x, top = bar.get_x() + bar.get_width() / 2, bar.get_y() + bar.get_height()
            bottom = max(bar.get_y(), ylo)
            frac = ax.transAxes.inverted().transform(ax.transData.transform([(x, top), (x, bottom)]))
            assert frac[0][1] - frac[1][1] > 0.05, (ax.get_title(), bar.get_height())
    labels = [t.get_text() for ax in panels for t in ax.texts]
    assert fmt(state) in labels and "500.0 MiB" in labels and fmt(rss) in labels
    assert plots.value_scale([9, 500]) == "log" and plots.value_scale([1100, 1300]) == "linear"
    for r in res["runs"]:  # on GPUs the peak panel is CUDA's allocated memory, not the process RSS
        r["peak_memory_max"] = {"cuda_max_allocated_bytes": 3 * 2**30, "rss_bytes": rss}
    titles = [ax.get_title() for ax in plots.figures(res)["memory.png"].axes]
    assert titles[0] == "peak CUDA memory allocated (largest rank)"


def fmt(n: int) -> str:
    return report.fmt_bytes(n)


# ------------------------------------------------------------------------------------------ projection
def test_fit_check_says_what_a_projection_is_worth():
    link_fit = {"alpha_s": 0.0, "beta_bytes_per_s": 1e9}
    # one all-reduce of 50 MB over 2 ranks: 50 ms at overlap 0; backward 40 ms hides 40 ms of it at overlap 1
    inputs = {"step_1_s": 0.2, "forward_s": 0.05, "backward_s": 0.04, "comm": {"all_reduce": [1, 5e7]}}

    def check(step_2_s: float, spread: float = 0.0) -> dict:
        ips1, ips2 = 8 / 0.2, 16 / step_2_s
        base = {"devices": 1, "images_per_s": {"median": ips1, "min": ips1, "max": ips1}}
        run = {"devices": 2, "step_s": step_2_s,
               "images_per_s": {"median": ips2, "min": ips2 * (1 - spread), "max": ips2 * (1 + spread)}}
        link = projection.Link("m", 0.0, 1e9)
        p = projection.project("ddp", n=2, intra=link, inter=link, per_node=2, overlap=0.75,
                               **{k: inputs[k] for k in ("step_1_s", "forward_s", "backward_s", "comm")})
        measured = ips2 / (2 * ips1)
        entry = {"strategy": "ddp", "devices": 2, "projected_efficiency": p["efficiency"],
                 "measured_efficiency": measured, "error": p["efficiency"] - measured,
                 "implied_overlap": projection._implied_overlap("ddp", inputs, run, link)}
        return {**entry, **projection.fit_check(entry, inputs, run, base, link_fit, 0.75)}

    c = check(0.2 + 0.03)  # grew 30 ms: between 10 (overlap 1) and 50 (overlap 0)
    assert c["verdict"] == "fits" and c["implied_overlap"] == pytest.approx(0.5, abs=1e-3)
    assert c["exposed_no_overlap_s"] == pytest.approx(0.05) and c["exposed_full_overlap_s"] == pytest.approx(0.01)
    c = check(0.2 + 0.2)  # grew 200 ms, the model can explain 50 at most
    assert c["implied_overlap"] is None and c["error"] > 0 and c["verdict"] == "upper_bound"
    assert c["overhead_s"] == pytest.approx(0.2)
    assert check(0.2 + 0.002)["verdict"] == "lower_bound"  # grew 2 ms, less than the model's 10 at best
    # grew 52 ms (no overlap fits): measured 0.794, projected 0.909, inside a 15% spread of the repeats
    assert check(0.2 + 0.052, spread=0.15)["verdict"] == "fits_spread"
    assert check(0.2 + 0.052, spread=0.10)["verdict"] == "upper_bound"


def test_a_projection_that_does_not_fit_is_an_upper_bound_not_a_finding(committed):
    """The issue: 1.000 at 8-256 devices next to "error +0.591, none in [0,1]" read as a finding."""
    res = tiny(committed)
    entry = res["projection"]["measured_vs_projected"][0]
    assert entry["implied_overlap"] is None and entry["error"] == pytest.approx(0.591, abs=2e-3)
    assert entry["verdict"] == "upper_bound"
    text = report.report(res)
    assert "| ddp | ≤ 1.000 | ≤ 1.000 |" in text and "| ddp | 1.000 |" not in text
    assert "**ddp at 2: the model does not fit.**" in text and "upper bounds (≤), not findings" in text
    assert "| ddp | 2 |" in text and "| -0.591 | none in [0,1] | does not fit: projection is an upper bound |" in text
    assert "not a finding that N devices cost nothing" in text
    # the one sentence on what the gap means for the reader's cluster, in the opening section
    first = text.split("## Read this first")[1].split("\n## ")[0]
    assert ("**What the projection means for your cluster**: at 2 devices the measured efficiency is below the "
            "projection by 0.591 (ddp): more devices cost more time here than the communication the model counts, "
            "even with none of it hidden, so something else costs time") in first
    assert "expect at most the projected efficiency" in first and "`yolofuse-scale bench`" in first
    assert "on a CPU: the collectives' reductions competing with compute" in first
    res["environment"]["gpus"] = ["NVIDIA H100"]  # on GPUs the likely costs are others
    first = report.read_first(res)[-2]
    assert "BatchNorm and loss synchronisation" in first and "on a CPU" not in first


def test_a_projection_that_fits_is_not_marked(committed):
    text = report.report(committed)
    assert "**zero1 at 2: the model fits** at an overlap of 0.02" in text
    assert "| zero1 | 1.000 | 0.998 | 0.995 | 0.984 |" in text and "| ddp | ≤ 1.000 |" in text
    assert "| ddp | ≥ 0.5 | ≥ 3.8 |" in text  # the step time needed is at least what a model that fits too little says
    res = tiny(committed, efficiency_at_2=0.9999)  # measured as projected: nothing to warn the cluster about
    assert "the model reproduces this machine's multi-device measurement (ddp)" in report.report(res)


# ------------------------------------------------------------------------------------------ warnings
def test_warnings_on_too_few_steps_and_repeats(committed):
    w = checks.warnings(tiny(committed, steps=2, repeats=1))
    assert w[0].startswith("**Too few timed steps**: 2 per run after 1 warm-up step(s) (fewer than 10)")
    assert w[1].startswith("**Too few repeats**: 1 per configuration (fewer than 3): there is no spread")
    w = checks.warnings(tiny(committed, steps=10, repeats=2))
    assert not any("timed steps" in x for x in w) and "the median of two" in w[0]
    clean = tiny(committed, steps=20, repeats=3)
    assert checks.warnings(clean) == []
    assert "- No warnings: >= 10 timed steps and >= 3 repeats" in report.report(clean)
    # the committed sweep: 10 steps, 2 repeats, no load record (it predates the check)
    w = checks.warnings(committed)
    assert [x.split("**")[1] for x in w] == ["Too few repeats", "Machine load not recorded"]


def test_warning_on_a_wide_spread_over_repeats(committed):
    res = tiny(committed, steps=20, repeats=3)
    ips = res["runs"][1]["images_per_s"]
    ips["max"] = ips["median"] * 1.08
    assert checks.warnings(res) == [f"**Wide spread over repeats** (max - min above 5% of the median): "
                                    f"{res['runs'][1]['label']} (8%): differences smaller than that spread are noise."]


def test_warnings_on_a_loaded_machine(committed):
    res = tiny(committed, steps=20, repeats=3)
    res["load"]["during"]["others_cores"] = 0.5  # half a core of 2, all of which the 2 processes need
    w = checks.warnings(res)
    assert len(w) == 1 and w[0].startswith("**Loaded machine**: other processes took more than 10% of the cores "
                                           "the runs need (0.20 of 2, beyond the 0 the runs leave free)")
    assert "other processes used 0.50 cores during the runs." in w[0]
    res["load"].update(cores=16)  # the same use on a 16-core box: it runs on the 14 cores the runs leave free
    assert checks.warnings(res) == []
    res["load"].update(cores=2)
    res["load"]["during"]["others_cores"] = 0.0
    res["load"]["before"]["loadavg"] = [1.6, 1.0, 0.5]  # something was running before the sweep began
    assert "the 1-minute load average was 1.60 before them." in checks.warnings(res)[0]
    res["load"]["before"]["loadavg"] = [0.1, 0.1, 0.1]
    res["runs"][1]["repeats"][2]["load"] = {"wall_s": 9.0, "others_cores": 0.9, "steal_share": 0.0}
    assert "weak_ddp_n2_b8 rep2 (0.90)" in checks.warnings(res)[0]
    res["runs"][1]["repeats"][2].pop("load")
    res["load"]["during"]["steal_share"] = 0.12
    assert checks.warnings(res) == ["**CPU steal**: the hypervisor gave 12% during of this VM's CPU time to other "
                                    "guests (threshold 5%): the VM's cores were not all its own."]
    res["load"]["during"]["steal_share"] = 0.0
    res["load"].update(cores_needed=4, per_rank=2)
    assert checks.warnings(res)[0].startswith("**Oversubscribed**: the largest run keeps 4 cores busy (2 per device), "
                                              "the benchmark may use 2")


def test_load_arithmetic_and_a_real_sample():
    stat = dict.fromkeys(load.FIELDS, 0)
    a = {"t": 10.0, "loadavg": [0.0] * 3, "stat": dict(stat), "clk_tck": 100, "own_cpu_s": 5.0}
    b = {"t": 12.0, "loadavg": [1.0] * 3, "stat": {**stat, "user": 300, "system": 100, "idle": 80, "steal": 20},
         "clk_tck": 100, "own_cpu_s": 6.0}
    u = load.usage(a, b)  # 4 CPU s busy over 2 s, 1 of them ours: others ran 1.5 cores; 20 of 500 jiffies stolen
    assert u == {"wall_s": 2.0, "loadavg": [1.0] * 3, "others_cores": 1.5, "steal_share": 0.04}
    assert load.contention(1.5, needed=2, cores=2) == 1.5 and load.contention(1.5, needed=2, cores=3) == 0.5
    assert load.cores_needed(2, threads=1, gpu=False, cores=8) == 2
    assert load.cores_needed(2, threads=0, gpu=False, cores=8) == 16  # torch's default: every core per process
    assert load.cores_needed(8, threads=0, gpu=True, cores=64) == 8
    real = load.usage(load.sample(), load.sample())
    assert real["others_cores"] >= 0 and 0 <= real["steal_share"] <= 1 and len(real["loadavg"]) == 3


# ------------------------------------------------------------------------------------------ --render-only
def test_render_only_rewrites_report_and_plots_from_results_json(committed, tmp_path, capsys):
    src = tmp_path / "sweep" / "results.json"
    src.parent.mkdir()
    src.write_text(COMMITTED.read_text())
    assert main(["bench", "--render-only", str(src)]) == 0
    out, err = capsys.readouterr()
    assert (src.parent / "report.md").read_text() == report.report(committed)
    assert out == report.report(committed) + "\n"  # and on stdout, as a sweep prints it
    assert {p.name for p in src.parent.glob("*.png")} == {"throughput.png", "efficiency.png", "memory.png",
                                                          "breakdown.png"}
    assert "warning: Too few repeats: 2 per configuration" in err
    assert src.read_text() == COMMITTED.read_text()  # the measurement itself is never rewritten


def test_the_committed_report_says_what_its_projection_is_worth():
    """benchmarks/results/scaling_2core_cpu/ is rendered by this code (``--render-only``): its warnings come
    first, and its no-fit projections carry their bound."""
    text = (COMMITTED.parent / "report.md").read_text()
    assert text.index("## Read this first") < text.index("## Weak scaling")
    assert "**Too few repeats**" in text and "| ddp | ≤ 1.000 | ≤ 1.000 | ≤ 1.000 | ≤ 1.000 |" in text


def test_a_one_device_sweep_renders_without_a_projection(committed, tmp_path):
    """``--devices 1`` (the wheel's smoke sweep): nothing to project or fit; one tick, no gap sentence."""
    res = copy.deepcopy(committed)
    res["runs"] = [r for r in res["runs"] if r["label"] == "weak_ddp_n1_b8"]
    res["link_fit"] = None
    res["projection"] = projection.projections(res["runs"], _args(strategies="ddp", devices="1"), None)
    res["load"] = _idle_load(needed=1)
    text = report.report(res)
    assert "## Projection\n\nNot computed" in text and "What the projection means" not in text
    figs = plots.figures(res)
    assert [float(t) for t in figs["efficiency.png"].axes[0].get_xticks()] == [1.0]
    assert plots.plots(res, tmp_path) == ["throughput.png", "efficiency.png", "memory.png", "breakdown.png"]


def test_a_sweep_whose_baseline_failed_still_writes_its_report(committed, tmp_path):
    """The 1-device run failed (its error recorded) and the 2-device one ran: no efficiency exists, so no
    efficiency plot, but the report and the other plots are written (before, the plot crashed the sweep at its
    end and report.md was never written)."""
    res = copy.deepcopy(committed)
    res["runs"] = [r for r in res["runs"] if r["label"] in ("weak_ddp_n1_b8", "weak_ddp_n2_b8")]
    for r in res["runs"]:
        r.pop("efficiency", None)
        r.pop("vs_ddp", None)
    res["runs"][0] = {k: res["runs"][0][k] for k in ("label", "strategy", "devices", "scaling", "per_device_batch",
                                                     "global_batch", "option", "repeats")}
    res["runs"][0]["error"] = "exit 1: a traceback"
    res["link_fit"] = None
    res["projection"] = projection.projections(res["runs"], _args(strategies="ddp", devices="1,2"), None)
    text = report.report(res)
    assert "| ddp | 1 | 8 | failed: exit 1: a traceback" in text, text
    assert plots.plots(res, tmp_path) == ["throughput.png", "memory.png", "breakdown.png"]
