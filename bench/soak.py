"""Soak benchmark (issue 12): sustained concurrent chat load, with clients that walk away, to find leaks.

    .venv/bin/python -m bench.soak                                  # 64 workers, 5 min, a fresh LocalServer
    .venv/bin/python -m bench.soak --duration 60 --concurrency 16   # shorter, lighter
    .venv/bin/python -m bench.soak --url http://127.0.0.1:3000      # a server already running (RSS if it is local)
    .venv/bin/python -m bench.soak --mix complete=50,early=20,mid=20,nonstream=10 --nonstream-timeout 1.0

Each of ``--concurrency`` workers loops for ``--duration`` seconds: pick a kind of client, send one chat
request, handle it as that client would, next. Kinds (shares set by ``--mix``, default 60/15/15/10):

  * complete:  streamed, read to the end (``[DONE]``); timed (TTFT, full-request latency).
  * early:     streamed, the client leaves before reading a byte of the body: it cancels the request at a
               random moment in the first ``--early-max`` seconds, or closes the response as soon as its
               headers arrive, whichever comes first.
  * mid:       streamed, closed after 1 to 4 pieces of text (never the whole answer).
  * nonstream: not streamed, with a total client timeout of ``--nonstream-timeout`` seconds.

Server errors (target 0): any non-200, any error event, any stream read to the end without ``[DONE]``, a
broken connection or a malformed body -- except what our own abandons cause. When the time is up, the
workers finish their current request (``--drain`` seconds at most), then the server should be idle:
after ``--settle`` seconds ``/metrics`` must show ``tgi_batch_current_size``, ``tgi_queue_size`` and
``tgi_request_in_flight`` at 0, and 16 new concurrent requests must all get 200 (no leaked admission slot).

The server's RSS (``VmRSS`` of ``/proc/<pid>/status``), threads and open file descriptors are sampled every
``--sample-every`` seconds, with its gauges, so "RSS flat after warm-up" can be judged: the report gives
RSS at the end of warm-up (``--warmup`` seconds and ``--concurrency`` completed streams, whichever is later)
and once the load is over, and the slope between. Prints tables and writes bench/results/soak-<UTC time>.json.
Nothing is asserted on speed; ``--strict`` exits 2 if a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import re
import signal
import statistics
import sys
import time
from collections import Counter
from contextlib import ExitStack, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from .report import RESULTS, _fmt, write_record
from .stats import load_avgs, machine, percentile
from .workload import Workload

KINDS = ("complete", "early", "mid", "nonstream")
DEFAULT_MIX = "complete=60,early=15,mid=15,nonstream=10"
GAUGES = ("tgi_batch_current_size", "tgi_queue_size", "tgi_request_in_flight")
# Outcomes that are the client's own doing: never counted as server errors.
OWN = {"abandoned_before_headers", "abandoned_after_headers", "abandoned_mid_stream", "nonstream_timeout", "cut_at_end"}
SERVER_ERROR = "server_error"
PROBE_REQUESTS = 16
WORKLOAD = Workload()  # the harness's prompts: 16 distinct ones, so no two neighbours share a prefix


# ------------------------------------------------------------------------------------------------
# What one request came to
# ------------------------------------------------------------------------------------------------
@dataclass
class Result:
    kind: str
    outcome: str
    sent: float  # seconds since the load started
    ended: float
    ttft: float | None = None  # request sent -> first piece of text (streams that got one)
    tokens: int = 0  # completion tokens: the server's usage when it gave one, else pieces of text received
    status: int | None = None
    error: str | None = None  # what went wrong, for server errors
    headers_s: float | None = None  # early leavers that saw the headers: request sent -> headers


@dataclass
class Target:
    root: str  # http://host:port, no /v1
    model: str
    api_key: str
    extra_body: dict[str, Any]
    pid: int | None  # the server process, for RSS; None when it cannot be found
    pid_how: str
    log: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def chat_url(self) -> str:
        return f"{self.root}/v1/chat/completions"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@dataclass(frozen=True)
class Plan:
    duration: float
    concurrency: int
    max_tokens: int
    mix: dict[str, float]  # kind -> share, summing to 1
    nonstream_timeout: float
    early_max: float
    warmup: float
    sample_every: float
    drain: float
    settle: float
    idle_wait: float
    seed: int
    probe_requests: int = PROBE_REQUESTS


def parse_mix(text: str) -> dict[str, float]:
    """``complete=60,early=15,mid=15,nonstream=10`` -> shares summing to 1 (any positive scale works)."""
    weights: dict[str, float] = dict.fromkeys(KINDS, 0.0)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in weights or not value:
            raise argparse.ArgumentTypeError(f"--mix wants KIND=SHARE with KIND among {', '.join(KINDS)}; got {part!r}")
        weights[name] = float(value)
    total = sum(weights.values())
    if total <= 0 or any(w < 0 for w in weights.values()):
        raise argparse.ArgumentTypeError(f"--mix shares must be >= 0 and not all 0; got {text!r}")
    return {k: w / total for k, w in weights.items()}


# ------------------------------------------------------------------------------------------------
# The four kinds of client
# ------------------------------------------------------------------------------------------------
def _body(target: Target, index: int, max_tokens: int, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": target.model, "messages": WORKLOAD.messages(index), "max_tokens": max_tokens, "temperature": 0.0, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    body.update(target.extra_body)
    return body


def _describe(error: BaseException) -> str:
    return f"{error.__class__.__name__}: {error}"[:300]


async def _http_error(response: httpx.Response) -> str:
    with suppress(Exception):
        detail = (await response.aread()).decode(errors="replace")[:200]
        return f"HTTP {response.status_code}: {detail}"
    return f"HTTP {response.status_code}"


class Clock:
    def __init__(self) -> None:
        self.zero = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.zero


async def _read_stream(response: httpx.Response, sent: float, clock: Clock, stop_after: int | None) -> tuple[str, float | None, int, str | None]:
    """Read SSE until [DONE] (or ``stop_after`` pieces of text): (outcome, ttft, tokens, error)."""
    first: float | None = None
    pieces = 0
    usage_tokens: int | None = None
    error_event = False
    async for line in response.aiter_lines():
        if line.startswith("event:") and line[6:].strip() == "error":
            error_event = True  # its data line follows
            continue
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            if error_event:
                return SERVER_ERROR, first, pieces, "error event before [DONE]"
            tokens = usage_tokens if usage_tokens is not None else pieces
            return ("completed" if stop_after is None else "finished_before_abandon"), first, tokens, None
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            return SERVER_ERROR, first, pieces, f"malformed SSE data: {data[:120]!r}"
        if error_event or (isinstance(chunk, dict) and "error" in chunk):
            return SERVER_ERROR, first, pieces, f"error event: {str(chunk.get('error', chunk) if isinstance(chunk, dict) else chunk)[:200]}"
        if not isinstance(chunk, dict):
            return SERVER_ERROR, first, pieces, f"unexpected SSE data: {data[:120]!r}"
        if (chunk.get("usage") or {}).get("completion_tokens") is not None:
            usage_tokens = int(chunk["usage"]["completion_tokens"])
        for choice in chunk.get("choices") or ():
            if (choice.get("delta") or {}).get("content"):
                pieces += 1
                if first is None:
                    first = clock.now() - sent
                break
        if stop_after is not None and pieces >= stop_after:
            return "abandoned_mid_stream", first, pieces, None
    return SERVER_ERROR, first, pieces, "stream ended without [DONE]"


async def streamed(client: httpx.AsyncClient, target: Target, plan: Plan, index: int, clock: Clock, stop_after: int | None) -> Result:
    """A complete reader (``stop_after`` None) or a mid-stream leaver."""
    kind = "complete" if stop_after is None else "mid"
    sent = clock.now()
    try:
        request = client.build_request("POST", target.chat_url, json=_body(target, index, plan.max_tokens, True))
        response = await client.send(request, stream=True)
        try:
            if response.status_code != 200:
                return Result(kind, SERVER_ERROR, sent, clock.now(), status=response.status_code, error=await _http_error(response))
            outcome, ttft, tokens, error = await _read_stream(response, sent, clock, stop_after)
        finally:
            await response.aclose()  # before [DONE]: closes the connection, which is the point of "mid"
        return Result(kind, outcome, sent, clock.now(), ttft, tokens, 200, error)
    except httpx.HTTPError as exc:  # refused, reset, timed out (read timeout = a hung stream)
        return Result(kind, SERVER_ERROR, sent, clock.now(), error=_describe(exc))


async def early(client: httpx.AsyncClient, target: Target, plan: Plan, index: int, clock: Clock, rng: random.Random) -> Result:
    """Leave before a byte of the body: cancel while waiting for headers, or close right after them."""
    sent = clock.now()
    request = client.build_request("POST", target.chat_url, json=_body(target, index, plan.max_tokens, True))
    sending = asyncio.ensure_future(client.send(request, stream=True))
    done, _ = await asyncio.wait({sending}, timeout=rng.uniform(0.0, plan.early_max))
    if not done:
        sending.cancel()
        await asyncio.wait({sending})
        if not sending.cancelled() and sending.exception() is None:  # the headers won the race after all
            await sending.result().aclose()
        return Result("early", "abandoned_before_headers", sent, clock.now())
    try:
        response = sending.result()
    except httpx.HTTPError as exc:
        return Result("early", SERVER_ERROR, sent, clock.now(), error=_describe(exc))
    try:
        if response.status_code != 200:
            return Result("early", SERVER_ERROR, sent, clock.now(), status=response.status_code, error=await _http_error(response))
    finally:
        await response.aclose()
    return Result("early", "abandoned_after_headers", sent, clock.now(), status=200, headers_s=clock.now() - sent)


async def nonstream(client: httpx.AsyncClient, target: Target, plan: Plan, index: int, clock: Clock) -> Result:
    sent = clock.now()
    try:
        async with asyncio.timeout(plan.nonstream_timeout):
            response = await client.post(target.chat_url, json=_body(target, index, plan.max_tokens, False))
    except TimeoutError:
        return Result("nonstream", "nonstream_timeout", sent, clock.now())
    except httpx.HTTPError as exc:
        return Result("nonstream", SERVER_ERROR, sent, clock.now(), error=_describe(exc))
    ended = clock.now()
    if response.status_code != 200:
        return Result("nonstream", SERVER_ERROR, sent, ended, status=response.status_code, error=f"HTTP {response.status_code}: {response.text[:200]}")
    try:
        body = response.json()
        content = body["choices"][0]["message"]["content"]
        tokens = int((body.get("usage") or {}).get("completion_tokens") or 0)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return Result("nonstream", SERVER_ERROR, sent, ended, status=200, error=f"malformed body ({_describe(exc)}): {response.text[:120]}")
    if content is None:
        return Result("nonstream", SERVER_ERROR, sent, ended, status=200, error="no message content")
    return Result("nonstream", "nonstream_ok", sent, ended, tokens=tokens, status=200)


async def worker(number: int, client: httpx.AsyncClient, target: Target, plan: Plan, clock: Clock, stop: asyncio.Event, results: list[Result]) -> None:
    rng = random.Random(plan.seed * 1_000_003 + number)
    kinds, weights = list(plan.mix), list(plan.mix.values())
    index = number  # prompt index: neighbours differ
    mid_most = max(1, min(4, plan.max_tokens - 1))
    while not stop.is_set():
        kind = rng.choices(kinds, weights)[0]
        sent = clock.now()
        try:
            if kind == "complete":
                result = await streamed(client, target, plan, index, clock, None)
            elif kind == "mid":
                result = await streamed(client, target, plan, index, clock, rng.randint(1, mid_most))
            elif kind == "early":
                result = await early(client, target, plan, index, clock, rng)
            else:
                result = await nonstream(client, target, plan, index, clock)
        except asyncio.CancelledError:  # the drain ran out: the harness, not the server, cut this one
            results.append(Result(kind, "cut_at_end", sent, clock.now()))
            raise
        except Exception as exc:  # anything unforeseen is reported, never silently ends a worker
            result = Result(kind, SERVER_ERROR, sent, clock.now(), error=f"unexpected {_describe(exc)}")
        results.append(result)
        index += plan.concurrency
        if result.outcome == SERVER_ERROR:
            await asyncio.sleep(0.05)  # a dead server must not turn the workers into a busy loop


# ------------------------------------------------------------------------------------------------
# The server process and its gauges
# ------------------------------------------------------------------------------------------------
def proc_status(pid: int) -> dict[str, int] | None:
    """VmRSS / VmHWM (KiB), threads and open file descriptors of ``pid``; None if it is gone or not ours."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    with suppress(OSError):
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    with suppress(OSError):
        out["children"] = sum(len(Path(f"/proc/{pid}/task/{t}/children").read_text().split()) for t in os.listdir(f"/proc/{pid}/task"))
    return out if "VmRSS" in out else None


