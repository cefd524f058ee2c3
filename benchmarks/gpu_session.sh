#!/usr/bin/env bash
# One prepared GPU session: the GPU-only tests, then a one-GPU throughput sweep, every result in one
# place. Run from the repository root on a machine with one CUDA GPU:
#
#   bash benchmarks/gpu_session.sh                    # results in $OUT (default ./gpu_session_out)
#   bash benchmarks/gpu_session.sh --cpu-smoke        # (= GPU_SESSION_DRY=1) CPU plumbing check: same
#                                                     # steps, tiny sizes, CUDA-only parts skipped
#   bash benchmarks/gpu_session.sh --plan             # print each step's command, run nothing
#
# The machine may have no network and a Python without our dependencies. It must have a CUDA build
# of torch (+ torchvision); everything else we need travels as wheels in wheels/ (`make wheels`) and
# is installed offline, into that Python, only where it lacks a package or has an older one.
#
# Budget: the whole must end within 8 minutes on an H100/H200 box (16 cores). One launch of train.py
# costs ~8-12 s before its first step (torchrun, imports of torch/Ultralytics/Accelerate/DeepSpeed,
# CUDA context, NCCL or DeepSpeed set-up, cuDNN warm-up); a yolov8n mid-fusion step at 640 px, batch
# 16, is a few tens of ms on the GPU and the loader is the likelier limit. Counted:
#
#   step         cap    expected
#   env          20 s    ~5 s
#   deps         60 s    ~15 s  (9 wheels, pip --no-index --no-deps)
#   tests       150 s    14 launches x ~12 s in 6 groups (one per cached run family) on 6 pytest-xdist
#                        workers when installed: ~40-60 s (serial: ~170 s)
#   scaling_n   170 s    9 configurations (baseline, batch 32 and 64, bf16, fp16, compile, RAM cache,
#                        0 and 8 workers) x (~10 s start + 5 + 3 x 20 steps at 0.05-0.25 s), plus
#                        ~40 s of torch.compile: ~150-190 s
#   scaling_s   170 s    the same for yolov8s (~2.5x the GPU work per step): ~170-220 s
#   strategies   75 s    ddp, fsdp, zero2, zero3 x (~12 s start + 13 steps): ~60 s
#   report       ~5 s
#
# The caps add up to more than 8 minutes on purpose: a global deadline (GPU_SESSION_BUDGET_S, default
# 450 s) caps every step at the time left, in this order of priority, so the session always ends in
# time, and each step's results are packed as soon as it ends: a failure or time-out of one step loses
# nothing another step wrote. A capped sweep keeps the configurations it finished if the benchmark
# writes each one as it completes.
#
# Results ($OUT; flat, at most 8 files, so the device tool brings all of them back):
#   report.md             what ran, for how long, test outcome, the sweeps' tables; where to commit
#   steps.tsv             step, status (ok | failed | timeout | skipped), exit code, seconds, note
#   env.txt               GPU (nvidia-smi), driver, CUDA, Python and package versions, commit or tree hash
#   junit_gpu.xml         pytest's junit XML for tests/test_gpu.py
#   session.log           this script's own log
#   gpu_session.tar.gz    all of the above plus every step's full log and the sweeps' output folders
# Commit them as benchmarks/results/<card>_gpu_session/ (report.md names the folder): unpack the tar
# there.
#
# Variables: OUT, PYTHON (default: .venv/bin/python if present, else python3), WHEELS (default
# ./wheels), GPU_SESSION_BUDGET_S (450), GPU_SESSION_COMMIT (the commit, where the tree has no .git),
# GPU_SESSION_KEEP_DIRS=1 (keep the step folders in $OUT beside the tar), GPU_SESSION_FORCE_INSTALL=1
# (install every wheel into a private folder even if the Python has it: exercises that path),
# GPU_SESSION_ONLY=tests,scaling_n (run only these steps, e.g. a retry; env and deps always run).

