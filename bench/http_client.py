"""The workload against any OpenAI-compatible ``/v1/chat/completions``, streamed over SSE.

httpx and a hand-rolled SSE reader rather than the ``openai`` client: the client shares two cores with the
server it measures, and validating every chunk into pydantic objects would take CPU from the server at
64 streams. The request body is the one the official clients send.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from .stats import LevelResult, StreamSample, load_avg_1m, summarise
from .workload import Workload

T = TypeVar("T")


@dataclass(frozen=True)
class Endpoint:
    """Where a server listens and what its requests must carry."""

    base_url: str  # ends in /v1
    model: str
    api_key: str = "-"
    # Sent only to servers known to accept them: ours takes vLLM's ignore_eos, so every stream decodes
    # exactly max_tokens. Peers get the plain body and are measured on the tokens they actually generate.
    extra_body: dict[str, Any] = field(default_factory=dict)
    include_usage: bool = True  # ask for usage in the last chunk (stream_options); counted from chunks if absent


class StreamError(RuntimeError):
    pass


def _body(endpoint: Endpoint, messages: list[dict[str, str]], max_tokens: int, temperature: float) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": endpoint.model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": True,
    }
    if endpoint.include_usage:
        body["stream_options"] = {"include_usage": True}
    body.update(endpoint.extra_body)
    return body


async def one_stream(client: httpx.AsyncClient, endpoint: Endpoint, messages: list[dict[str, str]], max_tokens: int, temperature: float) -> StreamSample:
    """Send one streamed chat request and time every piece of text that comes back."""
    body = _body(endpoint, messages, max_tokens, temperature)
    stamps: list[float] = []
    usage: dict[str, Any] | None = None
    sent = time.perf_counter()
    async with client.stream("POST", f"{endpoint.base_url}/chat/completions", json=body) as response:
        if response.status_code != 200:
            detail = (await response.aread()).decode(errors="replace")[:200]
            raise StreamError(f"HTTP {response.status_code}: {detail}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, comments, "event:" lines
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:  # some servers report failures inside an open stream
                raise StreamError(f"error event: {str(chunk['error'])[:200]}")
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or ():
                if (choice.get("delta") or {}).get("content"):
                    stamps.append(time.perf_counter())
                    break
    done = time.perf_counter()
    if usage and usage.get("completion_tokens") is not None:
        return StreamSample(sent, stamps, done, int(usage["completion_tokens"]), "usage", usage.get("prompt_tokens"))
    return StreamSample(sent, stamps, done, len(stamps), "chunks")


async def _burst(client: httpx.AsyncClient, endpoint: Endpoint, workload: Workload, size: int, max_tokens: int, offset: int) -> tuple[list[StreamSample], list[str]]:
    """``size`` requests sent at once, each with its own prompt; returns the samples and error messages."""
    calls = [one_stream(client, endpoint, workload.messages(offset + i), max_tokens, workload.temperature) for i in range(size)]
    samples: list[StreamSample] = []
    errors: list[str] = []
    for outcome in await asyncio.gather(*calls, return_exceptions=True):
        if isinstance(outcome, BaseException):
            errors.append(f"{outcome.__class__.__name__}: {outcome}"[:300])
        else:
            samples.append(outcome)
    return samples, errors


def _client(endpoint: Endpoint, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        headers={"Authorization": f"Bearer {endpoint.api_key}"},
        timeout=httpx.Timeout(900.0, connect=30.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


async def warm_up(endpoint: Endpoint, workload: Workload) -> list[str]:
    """Short requests, not measured: first-call costs (allocations, lazy imports, caches) land here."""
    if workload.warmup_requests <= 0:
        return []
    async with _client(endpoint, workload.warmup_requests) as client:
        _, errors = await _burst(client, endpoint, workload, workload.warmup_requests, workload.warmup_max_tokens, 0)
    return errors


async def run_level(target: str, endpoint: Endpoint, workload: Workload, concurrency: int) -> LevelResult:
    """``workload.rounds_for(concurrency)`` bursts of ``concurrency`` simultaneous requests, back to back."""
    samples: list[StreamSample] = []
    errors: list[str] = []
    load_before = load_avg_1m()
    cpu_before = time.process_time()
    async with _client(endpoint, concurrency) as client:
        started = time.perf_counter()
        for round_index in range(workload.rounds_for(concurrency)):
            got, failed = await _burst(client, endpoint, workload, concurrency, workload.max_tokens, round_index * concurrency)
            samples += got
            errors += failed
        wall = time.perf_counter() - started
    return summarise(target, concurrency, workload.rounds_for(concurrency), samples, errors, wall, time.process_time() - cpu_before, load_before, load_avg_1m())


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, also from code that already runs an event loop (a notebook): then in a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def run_levels(target: str, endpoint: Endpoint, workload: Workload, levels: tuple[int, ...]) -> tuple[list[LevelResult], list[str]]:
    """Warm up once, then every level in order. Returns the levels and any warm-up errors."""
    warm_errors = _run(warm_up(endpoint, workload))
    return [_run(run_level(target, endpoint, workload, c)) for c in levels], warm_errors
