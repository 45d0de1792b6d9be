"""Serving benchmark: prints figures, asserts nothing (speed targets are read by people, not CI).

Measures, in one run on the same model and prompts:
  * single-stream decode tok/s in-process (the engine, no HTTP) and through HTTP + SSE;
  * aggregate tok/s, per-stream tok/s, TTFT and inter-token latency p50/p95 at several concurrencies.

    .venv/bin/python bench/bench_server.py                      # starts a local server
    .venv/bin/python bench/bench_server.py --url http://host:port --concurrency 1 4 16 64

Results are printed as a table and written as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works.",
    "Describe a busy market in the morning.",
    "Give advice to someone learning to cook.",
    "Tell me about the history of maps.",
    "Describe the water cycle to a child.",
    "Write a letter to a future astronaut.",
    "Explain why the sky changes colour at sunset.",
]


@dataclass
class StreamResult:
    ttft: float
    itl: list[float]
    tokens: int
    seconds: float


@dataclass
class LevelResult:
    target: str
    concurrency: int
    streams: int
    aggregate_tok_s: float
    per_stream_tok_s: float
    ttft_p50: float
    ttft_p95: float
    itl_p50_ms: float
    itl_p95_ms: float
    errors: int


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def one_stream(client, model: str, prompt: str, max_tokens: int) -> StreamResult:
    start = time.perf_counter()
    stamps: list[float] = []
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    tokens = 0
    async for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        elif chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter())
    end = time.perf_counter()
    return StreamResult(
        ttft=(stamps[0] - start) if stamps else end - start,
        itl=[b - a for a, b in zip(stamps, stamps[1:])],
        tokens=tokens or len(stamps),
        seconds=end - start,
    )


async def http_level(base_url: str, api_key: str, model: str, concurrency: int, max_tokens: int, rounds: int) -> LevelResult:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=600)
    results: list[StreamResult] = []
    errors = 0
    started = time.perf_counter()
    for _ in range(rounds):
        calls = [one_stream(client, model, PROMPTS[i % len(PROMPTS)], max_tokens) for i in range(concurrency)]
        for outcome in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(outcome, BaseException):
                errors += 1
            else:
                results.append(outcome)
    wall = time.perf_counter() - started
    await client.close()
    total = sum(r.tokens for r in results)
    itl = [x for r in results for x in r.itl]
    return LevelResult(
        target="http",
        concurrency=concurrency,
        streams=len(results),
        aggregate_tok_s=total / wall,
        per_stream_tok_s=statistics.mean(r.tokens / r.seconds for r in results) if results else 0.0,
        ttft_p50=percentile([r.ttft for r in results], 0.5),
        ttft_p95=percentile([r.ttft for r in results], 0.95),
        itl_p50_ms=1000 * percentile(itl, 0.5),
        itl_p95_ms=1000 * percentile(itl, 0.95),
        errors=errors,
    )


def in_process_single_stream(max_tokens: int, rounds: int) -> LevelResult:
    """The engine alone, same model, same prompt shape: the ceiling for the HTTP path."""
    from tgi_course.engine import Engine, GenerationRequest, SamplingParams, TokenEvent, encode, render_chat
    from tgi_course.models import load, resolve

    loaded = load(resolve("default"))
    engine = Engine(loaded.model, loaded.tokenizer, loaded.eos_token_ids).start()
    try:
        ttfts, itl, rates = [], [], []
        total, wall = 0, 0.0
        for i in range(rounds + 1):
            ids = encode(loaded.tokenizer, render_chat(loaded.tokenizer, [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]))
            request = GenerationRequest(ids, SamplingParams(temperature=0, max_new_tokens=max_tokens, ignore_eos=True))
            start = time.perf_counter()
            stamps = [time.perf_counter() for event in engine.iterate(request) if isinstance(event, TokenEvent)]
            seconds = time.perf_counter() - start
            if i == 0:
                continue  # warm-up
            ttfts.append(stamps[0] - start)
            itl.extend(b - a for a, b in zip(stamps, stamps[1:]))
            rates.append(len(stamps) / seconds)
            total += len(stamps)
            wall += seconds
    finally:
        engine.stop()
    return LevelResult("in-process", 1, rounds, total / wall, statistics.mean(rates), percentile(ttfts, 0.5), percentile(ttfts, 0.95), 1000 * percentile(itl, 0.5), 1000 * percentile(itl, 0.95), 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="an OpenAI-compatible server root; default: start a local server")
    parser.add_argument("--api-key", default="-")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="batches of requests per concurrency level")
    parser.add_argument("--skip-in-process", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    from tgi_course import LocalServer, connect

    server = None
    if args.url:
        conn = connect(url=args.url, api_key=args.api_key)
    else:
        server = LocalServer().start()
        conn = connect(url=server.url)
    levels: list[LevelResult] = []
    try:
        asyncio.run(http_level(conn.base_url, conn.api_key, conn.model, 1, 8, 1))  # warm-up
        for c in args.concurrency:
            levels.append(asyncio.run(http_level(conn.base_url, conn.api_key, conn.model, c, args.max_tokens, args.rounds)))
    finally:
        if server is not None:
            server.stop()
    if not args.skip_in_process:
        levels.insert(0, in_process_single_stream(args.max_tokens, args.rounds * 2))

    print(f"{'target':<11}{'conc':>5}{'streams':>8}{'agg tok/s':>11}{'stream tok/s':>13}{'TTFT p50':>10}{'TTFT p95':>10}{'ITL p50':>9}{'ITL p95':>9}{'err':>5}")
    for r in levels:
        print(f"{r.target:<11}{r.concurrency:>5}{r.streams:>8}{r.aggregate_tok_s:>11.1f}{r.per_stream_tok_s:>13.1f}{r.ttft_p50:>9.3f}s{r.ttft_p95:>9.3f}s{r.itl_p50_ms:>7.1f}ms{r.itl_p95_ms:>7.1f}ms{r.errors:>5}")
    by = {(r.target, r.concurrency): r for r in levels}
    ratios = {}
    if ("in-process", 1) in by and ("http", 1) in by:
        ratios["http_vs_in_process_single_stream"] = by[("http", 1)].per_stream_tok_s / by[("in-process", 1)].per_stream_tok_s
    if ("http", 1) in by and ("http", 16) in by:
        ratios["aggregate_16_vs_single_stream"] = by[("http", 16)].aggregate_tok_s / by[("http", 1)].aggregate_tok_s
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out / f"serving-{stamp}.json"
    path.write_text(json.dumps({"machine": platform.node(), "url": args.url or "local", "max_tokens": args.max_tokens, "levels": [asdict(r) for r in levels], "ratios": ratios}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