set -uo pipefail  # not -e: a failing step is recorded and the session goes on

MODE=run
case "${1:-}" in
  --cpu-smoke) MODE=dry ;;
  --plan) MODE=plan ;;
  "") [[ "${GPU_SESSION_DRY:-0}" == 1 ]] && MODE=dry ;;
  *) echo "usage: bash benchmarks/gpu_session.sh [--cpu-smoke | --plan]" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
OUT=${OUT:-$ROOT/gpu_session_out}
[[ $MODE != plan ]] && OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
LOGS="$OUT/logs"
CACHE="$ROOT/.gpu_session"          # ignored by git: private site folder, DeepSpeed's JIT builds
WHEELS=${WHEELS:-$ROOT/wheels}
if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON
elif [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"
else PY=python3; fi
BUDGET_S=${GPU_SESSION_BUDGET_S:-450}
RESERVE_S=20                        # kept back for the report and the last pack
START=$(date +%s)
DEADLINE=$((START + BUDGET_S))

export PY WHEELS CACHE ROOT
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"   # our package from the tree, not installed
export TORCH_EXTENSIONS_DIR="$CACHE/torch_extensions"  # DeepSpeed's JIT-built ops stay in the tree
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# Sizes. The real sweep is exactly the scaling issue's; the smoke run keeps its shape at toy size and
# leaves out what needs CUDA (fp16's grad scaler) or minutes of CPU (torch.compile, ZeRO-3's trace).
if [[ $MODE == dry ]]; then
  MODELS=(yolov8t yolov8t)
  SWEEP=(--strategies ddp --devices 1 --fusion mid --imgsz 128 --batch-size 8 --steps 2 --warmup 1 --repeats 1
         --vary "batch_size=16 precision=bf16 cache=ram workers=0")
  SWEEP_S=()
  COMPARE=(--strategies "ddp,fsdp,zero2" --devices 1 --model yolov8t --fusion mid --imgsz 128 --batch-size 8
           --steps 2 --warmup 1 --repeats 1)
else
  MODELS=(yolov8n yolov8s)
  # One repeat each: a launch costs ~10-15 s of start-up, and 9 configurations x 3 repeats would not
  # fit the step's 170 s; the spread over repeats comes from the CPU runs and later GPU sessions.
  SWEEP=(--strategies ddp --devices 1 --fusion mid --imgsz 640 --batch-size 16 --steps 20 --warmup 5 --repeats 1
         --vary "batch_size=32,64 precision=bf16,fp16 compile=on cache=ram workers=8")
  SWEEP_S=(--vary "batch_size=32 precision=bf16 compile=on")  # s: fewer options in the same cap
  COMPARE=(--strategies "ddp,fsdp,zero2,zero3" --devices 1 --model yolov8n --fusion mid --imgsz 640 --batch-size 16
           --steps 10 --warmup 3 --repeats 1)
fi

say() { echo "[$(date -u +%H:%M:%S) +$(($(date +%s) - START))s] $*" | tee -a "$OUT/session.log"; }

record() {  # record NAME STATUS RC SECONDS NOTE
  printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$OUT/steps.tsv"
}

pack() {  # everything in $OUT into one tar, replaced atomically (what the device tool surely returns)
  tar -czf "$OUT/.gpu_session.tar.gz.tmp" -C "$OUT" --exclude=./gpu_session.tar.gz \
      --exclude=./.gpu_session.tar.gz.tmp . 2>/dev/null && mv "$OUT/.gpu_session.tar.gz.tmp" "$OUT/gpu_session.tar.gz"
}

step() {  # step NAME CAP_S CMD...: CMD under `timeout`, capped at the time left; log, record, pack
  local name=$1 cap=$2
  shift 2
  if [[ $MODE == plan ]]; then printf '%s\t' "$name"; printf '%q ' "$@"; echo; return 0; fi
  if [[ -n "${GPU_SESSION_ONLY:-}" && $name != env && $name != deps && ",$GPU_SESSION_ONLY," != *",$name,"* ]]; then
    record "$name" skipped - 0 "not in GPU_SESSION_ONLY"; return 0
  fi
  local left=$((DEADLINE - RESERVE_S - $(date +%s)))
  ((cap > left)) && cap=$left
  if ((cap < 5)); then
    say "$name: skipped (budget spent)"; record "$name" skipped - 0 "budget of ${BUDGET_S}s spent"; pack; return 0
  fi
  say "$name: start (cap ${cap}s)"
  local t0 rc=0 status=ok
  t0=$(date +%s)
  # timeout runs the command in its own process group and signals the whole group: torchrun's
  # workers and pytest's launches die with it.
  timeout -k 10 "$cap" "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
  local dt=$(($(date +%s) - t0))
  if ((rc == 124 || rc == 137)); then status=timeout; elif ((rc != 0)); then status=failed; fi
  say "$name: $status (exit $rc, ${dt}s)"
  [[ $status != ok ]] && tail -n 25 "$LOGS/$name.log" | sed "s/^/    $name| /" | tee -a "$OUT/session.log"
  record "$name" "$status" "$rc" "$dt" "$(printf '%q ' "$@" | cut -c1-300)"
  pack
}

capture_env() {  # (i) what ran where: GPU, driver, CUDA, versions, commit
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "mode: $MODE; host: $(uname -n); cpus: $(nproc); python: $PY"
  echo "commit: ${GPU_SESSION_COMMIT:-$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown: no .git here)}"
  git -C "$ROOT" status --porcelain 2>/dev/null | head -20 | sed 's/^/  dirty: /'
  # A fingerprint of the sources, to match these results to a commit when .git did not travel.
  echo "tree sha256: $(cd "$ROOT" && find train.py pyproject.toml yolofuse_scale benchmarks tests configs ds_configs \
      -type f \( -name '*.py' -o -name '*.sh' -o -name '*.json' -o -name '*.yaml' -o -name '*.toml' \) \
      -not -path '*/results/*' 2>/dev/null | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"
  echo "--- nvidia-smi"
  nvidia-smi 2>&1 || echo "(no nvidia-smi)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv 2>&1 || true
  echo "--- python"
  "$PY" - <<'EOF'
import importlib.metadata as md, platform, sys
print("python", sys.version.split()[0], platform.platform())
for name in ("torch", "torchvision", "accelerate", "deepspeed", "ultralytics", "transformers", "pydantic",
             "numpy", "opencv-python-headless", "opencv-python", "pytest", "pytest-xdist"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} (not installed)")
try:
    import torch
    print("torch.version.cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
          "cuda available", torch.cuda.is_available())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print("device", p.name, f"sm_{p.major}{p.minor}", f"{p.total_memory / 2**30:.0f} GiB",
              p.multi_processor_count, "SMs; count", torch.cuda.device_count(), "nccl", torch.cuda.nccl.version())
except Exception as e:  # the record must survive a broken torch
    print("torch failed:", type(e).__name__, e)
EOF
}

install_deps() {  # (ii) offline: install the wheels of what this Python lacks (or has older)
  if "$PY" -c "import yolofuse_scale, accelerate, deepspeed, ultralytics" 2>/dev/null \
      && [[ "${GPU_SESSION_FORCE_INSTALL:-0}" != 1 ]]; then
    echo "dependencies already importable: nothing to install"; return 0
  fi
  if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "no wheels in $WHEELS: run 'make wheels' where pip works and carry wheels/ to this machine" >&2; return 3
  fi
  local wanted
  wanted=$("$PY" - "$WHEELS" "${GPU_SESSION_FORCE_INSTALL:-0}" <<'EOF'
import importlib.metadata as md, sys
from pathlib import Path

def key(v):  # enough of PEP 440 to order release versions without the packaging module
    return [int(p) if p.isdigit() else -1 for p in v.replace("+", ".").split(".")]

for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    name, version = wheel.name.split("-")[:2]
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = None
    if sys.argv[2] == "1" or have is None or key(have) < key(version):
        print(wheel)
        print(f"install {name} {version} (have: {have})", file=sys.stderr)
    else:
        print(f"keep    {name} {have} (wheel: {version})", file=sys.stderr)
EOF
  ) || return 4
  [[ -z $wanted ]] && { echo "every wheel is already installed"; return 0; }
  local pip=("$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-deps --no-compile --no-cache-dir
             --disable-pip-version-check)
  # shellcheck disable=SC2086  # one path per line, no spaces (wheel names)
  if [[ "${GPU_SESSION_FORCE_INSTALL:-0}" != 1 ]] && "${pip[@]}" $wanted; then
    echo "installed into $("$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
  else  # a read-only environment (or forced): a private folder on PYTHONPATH
    # shellcheck disable=SC2086
    "${pip[@]}" --upgrade --target "$CACHE/site" $wanted || return 5
    echo "installed into $CACHE/site (on PYTHONPATH for the rest of the session)"
  fi
  "$PY" -c "import yolofuse_scale, accelerate, deepspeed, ultralytics; print('imports ok')"
}

scaling() {  # scaling NAME ARGS...: the scaling benchmark, if this tree has it
  if [[ $MODE != plan && ! -f "$ROOT/benchmarks/scaling.py" ]]; then
    say "$1: skipped (benchmarks/scaling.py is not in this tree)"; record "$1" skipped - 0 "no benchmarks/scaling.py"
    return 0
  fi
  local name=$1 cap=$2
  shift 2
  step "$name" "$cap" "$PY" -m benchmarks.scaling "$@"
}

write_report() {  # (v) report.md from steps.tsv, junit XML, env.txt and the sweeps' own outputs
  "$PY" - "$OUT" "$MODE" <<'EOF'
import re, sys, xml.etree.ElementTree as ET
from pathlib import Path

out, mode = Path(sys.argv[1]), sys.argv[2]
env = (out / "env.txt").read_text() if (out / "env.txt").exists() else ""
m = re.search(r"^device (.+?) sm_", env, re.M) or re.search(r"^name.*\n(.+?),", env, re.M)
card = re.sub(r"[^a-z0-9]+", "_", m.group(1).lower().replace("nvidia", "")).strip("_") if m else f"{mode}_nocuda"
lines = [f"# GPU session: {card}", "",
         f"Commit to `benchmarks/results/{card}_gpu_session/` (unpack gpu_session.tar.gz there).", ""]
lines += [f"- {l}" for l in env.splitlines() if l.startswith(("date:", "commit:", "tree sha256:", "device ", "torch "))]
lines += ["", "| step | status | exit | seconds | command |", "|---|---|---|---|---|"]
for row in (out / "steps.tsv").read_text().splitlines() if (out / "steps.tsv").exists() else []:
    cells = (row.split("\t") + [""] * 5)[:5]
    lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells[:4]) + f" | `{cells[4].strip()}` |")
