#!/usr/bin/env bash
# One prepared GPU session: the GPU-only tests, the strategy comparison, then one-GPU throughput sweeps,
# every result in one flat folder. Run from the repository root on a machine with one CUDA GPU:
#
#   bash benchmarks/gpu_session.sh                    # results in $OUT (default ./gpu_session_out)
#   bash benchmarks/gpu_session.sh --cpu-smoke        # (= GPU_SESSION_DRY=1) CPU plumbing check: same
#                                                     # steps, toy sizes, CUDA-only parts skipped
#   bash benchmarks/gpu_session.sh --plan             # print each step's command, run nothing
#
# The machine may have no network and a Python without our dependencies. It must have a CUDA build
# of torch (+ torchvision); everything else we need travels as wheels in wheels/ (`make wheels`) and
# is installed offline, into that Python, only where it lacks a package or has an older one. If that
# install fails nothing else can run: the session stops there, with its report.
#
# Budget: the whole must end within ~9 minutes on an H100/H200 box (16 cores), unattended. One launch
# of train.py costs ~8-12 s before its first step (torchrun, imports of torch/Ultralytics/Accelerate/
# DeepSpeed, CUDA context, NCCL or DeepSpeed set-up, cuDNN warm-up); a yolov8n mid-fusion step at
# 640 px, batch 16, is a few tens of ms on the GPU, so the loader (8 workers: 2 would make every
# number a loader number) is the likelier limit. In order of value, each step capped:
#
#   step                cap    expected
#   env                 20 s    ~5 s
#   deps                60 s    ~15 s  (9 wheels, pip --no-index --no-deps); a failure ends the session
#   tests              150 s    14 launches x ~12 s on 6 pytest-xdist workers when
#                               installed: ~40-60 s (serial: cap 240 s, ~170 s); 90 s per test
#   data                60 s    ~10 s: ONE 640 px synthetic set (1,600 + 8 pairs, ~3 GB of PNG, 0.06 s a
#                               pair) written by 14 processes into .gpu_session/data/, reused by every
#                               sweep and by a later session; never in $OUT
#   scaling_strategies  90 s    ddp, fsdp (FSDP2), zero2, zero3 on one GPU x (~12 s + 13 steps): ~60 s
#   loader              60 s    benchmarks/loader.py: the mosaic recipe in CPU workers vs --loader device
#                               (decode + augment on the GPU), 0 and 8 workers, 48 LLVIP-size JPEG pairs
#                               written to a temp folder (~15 s) + 4 cells: ~40 s; loader.json in logs.tar.gz
#   compare             90 s    ours vs Ultralytics' own trainer, yolov8n data-level (the same model doing the
#                               same work: RAM cache, HSV off in both, fp32, 8 workers), 640 px, batch 16,
#                               3 epochs of 160 synthetic pairs written by the benchmark (~10 s) + their
#                               4-channel TIFFs for Ultralytics (~5 s) + 2 x (~15 s start + 30 steps + val)
#   scaling_n          180 s    8 configurations (baseline, batch 32 and 64, bf16, fp16, RAM cache,
#                               12 workers, torch.compile last) x (~10 s start + 25 steps at
#                               0.05-0.25 s) + ~40 s of compile: ~150-180 s
#   scaling_s          150 s    yolov8s (~2.5x the GPU work): baseline, batch 32, bf16, compile last: ~110 s
#   report              ~3 s    after every step, not only at the end
#
# The caps add up to more than the budget on purpose: a global deadline (GPU_SESSION_BUDGET_S, default
# 510 s) caps every step at the time left, in the order above, so the session always ends in time.
# Within a sweep the most telling configurations come first and torch.compile (the slowest to
# start) last; one run that hangs is stopped at --run-timeout (120 s) and the sweep goes on. A step
# cut at its cap keeps what it measured: the benchmark rewrites its results.json after every
# configuration, and report.md and sweeps.json are rebuilt from those after every step. The tests
# are stopped with SIGINT (pytest then still writes its junit XML; SIGTERM writes none), the sweeps
# with SIGTERM (torchrun stops its workers on it); SIGKILL follows 20 s later.
#
# Results ($OUT: flat, at most 8 plain files of under 16 MiB each, checked after every step by
# benchmarks/gpu_session_report.py; what does not fit is trimmed or dropped and report.md says so):
#   report.md       what ran, for how long, test outcome, each sweep's table (finished configurations
#                   of a cut sweep included); where to commit
#   sweeps.json     every sweep's results.json as it stands, the steps, the notes
#   sweeps.png      images/s of every measured configuration
#   steps.tsv       step, status (ok | failed | timeout | skipped), exit code, seconds, command
#   env.txt         GPU (nvidia-smi), driver, CUDA, Python and package versions, commit or tree hash,
#                   memory (free -b, /proc/meminfo) and /dev/shm size
#   junit_gpu.xml   pytest's junit XML for tests/test_gpu.py
#   session.log     this script's own log
#   logs.tar.gz     every step's full log and each sweep's output folder (report, results, per-run logs),
#                   without datasets, checkpoints or weights; reduced or dropped if over 16 MiB
# The work itself happens in .gpu_session/work/ (ignored by git, wiped at the start of a session).
# Commit the files of $OUT as benchmarks/results/<card>_gpu_session/ (report.md names the folder).
#
# Variables: OUT, PYTHON (default: .venv/bin/python if present, else python3), WHEELS (default
# ./wheels), GPU_SESSION_BUDGET_S (510), GPU_SESSION_COMMIT (the commit, where the tree has no .git),
# GPU_SESSION_CAPS="scaling_n=60,tests=30" (a step's cap in seconds instead of the table's),
# GPU_SESSION_FORCE_INSTALL=1 (install every wheel into a private folder even if the Python has it:
# exercises that path), GPU_SESSION_ONLY=tests,scaling_n (run only these steps, e.g. a retry; env and
# deps always run, data when a sweep does), GPU_SESSION_SMOKE_STALL=1 (--cpu-smoke only, for tests:
# scaling_n's first option never ends, so a small cap cuts the sweep mid-way).

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
CACHE="$ROOT/.gpu_session"          # ignored by git: private site folder, data
WORK="$CACHE/work"                  # this session's step logs and sweep folders (packed into logs.tar.gz)
WHEELS=${WHEELS:-$ROOT/wheels}
if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON
elif [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"
else PY=python3; fi
BUDGET_S=${GPU_SESSION_BUDGET_S:-510}
RESERVE_S=20                        # kept back for the last report
KILL_AFTER=20                       # SIGKILL this long after a step's signal (torchrun's grace is 30 s)
START=$(date +%s)
DEADLINE=$((START + BUDGET_S))
CPUS=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # nproc alone obeys OMP_NUM_THREADS

export PY WHEELS CACHE ROOT
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"   # our package from the tree, not installed
# No TORCH_EXTENSIONS_DIR of our own: the package finds the DeepSpeed CPU op `make install` prebuilt
# (<venv>/torch_extensions) and says so; a folder of the session's own made the --cpu-smoke run compile
# it (~97 s, silently) inside scaling_strategies' 90 s cap, every time. On the GPU no CPU op is built.
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# Sizes. The real sweeps are the scaling issue's; the smoke run keeps their shape at toy size and
# leaves out what needs CUDA (fp16's grad scaler) or minutes of CPU (torch.compile, ZeRO-3's trace).
# Every sweep reads the one dataset of the data step (--data), sized for the largest of them.
if [[ $MODE == dry ]]; then
  IMGSZ=64 SYNTH_WORKERS=2 RUN_TIMEOUT=120
  MODELS=(yolov8t yolov8t)
  COMMON=(--strategies ddp --devices 1 --fusion mid --imgsz "$IMGSZ" --batch-size 8 --steps 2 --warmup 1
          --repeats 1 --workers 1 --run-timeout "$RUN_TIMEOUT")
  VARY_N="batch_size=16 precision=bf16 cache=ram workers=0"
  VARY_S="batch_size=16"
  LOADER=(--pairs 8 --frame 64 --imgsz 64 --batch 4 --workers 0 --batches 1 --repeats 1 --device cpu)
  COMPARE=(--strategies "ddp,fsdp,zero2" --devices 1 --model yolov8t --fusion mid --imgsz "$IMGSZ" --batch-size 8
           --steps 2 --warmup 1 --repeats 1 --workers 1 --run-timeout "$RUN_TIMEOUT")
  TRAINERS=(--device cpu --imgsz "$IMGSZ" --batch 4 --epochs 2 --train-pairs 12 --val-pairs 4 --workers 0 --threads 1
            --skip-steps 1)
  if [[ "${GPU_SESSION_SMOKE_STALL:-0}" == 1 ]]; then  # a run that only its cap ends (see Variables)
    VARY_N="max_steps=1000000000 $VARY_N"
    COMMON+=("--train-args=--epochs 1000000")
  fi
else
  IMGSZ=640 SYNTH_WORKERS=$((CPUS > 2 ? CPUS - 2 : 1)) RUN_TIMEOUT=120
  MODELS=(yolov8n yolov8s)
  # One repeat each: a launch costs ~10-15 s of start-up, and 8 configurations x 3 repeats would not
  # fit the step's cap; the spread over repeats comes from the CPU runs and later GPU sessions.
  COMMON=(--strategies ddp --devices 1 --fusion mid --imgsz "$IMGSZ" --batch-size 16 --steps 20 --warmup 5
          --repeats 1 --workers 8 --run-timeout "$RUN_TIMEOUT")
  VARY_N="batch_size=32,64 precision=bf16,fp16 cache=ram workers=12 compile=on"  # compile last: slowest start
  VARY_S="batch_size=32 precision=bf16 compile=on"
  LOADER=(--pairs 48 --frame 1024 --imgsz 640 --batch 16 --workers 0 8 --batches 4 --repeats 2 --device cuda)
  COMPARE=(--strategies "ddp,fsdp,zero2,zero3" --devices 1 --model yolov8n --fusion mid --imgsz "$IMGSZ"
           --batch-size 16 --steps 10 --warmup 3 --repeats 1 --workers 8 --run-timeout "$RUN_TIMEOUT")
  TRAINERS=(--device cuda --imgsz "$IMGSZ" --batch 16 --epochs 3 --train-pairs 160 --val-pairs 16 --workers 8
            --threads 4 --skip-steps 5)
fi
SWEEP_N=(--model "${MODELS[0]}" "${COMMON[@]}" --vary "$VARY_N")
SWEEP_S=(--model "${MODELS[1]}" "${COMMON[@]}" --vary "$VARY_S")

pairs_needed() {  # the benchmark's own count: every run of the plan ends within its first epoch
  # shellcheck disable=SC2016
  "$PY" -c 'import sys; from yolofuse_scale.bench.plan import pairs_needed, plan
from yolofuse_scale.bench.sweep import build_parser
a = build_parser().parse_args(sys.argv[1:]); print(pairs_needed(a, plan(a)))' "$@"
}
N_TRAIN=0
for sweep in SWEEP_N SWEEP_S COMPARE; do
  declare -n args=$sweep
  if ! n=$(pairs_needed "${args[@]}"); then  # no Python at all: say so where the results are looked for
    msg="gpu_session: cannot plan the $sweep sweep with python '$PY' (set PYTHON): nothing ran"
    echo "$msg" >&2; [[ $MODE != plan ]] && echo "$msg" >"$OUT/report.md"
    exit 2
  fi
  ((n > N_TRAIN)) && N_TRAIN=$n
  unset -n args
done
DATA="$CACHE/data/synth_${IMGSZ}px_${N_TRAIN}"  # outside $OUT: ~3 GB at 640 px would never come back
# What logs.tar.gz leaves out: datasets (a sweep given no --data writes one into its folder),
# checkpoints and weights of a run cut mid-way, caches.
PACK_EXCLUDES=(--exclude=data --exclude=images --exclude=imagesIR --exclude=labels --exclude=checkpoints
               --exclude=weights --exclude='*.pt' --exclude='*.pth' --exclude='*.safetensors' --exclude='*.bin'
               --exclude='*.npy' --exclude='*.scan.json' --exclude=scan_cache --exclude=pair_cache)
LIMIT_BYTES=$((16 * 1024 * 1024 - 65536))

say() { echo "[$(date -u +%H:%M:%S) +$(($(date +%s) - START))s] $*" | tee -a "$OUT/session.log"; }

record() {  # record NAME STATUS RC SECONDS NOTE
  printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$OUT/steps.tsv"
}

note() {  # note TOPIC TEXT: a line for report.md's notes (one file per topic: the latest word wins)
  mkdir -p "$WORK/notes" && echo "$2" >"$WORK/notes/$1.txt"
}

pack_logs() {  # $WORK into $OUT/logs.tar.gz, under the size limit, replaced atomically
  local tmp="$CACHE/.logs.tar.gz.tmp" size
  tar -czf "$tmp" -C "$WORK" "${PACK_EXCLUDES[@]}" . 2>/dev/null
  size=$(stat -c %s "$tmp" 2>/dev/null || echo 0)
  if ((size >= LIMIT_BYTES)); then  # the runs' stdout (compile logs, tracebacks) is the bulk
    tar -czf "$tmp" -C "$WORK" "${PACK_EXCLUDES[@]}" --exclude=stdout.txt . 2>/dev/null
    note pack "logs.tar.gz: $((size >> 20)) MiB with every run's stdout.txt; packed without them"
    size=$(stat -c %s "$tmp" 2>/dev/null || echo 0)
  else
    rm -f "$WORK/notes/pack.txt"
  fi
  if ((size >= LIMIT_BYTES)); then
    note pack "logs.tar.gz: $((size >> 20)) MiB even without stdout.txt: left out (the logs are in $WORK)"
    rm -f "$tmp" "$OUT/logs.tar.gz"
  else
    mv "$tmp" "$OUT/logs.tar.gz"
  fi
}

refresh() {  # after every step: logs packed, report.md + sweeps.json + sweeps.png rebuilt, limits held
  pack_logs
  "$PY" -m benchmarks.gpu_session_report --out "$OUT" --work "$WORK" --mode "$MODE" --budget-s "$BUDGET_S" \
    >>"$WORK/logs/report.log" 2>&1 || say "report: failed (see logs/report.log in logs.tar.gz)"
}

cap_of() {  # cap_of NAME DEFAULT: GPU_SESSION_CAPS="scaling_n=60,tests=30" overrides a step's cap
  local item
  local caps=${GPU_SESSION_CAPS:-}
  for item in ${caps//,/ }; do
    [[ ${item%%=*} == "$1" ]] && { echo "${item#*=}"; return; }
  done
  echo "$2"
}

selected() {  # GPU_SESSION_ONLY: env and deps always run; data when a sweep does
  [[ -z "${GPU_SESSION_ONLY:-}" || $1 == env || $1 == deps ]] && return 0
  [[ $1 == data ]] && { [[ ",$GPU_SESSION_ONLY," == *",scaling_"* ]]; return; }
  [[ ",$GPU_SESSION_ONLY," == *",$1,"* ]]
}

step() {  # step NAME CAP_S SIGNAL CMD...: CMD under `timeout`, capped at the time left; log, record, refresh
  local name=$1 cap sig=$3
  cap=$(cap_of "$name" "$2")
  shift 3
  if [[ $MODE == plan ]]; then
    printf '%s\t' "$name"; printf '%q ' timeout -s "$sig" -k "$KILL_AFTER" "$cap" "$@"; echo; return 0
  fi
  if ! selected "$name"; then record "$name" skipped - 0 "not in GPU_SESSION_ONLY"; return 0; fi
  local left=$((DEADLINE - RESERVE_S - $(date +%s)))
  ((cap > left)) && cap=$left
  if ((cap < 5)); then
    say "$name: skipped (budget spent)"; record "$name" skipped - 0 "budget of ${BUDGET_S}s spent"; refresh
    return 0
  fi
  say "$name: start (cap ${cap}s)"
  local t0 rc=0 status=ok
  t0=$(date +%s)
  # timeout runs the command in its own process group and signals the whole group: pytest's
  # launches and the benchmark's torchrun get it (torchrun then stops its workers, which run in
  # sessions of their own).
  timeout -s "$sig" -k "$KILL_AFTER" "$cap" "$@" >"$WORK/logs/$name.log" 2>&1 || rc=$?
  local dt=$(($(date +%s) - t0))
  if ((rc == 124 || rc == 137)); then status=timeout; elif ((rc != 0)); then status=failed; fi
  say "$name: $status (exit $rc, ${dt}s)"
  [[ $status != ok ]] && tail -n 25 "$WORK/logs/$name.log" | sed "s/^/    $name| /" | tee -a "$OUT/session.log"
  record "$name" "$status" "$rc" "$dt" "$(printf '%q ' "$@" | cut -c1-300)"
  refresh
  [[ $status == ok ]]
}

capture_env() {  # (i) what ran where: GPU, driver, CUDA, versions, commit, memory
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "mode: $MODE; host: $(uname -n); cpus: $CPUS; python: $PY"
  echo "commit: ${GPU_SESSION_COMMIT:-$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown: no git or no .git here)}"
  git -C "$ROOT" status --porcelain 2>/dev/null | head -20 | sed 's/^/  dirty: /'
  # A fingerprint of the sources, to match these results to a commit when .git did not travel.
  echo "tree sha256: $(cd "$ROOT" && find train.py pyproject.toml yolofuse_scale benchmarks tests configs ds_configs \
      -type f \( -name '*.py' -o -name '*.sh' -o -name '*.json' -o -name '*.yaml' -o -name '*.toml' \) \
      -not -path '*/results/*' 2>/dev/null | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"
  # DataLoader workers hand batches over through /dev/shm (a container's default is 64 MB), and
  # cache=ram decodes the whole set there: a failed run may be this.
  echo "--- memory"
  free -b 2>&1 || true
  grep -E '^(MemTotal|MemAvailable|SwapTotal|Shmem|HugePages_Total):' /proc/meminfo 2>/dev/null
  df -B1 /dev/shm 2>&1 || true
  echo "shm_bytes: $(df -B1 --output=size /dev/shm 2>/dev/null | tail -n 1 | tr -d ' ')"
  echo "--- nvidia-smi"
  nvidia-smi 2>&1 || echo "(no nvidia-smi)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv 2>&1 || true
  echo "--- python"
  "$PY" - <<'EOF'
import importlib.metadata as md, platform, sys
print("python", sys.version.split()[0], platform.platform())
for name in ("torch", "torchvision", "accelerate", "deepspeed", "ultralytics", "transformers", "pydantic",
             "numpy", "opencv-python-headless", "opencv-python", "matplotlib", "pytest", "pytest-xdist",
             "pytest-timeout"):
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

make_data() {  # make_data SYNTH_CMD...: DATA written once (its data.yaml last: present = complete)
  if [[ -f "$DATA/data.yaml" ]]; then echo "reusing $DATA"; return 0; fi
  rm -rf "$DATA" "$CACHE"/data/synth_*  # an incomplete set, or one sized for another plan: ~3 GB each
  "$@" && du -sh "$DATA"
}

scaling() {  # scaling NAME CAP ARGS...: the scaling benchmark on DATA, its folder in WORK
  local name=$1 cap=$2
  shift 2
  if [[ $MODE != plan && ! -f "$DATA/data.yaml" ]] && selected "$name"; then  # each run would fail on it
    say "$name: skipped (no dataset: see the data step)"; record "$name" skipped - 0 "no dataset"; return 0
  fi
  step "$name" "$cap" TERM "$PY" -m benchmarks.scaling "$@" --data "$DATA/data.yaml" --out "$WORK/$name"
}

# ------------------------------------------------------------------------------------------- run
if [[ $MODE != plan ]]; then
  rm -rf "$CACHE/site" "$WORK"  # a private install and the work folder are this session's own
  mkdir -p "$WORK/logs" "$WORK/loader" "$CACHE/data"
  for f in report.md sweeps.json sweeps.png steps.tsv env.txt junit_gpu.xml session.log logs.tar.gz; do
    rm -f "${OUT:?}/$f"
  done
  say "gpu_session ($MODE): results in $OUT; budget ${BUDGET_S}s; python $PY; data $DATA"
fi
export MODE DATA CPUS
export -f capture_env install_deps make_data

# shellcheck disable=SC2016  # $0 is the inner bash's: the file name passed after the command
step env 20 TERM bash -c 'capture_env > "$0"' "$OUT/env.txt"
if ! step deps 60 TERM bash -c install_deps && [[ $MODE != plan ]]; then
  say "deps: failed: nothing else can run; session stopped (see logs/deps.log in logs.tar.gz)"
  note deps "the dependencies could not be installed (step deps): the session stopped before the tests"
  refresh
  cat "$OUT/report.md"
  exit 1
fi
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

# (iii) the GPU-only tests; pytest-xdist spreads them over 6 workers when installed, a test at a time
# (tests/conftest.py: PER_TEST_MODULES; tests that read one cached run wait while a worker makes it); each
# launch is one process on the one GPU, so 6 at once use ~6 CUDA contexts (a few GB); on CPU every test skips.
# SIGINT at the cap: pytest stops as on Ctrl-C and still writes the junit XML of what ran.
XDIST=() TESTS_CAP=240 PER_TEST=()  # serial: ~170 s expected
if [[ $MODE == plan ]] || "$PY" -c "import xdist" 2>/dev/null; then XDIST=(-n 6 --dist loadgroup) TESTS_CAP=150; fi
if [[ $MODE == plan ]] || "$PY" -c "import pytest_timeout" 2>/dev/null; then PER_TEST=(--timeout 90); fi
step tests "$TESTS_CAP" INT "$PY" -m pytest tests/test_gpu.py -q -rfEs -p no:cacheprovider "${XDIST[@]}" \
  "${PER_TEST[@]}" --junitxml="$OUT/junit_gpu.xml" -o junit_family=xunit2

# (iv) one dataset for every sweep, outside $OUT
# shellcheck disable=SC2016  # "$@" is the inner bash's
step data 60 TERM bash -c 'make_data "$@"' make_data \
  "$PY" -m yolofuse_scale synth --out "$DATA" --train "$N_TRAIN" --val 8 --imgsz "$IMGSZ" --workers "$SYNTH_WORKERS"

# (v) one GPU: the strategies side by side (measured nowhere else), then the n and s sweeps at 640 px
scaling scaling_strategies 90 "${COMPARE[@]}"
# the two loader pipelines side by side on this machine (--loader cpu's recipe vs --loader device)
step loader 60 TERM "$PY" benchmarks/loader.py --modes mosaic device "${LOADER[@]}" --out "$WORK/loader/loader.json"
# the trainer comparison (ours vs Ultralytics' DetectionTrainer) on this GPU: same model, recipe, data and cache,
# HSV off in both; per-step overheads (host syncs, the EMA, Python) weigh more here than on a CPU
step compare 90 TERM "$PY" -m benchmarks.compare_ultralytics "${TRAINERS[@]}" --cache ram --no-hsv --close-mosaic 1 \
  --label "$CPUS-core GPU host" --out "$WORK/compare"
scaling scaling_n 180 "${SWEEP_N[@]}"
scaling scaling_s 150 "${SWEEP_S[@]}"

# (vi) the report was rewritten after every step; the last word, and $OUT as it comes back
if [[ $MODE == plan ]]; then
  printf 'pack\t'; printf '%q ' tar -czf "$OUT/logs.tar.gz" -C "$WORK" "${PACK_EXCLUDES[@]}" .; echo
  echo -e "report\tpython -m benchmarks.gpu_session_report"
  exit 0
fi
say "done in $(($(date +%s) - START))s"
refresh
cat "$OUT/report.md"
find "$OUT" -mindepth 1 -maxdepth 1 -printf "%s bytes\t%f\n" | sort -k3 | tee -a "$OUT/session.log"
# Exit status: 0 when every step that ran succeeded (skipped steps do not count).
! cut -f2 "$OUT/steps.tsv" | grep -qE '^(failed|timeout)$'
