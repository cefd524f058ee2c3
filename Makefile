# make install | make demo | make test   (a fresh machine needs nothing else)
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Stamp keyed by pyproject.toml: editing the dependencies re-runs the install, nothing else does.
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
NPROC ?= 2

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: this pair is on local disk here; an unpinned torch drags a multi-GB download.
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e ".[dev,onnx]"
	# DeepSpeed JIT-compiles its CPU communication op on first use (~90 s with g++): do it once here,
	# into the venv, so tests and CPU runs that set TORCH_EXTENSIONS_DIR to it never pay it again.
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
	  --workers 1 --log-every 24 --output-dir $$out/train; \
	$(BIN)/yolofuse-scale val --weights $$out/train/weights/best.pt --data $$out/data/data.yaml --imgsz 128; \
	echo "weights: $$out/train/weights/{best,last}.pt  metrics: $$out/train/metrics.json  log: $$out/train/train_log.jsonl"

test: install
	$(BIN)/python -m pytest tests -q --durations=25

lint: install
	$(BIN)/ruff check yolofuse_scale tests benchmarks train.py

clean:
	rm -rf runs .pytest_cache
