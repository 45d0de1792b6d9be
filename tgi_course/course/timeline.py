"""A continuous-batching timeline: overlapping streamed requests, seen from the client and, on this course's
server, from the engine's own step record (``GET /engine/steps``).

The client's side works against any OpenAI-compatible server: :func:`staggered_streams` starts each request
once the one before it is streaming, and notes when every piece of text arrived. The server's side exists
only on this course's server (real TGI and vLLM answer 404): :func:`last_step` and :func:`fetch_steps` read
which requests ran in each prefill and decode step, named by the ``id`` of the response the client got.
:func:`plot_timeline` draws both, one row per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .connect import Connection

__all__ = ["ServerStep", "StreamTrace", "fetch_steps", "last_step", "plot_timeline", "shared_steps", "staggered_streams", "steps_of"]

STEPS_ROUTE = "/engine/steps"
PREFILL, DECODE, TOKEN = "#e07b00", "#2f6db5", "#222222"


@dataclass
class StreamTrace:
    """One streamed request as its client saw it; times are this process's ``time.monotonic()``."""

    prompt: str
    sent: float = 0.0
    id: str | None = None  # the chunks' `id`: on this course's server, also the engine's request id
    arrivals: list[float] = field(default_factory=list)  # one per chunk that carried text
    text: str = ""


@dataclass(frozen=True)
class ServerStep:
    """One engine step, its times moved onto the client's clock."""

    step: int
    kind: str  # "prefill" or "decode"
    start: float
    end: float
    request_ids: tuple[str, ...]


async def staggered_streams(
    client: Any, model: str, prompts: Sequence[str], *, start_after: int = 3, max_tokens: int = 32
) -> list[StreamTrace]:
    """Stream one greedy chat request per prompt. Request ``i + 1`` starts when request ``i`` has received
    ``start_after`` pieces of text (or ended), so the requests overlap whatever the server's speed."""
    traces = [StreamTrace(prompt) for prompt in prompts]
    streaming = [asyncio.Event() for _ in prompts]

    async def run(index: int) -> None:
        trace = traces[index]
        try:
            if index:
                await streaming[index - 1].wait()
            trace.sent = time.monotonic()
            stream = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": trace.prompt}], max_tokens=max_tokens, temperature=0, stream=True
            )
            async for chunk in stream:
                trace.id = trace.id or chunk.id
                piece = chunk.choices[0].delta.content if chunk.choices else None
                if piece:
                    trace.arrivals.append(time.monotonic())
                    trace.text += piece
                    if len(trace.arrivals) >= start_after:
                        streaming[index].set()
        finally:
            streaming[index].set()  # never leave the next request waiting, even after an error

    await asyncio.gather(*(run(i) for i in range(len(prompts))))
    return traces


def _get_steps(conn: Connection, since: int, limit: int) -> tuple[httpx.Response, float, float]:
    before = time.monotonic()
    response = httpx.get(f"{conn.url}{STEPS_ROUTE}", params={"since": since, "limit": limit}, headers=conn.headers, timeout=30)
    return response, before, time.monotonic()


def last_step(conn: Connection) -> int | None:
    """The number of the engine's newest step, or None when the server has no step record (TGI, vLLM)."""
    response, _, _ = _get_steps(conn, 0, 1)
    if response.status_code in (404, 405):
        return None
    response.raise_for_status()
    return int(response.json()["last_step"])


def fetch_steps(conn: Connection, since: int = 0) -> list[ServerStep] | None:
    """Every kept step after ``since``, on this process's clock; None when the server has no step record.

    The server's clock is lined up with ours through the answer's ``now``: a ``now`` that falls within our
    call is taken as the same clock (a server on this machine), any other as read halfway through the call.
    """
    steps: list[ServerStep] = []
    while True:
        response, before, after = _get_steps(conn, since, 1024)
        if response.status_code in (404, 405):
            return None
        response.raise_for_status()
        body = response.json()
        shift = 0.0 if before <= body["now"] <= after else (before + after) / 2 - body["now"]
        for s in body["steps"]:
            steps.append(ServerStep(s["step"], s["kind"], s["start"] + shift, s["end"] + shift, tuple(s["request_ids"])))
        if not body["more"] or not body["steps"]:
            return steps
        since = body["steps"][-1]["step"]


def steps_of(trace: StreamTrace, steps: Sequence[ServerStep]) -> list[ServerStep]:
    """The steps that served one request (found by its response id)."""
    return [s for s in steps if trace.id is not None and trace.id in s.request_ids]


def shared_steps(traces: Sequence[StreamTrace], steps: Sequence[ServerStep]) -> list[ServerStep]:
    """The steps that served two or more of the traced requests: the requests were batched together there."""
    ids = {t.id for t in traces if t.id is not None}
    return [s for s in steps if len(ids.intersection(s.request_ids)) >= 2]


def plot_timeline(
    traces: Sequence[StreamTrace], steps: Sequence[ServerStep] | None = None, *, ax: Axes | None = None, dpi: int = 72
) -> Figure:
    """One row per request: a tick for every piece of text its client received and, when ``steps`` are
    given, a bar for every engine step it was in (prefill and decode coloured apart).

    Draws on ``ax``, or on a new pyplot figure (shown by ``plt.show()`` or at the end of a notebook cell);
    returns the figure."""
    if ax is None:
        import matplotlib.pyplot as plt  # only here: importing pyplot picks a GUI backend, which a library should not do early

        fig, ax = plt.subplots(figsize=(8, 0.7 + 0.5 * len(traces)), dpi=dpi)
    else:
        fig = ax.figure
    origin = min(t.sent for t in traces)
    for row, trace in enumerate(traces):
        y = len(traces) - 1 - row  # the first request on top
        if steps is not None:
            for kind, colour in (("prefill", PREFILL), ("decode", DECODE)):
                bars = [(s.start - origin, max(s.end - s.start, 1e-3)) for s in steps_of(trace, steps) if s.kind == kind]
                # White edges keep back-to-back steps apart: each bar is one step.
                ax.broken_barh(bars, (y - 0.32, 0.36), facecolors=colour, edgecolors="white", linewidth=0.4,
                               label=f"{kind} step" if row == 0 else None)
        ax.plot([a - origin for a in trace.arrivals], [y + 0.22] * len(trace.arrivals), "|", color=TOKEN, markersize=7,
                label="text received" if row == 0 else None)
        ax.plot([trace.sent - origin], [y], ">", color=TOKEN, markersize=5, label="request sent" if row == 0 else None)
    ax.set_yticks(range(len(traces)), [f"request {len(traces) - y}" for y in range(len(traces))])
    ax.set_ylim(-0.7, len(traces) - 0.3)
    ax.set_xlim(left=-0.02 * max(a - origin for t in traces for a in t.arrivals or [t.sent]))
    ax.set_xlabel("seconds since the first request was sent")
    where = "engine steps (bars) and text received (ticks)" if steps is not None else "text received by the client (no step record on this server)"
    ax.set_title(where, fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig  # type: ignore[return-value]
