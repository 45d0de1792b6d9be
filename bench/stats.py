"""Per-stream timings and their summary per concurrency level. Standard library only.

Definitions (the same for every target, HTTP or in-process):
  * TTFT: request sent -> first piece of generated text received.
  * inter-token latency (ITL): gap between consecutive pieces of text. A server that packs several
    tokens in one chunk shows fewer, longer gaps; token counts come from the server's usage when it
    reports one, so rates stay right either way.
  * decode tok/s of a stream: (tokens - 1) / (last piece - first piece), what a reader sees while the
    text is streaming; end-to-end tok/s: tokens / (done - sent), TTFT included.
  * aggregate tok/s: all tokens generated at a level / wall time of the level.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StreamSample:
    """One request as the client saw it: perf_counter stamps and the tokens it generated."""

    sent: float
    stamps: list[float]  # arrival of each piece of generated text
    done: float
    tokens: int
    token_source: str  # "usage" (the server's count) or "chunks" (one token per piece of text)
    prompt_tokens: int | None = None

    @property
    def ttft(self) -> float:
        return (self.stamps[0] if self.stamps else self.done) - self.sent

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]

    @property
    def decode_tok_s(self) -> float | None:
        if self.tokens < 2 or len(self.stamps) < 2 or self.stamps[-1] <= self.stamps[0]:
            return None
        return (self.tokens - 1) / (self.stamps[-1] - self.stamps[0])

    @property
    def e2e_tok_s(self) -> float:
        return self.tokens / (self.done - self.sent) if self.done > self.sent else 0.0


@dataclass
class LevelResult:
    """One target at one concurrency: the figures the report, the plots and the ratios use."""

    target: str
    concurrency: int
    rounds: int
    requests: int
    completed: int
    errors: int
    tokens: int
    wall_s: float
    aggregate_tok_s: float
    per_stream_decode_tok_s: float | None  # mean over streams
    per_stream_e2e_tok_s: float | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    itl_p50_ms: float | None
    itl_p95_ms: float | None
    e2e_p50_s: float | None
    tokens_per_stream_min: int | None
    tokens_per_stream_max: int | None
    prompt_tokens_mean: float | None
    token_source: str
    client_cpu_s: float  # CPU the measuring client spent: it shares the machine with the server
    load_avg_1m_before: float | None
    load_avg_1m_after: float | None
    error_messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in [0, 1]); None for no data, so the JSON never holds NaN."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def load_avgs() -> list[float] | None:
    """The 1, 5 and 15-minute load averages, rounded, for results files (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine(**extra: Any) -> dict[str, Any]:
    """What a results file says about the machine a run took its figures on."""
    import platform

    return {"hostname": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu": cpu_model(), "cpu_count": os.cpu_count(), **extra}  # fmt: skip


def cpu_model() -> str:
    from pathlib import Path
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_avg_1m() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # not on every platform
        return None


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def summarise(
    target: str,
    concurrency: int,
    rounds: int,
    samples: list[StreamSample],
    errors: list[str],
    wall_s: float,
    client_cpu_s: float,
    load_before: float | None,
    load_after: float | None,
) -> LevelResult:
    tokens = sum(s.tokens for s in samples)
    gaps = [g for s in samples for g in s.gaps]
    ttfts = [s.ttft for s in samples]
    decode = [r for s in samples if (r := s.decode_tok_s) is not None]
    prompt_tokens = [float(s.prompt_tokens) for s in samples if s.prompt_tokens is not None]
    sources = sorted({s.token_source for s in samples}) or ["none"]
    return LevelResult(
        target=target,
        concurrency=concurrency,
        rounds=rounds,
        requests=len(samples) + len(errors),
        completed=len(samples),
        errors=len(errors),
        tokens=tokens,
        wall_s=wall_s,
        aggregate_tok_s=tokens / wall_s if wall_s > 0 else 0.0,
        per_stream_decode_tok_s=_mean(decode),
        per_stream_e2e_tok_s=_mean([s.e2e_tok_s for s in samples]),
        ttft_p50_s=percentile(ttfts, 0.5),
        ttft_p95_s=percentile(ttfts, 0.95),
        itl_p50_ms=_scaled(percentile(gaps, 0.5), 1000),
        itl_p95_ms=_scaled(percentile(gaps, 0.95), 1000),
        e2e_p50_s=percentile([s.done - s.sent for s in samples], 0.5),
        tokens_per_stream_min=min((s.tokens for s in samples), default=None),
        tokens_per_stream_max=max((s.tokens for s in samples), default=None),
        prompt_tokens_mean=_mean(prompt_tokens),
        token_source="+".join(sources),
        client_cpu_s=client_cpu_s,
        load_avg_1m_before=load_before,
        load_avg_1m_after=load_after,
        error_messages=sorted(set(errors))[:5],
    )
