"""The FastAPI application: middleware (auth, payload limit, CORS), error handlers and routes.

:func:`build_app` takes an already-loaded model so tests can build apps cheaply; :func:`create_app` loads
the model named by the settings first.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..config import ServerConfig
from ..engine import BatchLimits, Engine
from ..engine.constraints import Grammars
from ..models import LoadedModel, load, resolve
from .errors import install_error_handlers
from .metrics import Metrics
from .routes import chat, completions, course, generate, meta, sagemaker
from .serving import ModelFacts
from .admission import Admission, ValidationWorkers
from .state import AppState
from .validation import Validator

log = logging.getLogger(__name__)


class PayloadLimit:
    """413 for bodies over PAYLOAD_LIMIT, whether announced by Content-Length or sent chunked."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(send)
            return
        # Read the body here, up to the limit, then replay it: a body sent chunked has no length to check,
        # and an exception raised inside the app's receive would be reported as a parse error (400).
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > self.limit:
                await self._reject(send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            {"error": f"Payload too large: the request body exceeds PAYLOAD_LIMIT={self.limit} bytes", "error_type": "payload_too_large"}
        ).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def build_app(config: ServerConfig, loaded: LoadedModel) -> FastAPI:
    """An app around a loaded model; the engine starts with the app and stops with it."""
    config = config.resolve_limits(loaded.max_position_embeddings)
    limits = BatchLimits(
        max_batch_prefill_tokens=config.max_batch_prefill_tokens,  # type: ignore[arg-type]
        max_batch_total_tokens=config.max_batch_total_tokens,  # type: ignore[arg-type]
        max_batch_size=config.max_batch_size,
    )
    engine = Engine(None, loaded.tokenizer, loaded.eos_token_ids, limits, runner=loaded.create_runner(limits, config.threads))
    name = config.served_model_name or loaded.name
    admission = Admission(config.max_concurrent_requests)
    metrics = Metrics(engine)
    metrics.in_flight.set_function(lambda: admission.in_flight)
    state = AppState(
        config=config,
        loaded=loaded,
        engine=engine,
        validator=Validator(config, loaded.tokenizer, Grammars(loaded.tokenizer, loaded.logits_width or len(loaded.tokenizer), sorted(loaded.eos_token_ids))),
        metrics=metrics,
        facts=ModelFacts(name=name, fingerprint=_fingerprint(loaded)),
        admission=admission,
        workers=ValidationWorkers(config.validation_workers),
    )

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        engine.start()
        try:
            yield
        finally:
            engine.stop()
            engine.runner.close()  # llama.cpp's KV cache is allocated up front: give it back with the app
            state.workers.shutdown()

    app = FastAPI(
        title="tgi-course Messages API",
        version=__version__,
        description="A local, offline server with Text Generation Inference's routes and the OpenAI Chat Completions API.",
        lifespan=lifespan,
    )
    app.state.tgi = state
    install_error_handlers(app)
    for module in (chat, completions, generate, sagemaker, meta, course):
        app.include_router(module.router)
    if config.cors_allow_origin:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(config.cors_allow_origin), allow_methods=["*"], allow_headers=["*"]
        )
    app.add_middleware(PayloadLimit, limit=config.payload_limit)
    return app


def _fingerprint(loaded: LoadedModel) -> str:
    """``system_fingerprint``: what changes greedy outputs (version, device, dtype, weight format)."""
    parts = [f"tgi-course-{__version__}", loaded.device.type]
    if loaded.backend != "transformers":
        parts.append(loaded.backend)
    elif loaded.quantize:
        parts.append(str(loaded.dtype).removeprefix("torch."))
    parts.append(loaded.weight_format)
    return "-".join(parts)


def create_app(config: ServerConfig) -> FastAPI:
    config.check()
    loaded = load(
        resolve(config.model_id),
        device=config.device,
        dtype=config.dtype,
        revision=config.revision,
        quantize=config.quantize,
        backend=config.backend,
        gguf_weights=config.gguf_weights,
    )
    return build_app(config, loaded)
