"""What grammar-constrained decoding costs (issue 6): constrained vs unconstrained decode speed on the same
prompts, and what unconstrained requests lose when constrained ones share their batch.

    .venv/bin/python -m bench.constrained [--streams 4] [--max-tokens 64] [--repeats 3]

Requests go through the server's own validator (so the grammar is built exactly as for HTTP requests) and
the engine, in-process. Speed = tokens per second of one stream = 1 / decode-step time,
taken from the engine's steps while the whole batch is running (a JSON object that closes early shrinks the
batch; those steps are left out). Three batches, each ``--streams`` wide, same prompts:
  * plain: unconstrained requests alone;
  * json: every request with a JSON schema (response_format json_schema);
  * mixed: half plain, half json: every row of a step waits for the step, so this is what the plain rows
    beside constrained ones get.
Prints a table and writes bench/results/constrained-<UTC time>.json. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import time
from typing import Any

from .report import RESULTS, write_record

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "summary": {"type": "string"},
        "keywords": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["title", "summary", "keywords"],
}
TOPICS = ["tides", "lighthouses", "sea otters", "coral reefs", "harbor cranes", "kelp forests", "fishing boats", "sand dunes"]


def _prompt(i: int) -> str:
    return f"Write a short note about {TOPICS[i % len(TOPICS)]} as JSON with a title, a summary and keywords."


async def _drain(engine: Any, prepared: list[Any]) -> None:
    from tgi_course.engine import GenerationRequest

    async for _ in engine.stream_many([GenerationRequest(p.prompt_ids, p.choices[0]) for p in prepared]):
        pass


def _step_times(engine: Any, prepared: list[Any]) -> list[float]:
    """Seconds of each decode step while every request of the batch was still running (same batch size
    for every kind of batch: streams that end early do not make the rest look faster)."""
    seconds: list[float] = []

    def observe(rows: int, elapsed: float) -> None:
        if rows == len(prepared):
            seconds.append(elapsed)

    engine.step_observers.append(observe)
    try:
        asyncio.run(_drain(engine, prepared))
    finally:
        engine.step_observers.remove(observe)
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.constrained", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)

    from tgi_course.server.protocol.openai import ChatCompletionRequest

    from .inprocess import server_state_from_settings

    state, _, info = server_state_from_settings()
    engine, validator = state.engine, state.validator

    def prepare(i: int, constrained: bool) -> Any:
        body: dict[str, Any] = {"messages": [{"role": "user", "content": _prompt(i)}], "temperature": 0, "max_tokens": args.max_tokens}
        if constrained:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "note", "schema": SCHEMA}}
        return validator.chat(ChatCompletionRequest.model_validate(body))

    n, half = args.streams, args.streams // 2
    engine.start()
    steps: dict[str, list[float]] = {"plain": [], "json": [], "mixed": []}
    try:
        _step_times(engine, [prepare(0, False), prepare(1, True)])  # warm-up: kernels, grammar compiler
        for _ in range(args.repeats):
            steps["plain"] += _step_times(engine, [prepare(i, False) for i in range(n)])
            steps["json"] += _step_times(engine, [prepare(i, True) for i in range(n)])
            steps["mixed"] += _step_times(engine, [prepare(i, i >= half) for i in range(n)])
    finally:
        engine.stop()
    medians = {k: 1.0 / statistics.median(v) for k, v in steps.items() if v}
    result = {
        "schema": "tgi-course-constrained/1",
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "info": info,
        "streams": n,
        "max_tokens": args.max_tokens,
        "repeats": args.repeats,
        "steps_measured": {k: len(v) for k, v in steps.items()},
        "per_stream_tok_s_from_median_step": medians,
        "json_vs_plain": medians["json"] / medians["plain"],
        "plain_beside_json_vs_plain": medians["mixed"] / medians["plain"],
    }
    print(f"| batch of {n} | tok/s per stream (1 / median step) | steps |\n|---|--:|--:|")
    for name, value in medians.items():
        print(f"| {name} | {value:.1f} | {len(steps[name])} |")
    print(f"\nconstrained vs unconstrained: {result['json_vs_plain']:.3f}x (goal >= 0.8x)")
    print(f"unconstrained beside constrained vs alone: {result['plain_beside_json_vs_plain']:.3f}x (goal >= 0.95x)")
    print("wrote", write_record(args.out, "constrained", result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