junit = out / "junit_gpu.xml"
if junit.exists():
    root = ET.parse(junit).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    a = suite.attrib
    lines += ["", f"## tests/test_gpu.py: {a.get('tests')} tests, {a.get('failures')} failed, "
              f"{a.get('errors')} errors, {a.get('skipped')} skipped ({float(a.get('time', 0)):.0f} s)", ""]
    for case in suite.iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome, message = tag, (el.get("message") or "").splitlines()[0][:200] if el.get("message") else ""
        lines.append(f"- {outcome}: `{case.get('name')}` ({float(case.get('time', 0)):.1f} s) {message}")
for folder in sorted(p for p in out.glob("scaling_*") if p.is_dir()):
    lines += ["", f"## {folder.name}", ""]
    tables = sorted(folder.rglob("*.md"))
    for md in tables:
        lines += [f"### {md.relative_to(out)}", "", md.read_text().strip(), ""]
    if not tables:
        lines += [f"- {p.relative_to(out)}" for p in sorted(folder.rglob("*")) if p.is_file()][:40]
(out / "report.md").write_text("\n".join(lines) + "\n")
print(f"report: {out / 'report.md'} (card {card})")
EOF
}

# ------------------------------------------------------------------------------------------- run
if [[ $MODE != plan ]]; then
  rm -rf "$CACHE/site"  # a private install is this session's own (see install_deps)
  mkdir -p "$LOGS" "$CACHE"
  rm -f "$OUT/steps.tsv" "$OUT/session.log" "$OUT/report.md" "$OUT/junit_gpu.xml"
  say "gpu_session ($MODE): results in $OUT; budget ${BUDGET_S}s; python $PY"