def pid_listening_on(port: int) -> int | None:
    """The local process that listens on TCP ``port`` (through /proc; only processes we may inspect)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                with suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(proc.name)
        except OSError:
            continue
    return None


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (labels as the server wrote them)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not (m := _SAMPLE.match(line)):
            continue
        with suppress(ValueError):
            values[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return values


async def scrape(client: httpx.AsyncClient, target: Target) -> dict[str, float] | None:
    try:
        response = await client.get(f"{target.root}/metrics", headers=target.headers, timeout=10)
        return parse_metrics(response.text) if response.status_code == 200 else None
    except httpx.HTTPError:
        return None


def gauges(metrics: dict[str, float] | None) -> dict[str, float | None]:
    return {g: (metrics or {}).get(g) for g in GAUGES}


def counters(metrics: dict[str, float] | None) -> dict[str, float]:
    """The request counters (received, succeeded, failed by route and kind)."""
    prefixes = ("tgi_request_count", "tgi_request_success", "tgi_request_failure")
    return {k: v for k, v in (metrics or {}).items() if k.startswith(prefixes) and not k.split("{")[0].endswith("_created")}


async def sampler(target: Target, plan: Plan, clock: Clock, samples: list[dict[str, Any]], done: asyncio.Event, stop: asyncio.Event) -> None:
    """RSS, threads, fds and the gauges every ``plan.sample_every`` s until ``done``; ``stop`` if the server dies."""
    async with httpx.AsyncClient() as client:
        while True:
            samples.append(await sample(client, target, clock))
            if target.pid and "rss_mib" not in samples[-1] and any("rss_mib" in s for s in samples):
                samples[-1]["label"] = "server gone"
                print(f"[soak] {time.strftime('%H:%M:%S')} the server process {target.pid} is gone: stopping the load", file=sys.stderr, flush=True)
                stop.set()
            with suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), plan.sample_every)
                return


async def sample(client: httpx.AsyncClient, target: Target, clock: Clock, label: str | None = None) -> dict[str, Any]:
    status = proc_status(target.pid) if target.pid else None
    point: dict[str, Any] = {"t": round(clock.now(), 2)}
    if label:
        point["label"] = label
    if status:
        point.update(rss_mib=round(status["VmRSS"] / 1024, 1), hwm_mib=round(status.get("VmHWM", 0) / 1024, 1),
                     threads=status.get("Threads"), fds=status.get("fds"), children=status.get("children"))  # fmt: skip
    point.update(gauges(await scrape(client, target)))
    return point


# ------------------------------------------------------------------------------------------------
# After the load: is the server idle again?
# ------------------------------------------------------------------------------------------------
async def probe(target: Target, requests: int, max_tokens: int) -> dict[str, Any]:
    """``requests`` new streamed requests at once, read to the end: all 200 with [DONE] if no slot leaked."""
    plan = Plan(0, requests, max_tokens, {}, 0, 0, 0, 0, 0, 0, 0, 0)
    clock = Clock()
    limits = httpx.Limits(max_connections=requests, max_keepalive_connections=requests)
    async with httpx.AsyncClient(headers=target.headers, timeout=httpx.Timeout(120.0, connect=30.0), limits=limits) as client:
        results = await asyncio.gather(*(streamed(client, target, plan, i, clock, None) for i in range(requests)))
    statuses = Counter(str(r.status) for r in results)
    ok = sum(r.outcome == "completed" for r in results)
    return {
        "requests": requests,
        "max_tokens": max_tokens,
        "status_200": sum(r.status == 200 for r in results),
        "completed": ok,
        "statuses": dict(statuses),
        "errors": sorted({r.error for r in results if r.error})[:5],
        "seconds": round(clock.now(), 2),
        "passed": ok == requests,
    }


async def idle_check(target: Target, plan: Plan, clock: Clock) -> dict[str, Any]:
    await asyncio.sleep(plan.settle)
    async with httpx.AsyncClient() as client:
        first = gauges(await scrape(client, target))
        last, waited = first, 0.0
        started = time.perf_counter()
        while any(v != 0 for v in last.values()) and waited < plan.idle_wait:
            await asyncio.sleep(1.0)
            last = gauges(await scrape(client, target))
            waited = time.perf_counter() - started
        after = await sample(client, target, clock, "idle")
    return {
        "settle_s": plan.settle,
        "gauges_after_settle": first,
        "gauges": last,
        "extra_wait_s": round(waited, 1),
        "idle": all(v == 0 for v in last.values()),
        "idle_after_settle": all(v == 0 for v in first.values()),
        "sample": after,
    }


# ------------------------------------------------------------------------------------------------
# Summaries
# ------------------------------------------------------------------------------------------------
def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def summarise_results(results: list[Result], plan: Plan, load_s: float) -> dict[str, Any]:
    by_kind: dict[str, dict[str, int]] = {k: {} for k in KINDS}
    for r in results:
        by_kind[r.kind][r.outcome] = by_kind[r.kind].get(r.outcome, 0) + 1
    completed = [r for r in results if r.outcome == "completed"]
    nonstream_ok = [r for r in results if r.outcome == "nonstream_ok"]
    errors = [r for r in results if r.outcome == SERVER_ERROR]
    latencies = [r.ended - r.sent for r in completed]
    ttfts = [r.ttft for r in completed if r.ttft is not None]
    tokens_completed = sum(r.tokens for r in completed)
    tokens_all = sum(r.tokens for r in results)
    messages = Counter(f"{r.kind}: {r.error}" for r in errors)
    return {
        "requests": len(results),
        "by_kind": by_kind,
        "by_outcome": dict(Counter(r.outcome for r in results)),
        "server_errors": len(errors),
        "server_errors_by_message": [{"message": m, "count": c} for m, c in messages.most_common(10)],
        "server_errors_first": [asdict(r) for r in sorted(errors, key=lambda r: r.ended)[:5]],
        "completed_streams": len(completed),
        "latency_p50_s": _r(percentile(latencies, 0.5)),
        "latency_p99_s": _r(percentile(latencies, 0.99)),
        "ttft_p50_s": _r(percentile(ttfts, 0.5)),
        "ttft_p99_s": _r(percentile(ttfts, 0.99)),
        "nonstream_ok": len(nonstream_ok),
        "early_headers_p50_s": _r(percentile([r.headers_s for r in results if r.headers_s is not None], 0.5), 4),
        "nonstream_latency_p50_s": _r(percentile([r.ended - r.sent for r in nonstream_ok], 0.5)),
        "tokens_per_stream_min": min((r.tokens for r in completed), default=None),
        "tokens_per_stream_max": max((r.tokens for r in completed), default=None),
        "tokens_completed": tokens_completed,
        "tokens_received": tokens_all,  # partial streams and whole answers included
        "load_s": round(load_s, 2),
        "tokens_per_s_completed": _r(tokens_completed / load_s if load_s > 0 else 0.0, 1),
        "tokens_per_s_received": _r(tokens_all / load_s if load_s > 0 else 0.0, 1),
        "requests_per_s": _r(len(results) / load_s if load_s > 0 else 0.0, 2),
    }


def _slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB), in MiB per minute."""
    if len(points) < 2:
        return None
    mean_t = statistics.fmean(t for t, _ in points)
    mean_v = statistics.fmean(v for _, v in points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return None
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


def warmup_end(results: list[Result], plan: Plan) -> float | None:
    """When warm-up is over: ``plan.warmup`` s have passed and ``concurrency`` streams have completed (so the
    largest batch has been allocated at least once). None if that many never completed."""
    ends = sorted(r.ended for r in results if r.outcome == "completed")
    if len(ends) < plan.concurrency:
        return None
    return max(plan.warmup, ends[plan.concurrency - 1])


def summarise_rss(samples: list[dict[str, Any]], warm_t: float | None, load_end: float) -> dict[str, Any]:
    """RSS at warm-up end vs once the load is over (the workers' last requests done), and the slope between."""
    with_rss = [s for s in samples if s.get("rss_mib") is not None]
    if not with_rss:
        return {"available": False}
    loaded = [s for s in with_rss if s.get("label") not in ("idle", "after probe")]
    end = next((s for s in loaded if s.get("label") == "drained"), loaded[-1])
    at_load_end = next((s for s in loaded if s.get("label") == "load end"), None)
    reached = warm_t is not None and warm_t <= load_end
    # Not reached: the run was too short for this machine; compare from the end of the load on, and say so.
    start_t = warm_t if reached else (at_load_end or end)["t"]
    warm = next((s for s in loaded if start_t <= s["t"] <= end["t"]), end)
    after = [s for s in loaded if warm["t"] <= s["t"] <= end["t"]]
    growth = end["rss_mib"] - warm["rss_mib"]
    return {
        "available": True,
        "warmup_reached": reached,
        "warmup_end_wanted_t": None if warm_t is None else round(warm_t, 2),
        "start_mib": with_rss[0]["rss_mib"],
        "warmup_end_t": warm["t"],
        "warmup_end_mib": warm["rss_mib"],
        "load_end_mib": at_load_end["rss_mib"] if at_load_end else None,
        "end_t": end["t"],
        "end_mib": end["rss_mib"],
        "growth_after_warmup_mib": round(growth, 1),
        "growth_after_warmup_pct": round(100 * growth / warm["rss_mib"], 2) if warm["rss_mib"] else None,
        "slope_after_warmup_mib_per_min": _r(_slope_per_min([(s["t"], s["rss_mib"]) for s in after]), 2),
        "max_mib": max(s["rss_mib"] for s in with_rss),
        "peak_hwm_mib": max(s.get("hwm_mib") or 0 for s in with_rss),
        "idle_mib": next((s["rss_mib"] for s in with_rss if s.get("label") == "idle"), None),
        "threads_warmup_end": warm.get("threads"),
        "threads_end": end.get("threads"),
        "fds_warmup_end": warm.get("fds"),
        "fds_end": end.get("fds"),
        "samples_after_warmup": len(after),
    }


def timeline(results: list[Result], samples: list[dict[str, Any]], load_end: float, windows: int = 10) -> list[dict[str, Any]]:
    """The run in ``windows`` equal slices: what ended in each, and the last sample taken in it."""
    if load_end <= 0:
        return []
    width = load_end / windows
    rows = []
    for w in range(windows):
        lo, hi = w * width, (w + 1) * width
        ended = [r for r in results if lo <= r.ended < hi or (w == windows - 1 and r.ended >= hi)]
        done = [r for r in ended if r.outcome == "completed"]
        point = next((s for s in reversed(samples) if lo <= s["t"] < hi and s.get("label") is None), {})
        rows.append({
            "from_s": round(lo, 1), "to_s": round(hi, 1), "ended": len(ended), "completed": len(done),
            "server_errors": sum(r.outcome == SERVER_ERROR for r in ended), "abandons": sum(r.outcome in OWN for r in ended),
            "latency_p50_s": _r(percentile([r.ended - r.sent for r in done], 0.5)),
            "ttft_p50_s": _r(percentile([r.ttft for r in done if r.ttft is not None], 0.5)),
            "rss_mib": point.get("rss_mib"), "threads": point.get("threads"), "fds": point.get("fds"),
            "in_flight": point.get("tgi_request_in_flight"), "queue": point.get("tgi_queue_size"),
        })  # fmt: skip
    return rows


def server_log_problems(log: Path | None, offset: int) -> dict[str, Any] | None:
    """Tracebacks and ERROR lines the server wrote during the run (its own log, from ``offset``)."""
    if log is None:
        return None
    try:
        with open(log, "rb") as handle:
            handle.seek(offset)
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    flagged = [line for line in lines if "Traceback" in line or " ERROR" in line or line.startswith("ERROR")]
    exceptions = Counter(line.strip()[:160] for line in lines if re.match(r"^[A-Za-z_.]+(Error|Exception)\b", line.strip()))
    return {"path": str(log), "lines": len(lines), "tracebacks": sum("Traceback" in line for line in lines),
            "error_lines": len(flagged), "first_error_lines": [line[:200] for line in flagged[:5]],
            "exceptions": [{"line": k, "count": v} for k, v in exceptions.most_common(5)]}  # fmt: skip


def checks(record: dict[str, Any]) -> list[dict[str, Any]]:
    s, idle, probe_ = record["summary"], record["idle"], record["probe"]
    rss = record["rss"]
    return [
        {"name": "server process alive to the end", "target": "yes", "value": "no" if record["server_gone"] else "yes", "met": not record["server_gone"]},
        {"name": "server errors", "target": "0", "value": s["server_errors"], "met": s["server_errors"] == 0},
        {"name": "idle after the load (batch, queue, in-flight gauges)", "target": "all 0",
         "value": " / ".join(str(v) for v in idle["gauges"].values()), "met": idle["idle"]},  # fmt: skip
        {"name": f"{probe_['requests']} new concurrent requests", "target": f"{probe_['requests']} x 200 + [DONE]",
         "value": f"{probe_['completed']} completed, statuses {probe_['statuses']}", "met": probe_["passed"]},  # fmt: skip
        {"name": "RSS after warm-up (judge: flat?)", "target": "flat",
         "value": (f"{rss['warmup_end_mib']} -> {rss['end_mib']} MiB ({rss['growth_after_warmup_mib']:+.1f} MiB, {rss['slope_after_warmup_mib_per_min']} MiB/min)"
                   + ("" if rss["warmup_reached"] else "; warm-up never ended: run longer") if rss.get("available") else "not measured (no local pid)"),
         "met": None},  # fmt: skip
    ]


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------
async def soak(target: Target, plan: Plan) -> dict[str, Any]:
    clock = Clock()
    stop, sampling_done = asyncio.Event(), asyncio.Event()
    results: list[Result] = []
    samples: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    interrupted = False

    def on_sigint() -> None:  # first Ctrl-C ends the load early and still reports; a second one kills
        nonlocal interrupted
        interrupted = True
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)

    with suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    async with httpx.AsyncClient() as meta:
        counters_before = counters(await scrape(meta, target))
    # Unlimited connections: abandoned ones are closed and replaced, and a pool limit would queue the
    # harness's own requests (and time them) instead of the server's.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=plan.concurrency)
    timeout = httpx.Timeout(120.0, connect=30.0)  # a stream silent for 2 min is hung: a server error
    cpu_before = time.process_time()
    sampling = asyncio.create_task(sampler(target, plan, clock, samples, sampling_done, stop))
    async with httpx.AsyncClient(headers=target.headers, timeout=timeout, limits=limits) as client:
        workers = [asyncio.create_task(worker(n, client, target, plan, clock, stop, results)) for n in range(plan.concurrency)]
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), plan.duration)
        stop.set()
        load_end = clock.now()
        async with httpx.AsyncClient() as meta:
            samples.append(await sample(meta, target, clock, "load end"))
        _, late = await asyncio.wait(workers, timeout=plan.drain)
        for task in late:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        drained = clock.now()
        async with httpx.AsyncClient() as meta:
            samples.append(await sample(meta, target, clock, "drained"))
    sampling_done.set()
    await sampling
    client_cpu = time.process_time() - cpu_before
    idle = await idle_check(target, plan, clock)
    samples.append(idle.pop("sample"))
    probe_result = await probe(target, plan.probe_requests, min(plan.max_tokens, 8))
    async with httpx.AsyncClient() as meta:
        after_probe = await scrape(meta, target)
        samples.append(await sample(meta, target, clock, "after probe"))
    with suppress(NotImplementedError, RuntimeError, ValueError):
        loop.remove_signal_handler(signal.SIGINT)
    counters_after = counters(after_probe)
    return {
        "interrupted": interrupted,
        "server_gone": any(s.get("label") == "server gone" for s in samples),
        "load_s": round(load_end, 2),
        "drain_s": round(drained - load_end, 2),
        "cut_at_end": len(late),
        "client_cpu_s": round(client_cpu, 1),
        "summary": summarise_results(results, plan, drained),
        "rss": summarise_rss(samples, warmup_end(results, plan), load_end),
        "timeline": timeline(results, samples, drained),
        "idle": idle,
        "probe": probe_result,
        "gauges_after_probe": gauges(after_probe),
        "server_counters": {k: counters_after.get(k, 0.0) - counters_before.get(k, 0.0) for k in sorted(set(counters_before) | set(counters_after))},
        "samples": samples,
    }


