#!/usr/bin/env bash
# Builds the benchmark's peers into their own environment, .venv-peers (gitignored), idempotently.
#
# llama-cpp-python compiles llama.cpp from source (~10 minutes on 2 cores, longer niced), and its server
# extra pins FastAPI/uvicorn versions of its own: keeping it out of .venv keeps `make test` fast and the
# course's pins untouched. `transformers serve` needs nothing here: it runs from .venv.
#
#   bash bench/make_peers.sh            # or: make bench-peers
#   LLAMA_CPP_PYTHON_VERSION=0.3.36 PYTHON=python3.11 bash bench/make_peers.sh
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${PEERS_VENV:-.venv-peers}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
STAMP="$VENV/.installed-llama-cpp-python-$VERSION"

if [ -f "$STAMP" ] && "$VENV/bin/python" -c "import llama_cpp, llama_cpp.server" 2>/dev/null; then
    echo "peers ready: $VENV (llama-cpp-python $VERSION)"
    exit 0
fi

test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip

# nice + one compile job: the build must not starve notebooks and tests sharing a small machine.
# The default CPU backend (OpenMP, native ISA) is what a learner gets from a plain `pip install`.
echo "building llama-cpp-python $VERSION from source into $VENV (about 10-30 minutes) ..."
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-1}" \
    nice -n 19 "$VENV/bin/python" -m pip install --disable-pip-version-check --no-cache-dir \
    "llama-cpp-python[server]==$VERSION"

"$VENV/bin/python" -c "import llama_cpp, llama_cpp.server; print('llama-cpp-python', llama_cpp.__version__)"
rm -f "$VENV"/.installed-*
touch "$STAMP"