fi
export MODE
export -f capture_env install_deps

# shellcheck disable=SC2016  # $0 is the inner bash's: the file name passed after the command
step env 20 bash -c 'capture_env > "$0"' "$OUT/env.txt"
step deps 60 bash -c install_deps
if [[ -d "$CACHE/site" && ":$PYTHONPATH:" != *":$CACHE/site:"* ]]; then
  export PYTHONPATH="$PYTHONPATH:$CACHE/site" PATH="$CACHE/site/bin:$PATH"
fi
[[ $MODE != plan ]] && "$PY" - >>"$OUT/env.txt" 2>&1 <<'EOF'
import importlib.metadata as md
print("--- after deps")
for name in ("deepspeed", "ultralytics", "ultralytics-thop", "pydantic", "hjson"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} (not installed)")
EOF

# (iii) the GPU-only tests; pytest-xdist spreads them over 6 workers when installed, one per group of
# tests that share cached runs (xdist_group: ddp, sync_bn, fp16, fsdp, zero2, zero3); each launch is
# one process on the one GPU, so 6 at once use ~6 CUDA contexts (a few GB); on CPU every test skips.
XDIST=() TESTS_CAP=240  # serial: ~170 s expected (pytest writes the junit XML only at its end)
if [[ $MODE == plan ]] || "$PY" -c "import xdist" 2>/dev/null; then XDIST=(-n 6 --dist loadgroup) TESTS_CAP=150; fi
step tests "$TESTS_CAP" "$PY" -m pytest tests/test_gpu.py -q -rfEs -p no:cacheprovider "${XDIST[@]}" \
  --junitxml="$OUT/junit_gpu.xml" -o junit_family=xunit2

# (iv) the one-GPU sweep at 640 px for n and s mid fusion, then the strategies at one GPU
scaling scaling_n 170 --model "${MODELS[0]}" "${SWEEP[@]}" --out "$OUT/scaling_n"
scaling scaling_s 170 --model "${MODELS[1]}" "${SWEEP[@]}" "${SWEEP_S[@]}" --out "$OUT/scaling_s"
scaling scaling_strategies 75 "${COMPARE[@]}" --out "$OUT/scaling_strategies"

# (v) report, pack, and leave $OUT flat
if [[ $MODE == plan ]]; then echo -e "report\twrite_report"; exit 0; fi
write_report 2>&1 | tee -a "$OUT/session.log"
say "done in $(($(date +%s) - START))s"
pack
if [[ "${GPU_SESSION_KEEP_DIRS:-0}" != 1 ]]; then
  rm -rf "$LOGS" "$OUT"/scaling_*/  # only what this script made; all of it is in the tar
fi
cat "$OUT/report.md"
ls -la "$OUT"
# Exit status: 0 when every step that ran succeeded (skipped steps do not count).
! cut -f2 "$OUT/steps.tsv" | grep -qE '^(failed|timeout)$'