def _model_of(root: str, api_key: str) -> str:
    listing = httpx.get(f"{root}/v1/models", headers={"Authorization": f"Bearer {api_key}"}, timeout=30).json()
    return listing["data"][0]["id"]


def _local_server(stack: ExitStack) -> Target:
    from tgi_course import LocalServer, __version__

    server = LocalServer()
    started = time.perf_counter()
    stack.enter_context(server)
    ready = time.perf_counter() - started
    # The launcher execs the server, so the child's pid is the server's.
    pid, how = (server.pid, "LocalServer.pid") if server.pid is not None else (pid_listening_on(server.config.port), "listening socket")
    return Target(server.url, _model_of(server.url, server.api_key), server.api_key, {"ignore_eos": True}, pid, how, server.log_path,
                  {"tgi_course": __version__, "ready_s": round(ready, 2), "config": {"model_id": server.config.model_id, "max_batch_size": server.config.max_batch_size,
                   "max_concurrent_requests": server.config.max_concurrent_requests}})  # fmt: skip


def _external_server(args: argparse.Namespace) -> Target:
    root = args.url.rstrip("/").removesuffix("/v1")
    pid, how = (args.pid, "--pid") if args.pid else (None, "not found")
    if pid is None:
        parts = urlsplit(root)
        if parts.hostname in {"127.0.0.1", "localhost", "::1", "0.0.0.0"}:
            found = pid_listening_on(parts.port or (443 if parts.scheme == "https" else 80))
            pid, how = (found, "listening socket") if found else (None, "no local process we may inspect listens on its port")
        else:
            how = "remote server: no RSS"
    extra = {"ignore_eos": True} if args.ignore_eos else {}
    return Target(root, args.model or _model_of(root, args.api_key), args.api_key, extra, pid, how, None, {"url": root})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    p.add_argument("--concurrency", type=int, default=64, help="workers, each one request at a time (default 64)")
    p.add_argument("--max-tokens", type=int, default=32, help="per request (default 32; ignore_eos is sent to our server)")
    p.add_argument("--mix", type=parse_mix, default=parse_mix(DEFAULT_MIX), help=f"shares of client kinds (default {DEFAULT_MIX})")
    p.add_argument("--nonstream-timeout", type=float, default=1.5, help="total client timeout of non-streamed requests, s (default 1.5)")
    p.add_argument("--early-max", type=float, default=0.25, help="early leavers cancel within this many seconds of sending (default 0.25)")
    p.add_argument("--warmup", type=float, help="warm-up lasts at least this many seconds, and until --concurrency streams have completed "
                   "(default 20%% of --duration, at most 60)")
    p.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS / gauge samples (default 5)")
    p.add_argument("--drain", type=float, default=180.0, help="seconds the workers may take to finish their last request; then they are cut (default 180)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds after the load before the idle check (default 3)")
    p.add_argument("--idle-wait", type=float, default=30.0, help="if not idle after --settle, poll this much longer to say when (default 30)")
    p.add_argument("--probe", type=int, default=PROBE_REQUESTS, help=f"new concurrent requests after the idle check (default {PROBE_REQUESTS}; "
                   "MAX_CONCURRENT_REQUESTS of the server tests every admission slot)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--url", help="an existing server's root instead of a fresh LocalServer")
    p.add_argument("--pid", type=int, help="with --url: the server's pid for RSS (default: whoever listens on its port, if local)")
    p.add_argument("--model", help="with --url: model name (default: the first of its /v1/models)")
    p.add_argument("--api-key", default=os.environ.get("TGI_COURSE_API_KEY", "-"))
    p.add_argument("--ignore-eos", action="store_true", help="with --url: send ignore_eos (always sent to a LocalServer)")
    p.add_argument("--out", default=str(RESULTS), help="folder for the JSON file")
    p.add_argument("--note", default="", help="free text stored in the results")
    p.add_argument("--strict", action="store_true", help="exit 2 when a check fails (server errors, not idle, probe)")
    return p


