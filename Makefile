# make install | make demo | make test   (a fresh machine needs nothing else)
# make test-fast: the unit tier (no trainings, no multi-process runs): about 3 min on a 2-core VM
# make wheels: our dependencies as wheels for an offline GPU machine (benchmarks/gpu_session.sh)
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Stamp keyed by pyproject.toml: editing the dependencies re-runs the install, nothing else does.
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
NPROC ?= 2

.PHONY: install demo test test-durations test-fast test-nightly test-all lint clean wheels

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: this pair is on local disk here; an unpinned torch drags a multi-GB download.
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e ".[dev,onnx,compare,trackers,ray]"
	# DeepSpeed JIT-compiles its CPU communication op on first use (~90 s with g++): do it once here,
	# into the venv; every launch finds it there by itself (yolofuse_scale/engine/strategy/cpu_comm_op.py).
	TORCH_EXTENSIONS_DIR=$(VENV)/torch_extensions $(BIN)/python -c \
	  "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder as B; B().load()" \
	  || echo "note: DeepSpeed CPU comm op not prebuilt (it builds on first CPU DeepSpeed run)"
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

# Main job end to end: synthesise data, train a small mid-fusion model with 2-process DDP on CPU
# (or one process per GPU when GPUs are present), validate, print where everything is.
demo: install
	@set -e; \
	out=runs/demo; rm -rf $$out; \
	ngpu=$$($(BIN)/python -c "import torch; print(torch.cuda.device_count())"); \
	nproc=$$([ "$$ngpu" -gt 0 ] && echo $$ngpu || echo $(NPROC)); \
	$(BIN)/yolofuse-scale synth --out $$out/data --train 384 --val 96 --imgsz 128 --seed 0; \
	$(BIN)/torchrun --standalone --nproc_per_node $$nproc train.py --data $$out/data/data.yaml \
	  --model yolov8n --fusion mid --imgsz 128 --batch-size 8 --epochs 12 --warmup-epochs 1 --lr 0.02 \
	  --workers 1 --output-dir $$out/train; \
	$(BIN)/yolofuse-scale val --weights $$out/train/weights/best.pt --data $$out/data/data.yaml --imgsz 128; \
	echo "weights: $$out/train/weights/{best,last}.pt  metrics: $$out/train/metrics.json  log: $$out/train/train_log.jsonl"

# Two pytest-xdist workers (this project's CI machine has 2 cores): a module's tests stay on one worker, the
# modules handed out heaviest first (tests/durations.json), and the cached trainings of tests/conftest.py are made
# once for both (a shared folder under a file lock).
test: install
	$(BIN)/python -m pytest tests -q -m "not nightly" -n 2 --dist loadgroup --durations=25

# make test, then tests/durations.json from its per-test times (the order the modules are handed out in).
test-durations: install
	$(BIN)/python -m pytest tests -q -m "not nightly" -n 2 --dist loadgroup --junitxml=.pytest-durations.xml
	$(BIN)/python tests/record_durations.py .pytest-durations.xml && rm -f .pytest-durations.xml

# The nightly tier: the remaining cells of the exhaustive matrices (each strategy x direction of a world-size
# change, each strategy of a kill/restart, ZeRO-3 offload's parity, ...). CI runs one cell of each dimension
# (make test); run this before a release or after touching a strategy (~5 min on a 2-core VM).
test-nightly: install
	$(BIN)/python -m pytest tests -q -m nightly -n 2 --dist loadgroup --durations=10

# Everything: make test + make test-nightly in one session.
test-all: install
	$(BIN)/python -m pytest tests -q -n 2 --dist loadgroup --durations=25

# Tests marked slow (trainings, multi-process launches, the wheel build; launch in tests/helpers.py refuses an
# unmarked one) are left out: what is left checks units and CLI errors in a few minutes.
test-fast: install
	$(BIN)/python -m pytest tests -q -m "not slow and not nightly" -n 2 --dist loadgroup --durations=10

lint: install
	$(BIN)/ruff check yolofuse_scale tests benchmarks train.py

clean:
	rm -rf runs .pytest_cache .pytest-durations.xml

# Wheels for an offline GPU machine whose Python already has a CUDA torch and torchvision (a CUDA
# torch with its nvidia-* wheels is several GB: bring it another way). The default set is what a
# GPU image with a CUDA torch often lacks (when it has accelerate, transformers, numpy, opencv-headless,
# pyyaml, tqdm, safetensors, pytest): DeepSpeed (an sdist: built here, pure Python, no ops) and its
# pydantic/hjson, Ultralytics and thop. Versions are this venv's, so the GPU runs what CI tests.
# Ultralytics' polars (~40 MB) and ultralytics-platform are left out: imported lazily, never by us.
# For a machine with a bare Python add the rest: make wheels WHEELS_PKGS="$(WHEELS_PKGS) accelerate ...".
# Copy wheels/ beside the checkout on the GPU machine; WHEELS_LIMIT_MIB bounds wheels + tree together.
WHEELS_PY ?= 3.12
WHEELS_PLATFORMS ?= manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
WHEELS_PKGS ?= deepspeed hjson pydantic pydantic-core annotated-types typing-inspection typing-extensions \
	ultralytics ultralytics-thop
WHEELS_LIMIT_MIB ?= 64

wheels: install
	@set -euo pipefail; rm -rf wheels; mkdir -p wheels; \
	pins=$$($(BIN)/python -c 'import importlib.metadata as m, sys; print(*(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' \
	  $(WHEELS_PKGS)); \
	echo "wheels for Python $(WHEELS_PY): $$pins"; \
	binary=$$(tr ' ' '\n' <<<"$$pins" | grep -v '^deepspeed==' || true); \
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version $(WHEELS_PY) --implementation cp \
	  $(addprefix --platform ,$(WHEELS_PLATFORMS)) -d wheels $$binary; \
	source=$$(tr ' ' '\n' <<<"$$pins" | grep '^deepspeed==' || true); \
	if [ -n "$$source" ]; then DS_BUILD_OPS=0 $(BIN)/python -m pip wheel -q --no-deps --no-build-isolation \
	  -w wheels $$source; fi; \
	ls -l wheels; \
	wheels=$$(du -cb wheels/*.whl | tail -1 | cut -f1); \
	tree=$$(git ls-files -z -co --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $$1} END {print s + 0}'); \
	echo "wheels: $$((wheels / 1024)) KiB; tree (tracked + untracked, not ignored): $$((tree / 1024)) KiB; \
	together $$(( (wheels + tree) / 1048576 )) MiB of $(WHEELS_LIMIT_MIB) MiB"; \
	test $$((wheels + tree)) -le $$(($(WHEELS_LIMIT_MIB) * 1048576)) || \
	  { echo "over $(WHEELS_LIMIT_MIB) MiB: see docs/benchmarks.md 'GPU session' for the fallback" >&2; exit 1; }
