#!/usr/bin/env bash
# Builds the benchmark's peers into folders of their own (gitignored), idempotently:
#
#   .venv-peers/        llama-cpp-python with its server extra (python -m llama_cpp.server)
#   .peers/llama-server llama.cpp's own continuous-batching server, built from the llama.cpp source inside the
#                       same llama-cpp-python sdist that .venv's llama.cpp runner is built from, so the two run
#                       the same kernels (GGML_NATIVE: this machine's ISA, as a learner's own build would)
#   .venv-vllm/         vLLM's CPU wheel (Makefile target $(VLLM_STAMP), called by `make bench-peers`)
#
# llama.cpp compiles in about 10 minutes on 2 cores per build (longer niced); its server extra pins FastAPI and
# uvicorn versions of its own, so it stays out of .venv.
#
#   bash bench/make_peers.sh            # or: make bench-peers
#   LLAMA_CPP_PYTHON_VERSION=0.3.36 PYTHON=python3.11 bash bench/make_peers.sh
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${PEERS_VENV:-.venv-peers}"
PEERS="${PEERS_DIR:-.peers}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
JOBS="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
STAMP="$VENV/.installed-llama-cpp-python-$VERSION"
SERVER_STAMP="$PEERS/.llama-server-$VERSION"

if [ -f "$STAMP" ] && "$VENV/bin/python" -c "import llama_cpp, llama_cpp.server" 2>/dev/null; then
    echo "peers ready: $VENV (llama-cpp-python $VERSION)"
else
    test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    echo "building llama-cpp-python $VERSION from source into $VENV (about 10-30 minutes) ..."
    CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" nice -n 19 "$VENV/bin/python" -m pip install --disable-pip-version-check \
        "llama-cpp-python[server]==$VERSION"
    "$VENV/bin/python" -c "import llama_cpp, llama_cpp.server; print('llama-cpp-python', llama_cpp.__version__)"
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
fi

if [ -f "$SERVER_STAMP" ] && [ -x "$PEERS/llama-server" ]; then
    echo "peers ready: $PEERS/llama-server (llama.cpp from llama-cpp-python $VERSION)"
else
    mkdir -p "$PEERS/src"
    if [ ! -f "$PEERS/src/llama_cpp_python-$VERSION.tar.gz" ]; then
        "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
            "llama-cpp-python==$VERSION" -d "$PEERS/src"
    fi
    rm -rf "$PEERS/src/llama_cpp_python-$VERSION"
    tar -xzf "$PEERS/src/llama_cpp_python-$VERSION.tar.gz" -C "$PEERS/src"
    LLAMA="$PEERS/src/llama_cpp_python-$VERSION/vendor/llama.cpp"
    echo "building llama-server (llama.cpp from llama-cpp-python $VERSION) into $PEERS (about 10 minutes) ..."
    cmake -S "$LLAMA" -B "$LLAMA/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DBUILD_SHARED_LIBS=OFF > "$PEERS/cmake.log"
    nice -n 19 cmake --build "$LLAMA/build" --target llama-server -j "$JOBS" > "$PEERS/build.log"
    cp "$LLAMA/build/bin/llama-server" "$PEERS/llama-server"
    rm -rf "$LLAMA/build"
    "$PEERS/llama-server" --version 2>&1 | head -2
    rm -f "$PEERS"/.llama-server-*
    touch "$SERVER_STAMP"
fi