def plan_from(args: argparse.Namespace) -> Plan:
    if args.duration <= 0 or args.concurrency <= 0 or args.max_tokens <= 0:
        raise SystemExit("--duration, --concurrency and --max-tokens must be > 0")
    warmup = args.warmup if args.warmup is not None else min(60.0, 0.2 * args.duration)
    return Plan(args.duration, args.concurrency, args.max_tokens, args.mix, args.nonstream_timeout, args.early_max, warmup,
                args.sample_every, args.drain, args.settle, args.idle_wait, args.seed, args.probe)  # fmt: skip


def run(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    plan = plan_from(args)
    created = dt.datetime.now(dt.timezone.utc)
    with ExitStack() as stack:
        target = _external_server(args) if args.url else _local_server(stack)
        log_offset = target.log.stat().st_size if target.log and target.log.exists() else 0
        print(f"[soak] {time.strftime('%H:%M:%S')} {plan.concurrency} workers for {plan.duration:.0f} s against {target.root} "
              f"(pid {target.pid or '?'}, {target.pid_how})", file=sys.stderr, flush=True)  # fmt: skip
        load_before = load_avgs()
        measured = asyncio.run(soak(target, plan))
        log = server_log_problems(target.log, log_offset)
    record: dict[str, Any] = {
        "schema": "tgi-course-soak/1",
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "argv": sys.argv,
        "note": args.note,
        "machine": machine(load_avg_before=load_before, load_avg_after=load_avgs()),
        "plan": asdict(plan),
        "target": {"root": target.root, "model": target.model, "pid": target.pid, "pid_how": target.pid_how, "extra_body": target.extra_body, **target.info},
        **measured,
        "server_log": log,
    }
    record["checks"] = checks(record)
    record["complete"] = not measured["interrupted"]
    return write_record(args.out, "soak", record), record


# ------------------------------------------------------------------------------------------------
# The printed report
# ------------------------------------------------------------------------------------------------
def _f(value: Any, digits: int = 3) -> str:
    return _fmt(value, digits)


def _span(window: dict[str, Any]) -> str:
    digits = 0 if window["to_s"] - window["from_s"] >= 10 else 1
    return f"{window['from_s']:.{digits}f}–{window['to_s']:.{digits}f}"


def markdown(record: dict[str, Any]) -> str:
    plan, s, rss, idle = record["plan"], record["summary"], record["rss"], record["idle"]
    mix = ", ".join(f"{k} {100 * v:.0f}%" for k, v in plan["mix"].items())
    m = record["machine"]
    lines = [
        f"Soak {record['created']}{' (INTERRUPTED)' if record['interrupted'] else ''}: {plan['concurrency']} workers x {record['load_s']:.0f} s "
        f"(+{record['drain_s']:.1f} s drain), max_tokens {plan['max_tokens']}, mix {mix}, non-streamed timeout {plan['nonstream_timeout']} s; "
        f"{record['target']['root']} model {record['target']['model']}, pid {record['target']['pid']}; "
        f"{m['cpu_count']} cores, load {m['load_avg_before']} -> {m['load_avg_after']}; client CPU {record['client_cpu_s']} s",
        "",
        "| client | sent | outcomes |",
        "|---|--:|---|",
    ]
    for kind, outcomes in s["by_kind"].items():
        lines.append(f"| {kind} | {sum(outcomes.values())} | {', '.join(f'{o} {n}' for o, n in sorted(outcomes.items())) or '–'} |")
    lines += [
        f"| all | {s['requests']} | server errors **{s['server_errors']}** (target 0) |",
        "",
        "| completed streams | latency p50 s | latency p99 s | TTFT p50 s | TTFT p99 s | tokens/stream | tok/s (completed) | tok/s (all received) | req/s | non-streamed ok (p50 s) |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        f"| {s['completed_streams']} | {_f(s['latency_p50_s'])} | {_f(s['latency_p99_s'])} | {_f(s['ttft_p50_s'])} | {_f(s['ttft_p99_s'])} | "
        f"{_f(s['tokens_per_stream_min'])}–{_f(s['tokens_per_stream_max'])} | {_f(s['tokens_per_s_completed'], 1)} | {_f(s['tokens_per_s_received'], 1)} | "
        f"{_f(s['requests_per_s'], 2)} | {s['nonstream_ok']} ({_f(s['nonstream_latency_p50_s'])}) |",
    ]
    if s["early_headers_p50_s"] is not None:
        lines.append(f"\nEarly leavers that saw the headers got them {s['early_headers_p50_s']} s after sending (p50); --early-max is {plan['early_max']} s.")
    if s["server_errors_by_message"]:
        lines += ["", "Server errors by message:"] + [f"  {e['count']:>5} x {e['message']}" for e in s["server_errors_by_message"]]
    lines += ["", "| window s | ended | completed | errors | abandons | latency p50 s | TTFT p50 s | RSS MiB | threads | fds | in flight | queue |",
              "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]  # fmt: skip
    for w in record["timeline"]:
        lines.append(f"| {_span(w)} | {w['ended']} | {w['completed']} | {w['server_errors']} | {w['abandons']} | {_f(w['latency_p50_s'])} | "
                     f"{_f(w['ttft_p50_s'])} | {_f(w['rss_mib'], 1)} | {_f(w['threads'])} | {_f(w['fds'])} | {_f(w['in_flight'], 0)} | {_f(w['queue'], 0)} |")  # fmt: skip
    lines.append("")
    if rss.get("available"):
        if not rss["warmup_reached"]:
            lines.append(f"RSS WARNING: warm-up ({record['plan']['concurrency']} completed streams, >= {record['plan']['warmup']:.0f} s) did not end before the load did "
                         f"(wanted t={_f(rss['warmup_end_wanted_t'], 0)} s, load ended at {record['load_s']:.0f} s): too short a run for this machine to judge RSS; "
                         "the figures below compare the end of the load with the end of the drain.")  # fmt: skip
        lines.append(
            f"RSS: start {rss['start_mib']} MiB, warm-up end (t={rss['warmup_end_t']:.0f} s) {rss['warmup_end_mib']} MiB, load end {rss['load_end_mib']} MiB, "
            f"all requests done (t={rss['end_t']:.0f} s) {rss['end_mib']} MiB: {rss['growth_after_warmup_mib']:+.1f} MiB ({_f(rss['growth_after_warmup_pct'], 2)}%), slope {_f(rss['slope_after_warmup_mib_per_min'], 2)} MiB/min "
            f"over {rss['samples_after_warmup']} samples; idle {rss['idle_mib']} MiB, peak {rss['max_mib']} MiB (HWM {rss['peak_hwm_mib']}); "
            f"threads {rss['threads_warmup_end']} -> {rss['threads_end']}, fds {rss['fds_warmup_end']} -> {rss['fds_end']}"
        )
    else:
        lines.append(f"RSS: not measured ({record['target']['pid_how']})")
    lines.append(
        f"Idle check after {idle['settle_s']:.0f} s: " + ", ".join(f"{k} {_f(v, 0)}" for k, v in idle["gauges_after_settle"].items())
        + ("" if idle["idle_after_settle"] else f"; after {idle['extra_wait_s']} s more: " + ", ".join(f"{k} {_f(v, 0)}" for k, v in idle["gauges"].items()))
    )  # fmt: skip
    p = record["probe"]
    lines.append(f"Probe: {p['requests']} concurrent requests -> {p['status_200']} x 200, {p['completed']} completed with [DONE], statuses {p['statuses']} in {p['seconds']} s"
                 + (f"; errors {p['errors']}" if p["errors"] else ""))  # fmt: skip
    if record["server_counters"]:
        lines.append("Server counters during the run: " + ", ".join(f"{k} {v:.0f}" for k, v in record["server_counters"].items() if v))
    log = record.get("server_log")
    if log:
        lines.append(f"Server log: {log['tracebacks']} tracebacks, {log['error_lines']} ERROR lines ({log['path']})")
        lines += [f"  {e['count']:>5} x {e['line']}" for e in log["exceptions"]]
    lines += ["", "| check | target | measured | met |", "|---|---|---|:-:|"]
    for c in record["checks"]:
        lines.append(f"| {c['name']} | {c['target']} | {c['value']} | {({True: 'yes', False: '**no**', None: 'judge'})[c['met']]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path, record = run(args)
    print(markdown(record))
    print(f"wrote {path}")
    failed = [c["name"] for c in record["checks"] if c["met"] is False]
    return 2 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
