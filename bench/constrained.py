"""What grammar-constrained decoding costs (issue 6): constrained vs unconstrained decode speed on the same
prompts, and what unconstrained requests lose when constrained ones share their batch.

    .venv/bin/python -m bench.constrained [--streams 4] [--max-tokens 64] [--repeats 5] [--wait-quiet 0.6]

Requests go through the server's own validator (so the grammar is built exactly as for HTTP requests) and
the engine, in-process. Speed = tokens per second of one stream = 1 / decode-step time, taken from the
engine's steps while the whole batch is running (a JSON object that closes early shrinks the batch; those
steps are left out). Three batches, each ``--streams`` wide, same prompts:
  * plain: unconstrained requests alone;
  * json: every request with a JSON schema (response_format json_schema);
  * mixed: half plain, half json: every row of a step waits for the step, so this is what the plain rows
    beside constrained ones get.
Each round runs the three in a rotated order; ratios are taken within a round (same minute, same machine
load) and their median is reported: on a shared 2-core machine step times drift by 10-50 % between minutes.
Two figures are taken inside the step as well, and they are the ones other work disturbs least: the grammar's
own time (mask + accept, timed around each processor), and the engine's token choice per step
(``choose_next_tokens``, timed by wrapping the engine loop's reference to it): the only part of a step that a
constraint changes; the forward pass is the same for every kind.
Prints a table and writes bench/results/constrained-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import time
from dataclasses import replace
from typing import Any

from .report import RESULTS, write_record
from .stats import load_avg_1m

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


class _Timed:
    """Wraps a logits processor and adds its seconds to a shared counter."""

    def __init__(self, inner: Any, spent: list[float]) -> None:
        self._inner, self._spent = inner, spent

    def __call__(self, generated: Any, row: Any) -> Any:
        t0 = time.perf_counter()
        out = self._inner(generated, row)
        self._spent.append(time.perf_counter() - t0)
        return out


async def _drain(engine: Any, prepared: list[Any]) -> None:
    from tgi_course.engine import GenerationRequest

    async for _ in engine.stream_many([GenerationRequest(p.prompt_ids, p.choices[0]) for p in prepared]):
        pass


class _TimedChoice:
    """Stands in for the engine loop's ``choose_next_tokens`` and records its seconds per step, by batch kind."""

    def __init__(self) -> None:
        import tgi_course.engine.engine as scheduler  # the loop module, which calls choose_next_tokens

        self._scheduler, self._inner = scheduler, scheduler.choose_next_tokens
        self.kind = "warm-up"
        self.seconds: dict[str, list[float]] = {}
        scheduler.choose_next_tokens = self

    def __call__(self, logits: Any, states: Any) -> Any:
        t0 = time.perf_counter()
        out = self._inner(logits, states)
        self.seconds.setdefault(self.kind, []).append(time.perf_counter() - t0)
        return out

    def restore(self) -> None:
        self._scheduler.choose_next_tokens = self._inner


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
    p.add_argument("--repeats", type=int, default=5, help="rounds of the three batches, each round in a rotated order")
    p.add_argument("--wait-quiet", type=float, metavar="LOAD", help="first wait until the 1-minute load average is below LOAD")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)

    from tgi_course.server.protocol.openai import ChatCompletionRequest

    from .cli import wait_for_quiet
    from .inprocess import server_state_from_settings

    quiet = wait_for_quiet(args.wait_quiet, None, 15.0) if args.wait_quiet else "no wait for a quiet machine was asked"
    state, _, info = server_state_from_settings()
    engine, validator = state.engine, state.validator
    grammar_seconds: list[float] = []

    def prepare(i: int, constrained: bool) -> Any:
        body: dict[str, Any] = {"messages": [{"role": "user", "content": _prompt(i)}], "temperature": 0, "max_tokens": args.max_tokens}
        if constrained:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "note", "schema": SCHEMA}}
        prepared = validator.chat(ChatCompletionRequest.model_validate(body))
        timed = tuple(replace(c, logits_processors=tuple(_Timed(f, grammar_seconds) for f in c.logits_processors)) for c in prepared.choices)
        return replace(prepared, choices=timed)

    n, half = args.streams, args.streams // 2
    batches = {
        "plain": lambda: [prepare(i, False) for i in range(n)],
        "json": lambda: [prepare(i, True) for i in range(n)],
        "mixed": lambda: [prepare(i, i >= half) for i in range(n)],
    }
    kinds = list(batches)
    rounds: list[dict[str, float]] = []
    steps: dict[str, list[float]] = {k: [] for k in kinds}
    load_before = load_avg_1m()
    choice = _TimedChoice()
    engine.start()
    try:
        _step_times(engine, [prepare(0, False), prepare(1, True)])  # warm-up: kernels, grammar compiler
        grammar_seconds.clear()
        for r in range(args.repeats):
            medians: dict[str, float] = {}
            for kind in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:
                choice.kind = kind
                measured = _step_times(engine, batches[kind]())
                steps[kind] += measured
                if measured:  # none when a batch ends within its prefill (tiny --max-tokens)
                    medians[kind] = statistics.median(measured)
            rounds.append(medians)
    finally:
        engine.stop()
        choice.restore()
    choose_ms = {k: statistics.median(choice.seconds[k]) * 1e3 for k in kinds}
    tok_s = {k: 1.0 / statistics.median(v) for k, v in steps.items()}
    whole = [m for m in rounds if len(m) == len(kinds)]
    json_vs_plain = statistics.median(m["plain"] / m["json"] for m in whole)
    mixed_vs_plain = statistics.median(m["plain"] / m["mixed"] for m in whole)
    grammar_us = statistics.median(grammar_seconds) * 1e6
    plain_step_ms = statistics.median(steps["plain"]) * 1e3
    result = {
        "schema": "tgi-course-constrained/2",
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "info": info,
        "streams": n,
        "max_tokens": args.max_tokens,
        "repeats": args.repeats,
        "quiet_wait": quiet,
        "load_avg_1m": {"before": load_before, "after": load_avg_1m()},
        "steps_measured": {k: len(v) for k, v in steps.items()},
        "per_stream_tok_s_from_median_step": tok_s,
        "round_median_steps_s": rounds,
        "json_vs_plain": json_vs_plain,
        "plain_beside_json_vs_plain": mixed_vs_plain,
        "grammar_us_per_row_step_median": grammar_us,
        "grammar_us_per_row_step_mean": statistics.fmean(grammar_seconds) * 1e6,
        "plain_step_ms_median": plain_step_ms,
        "choose_next_tokens_ms_median": choose_ms,
        "constraint_share_of_step": {k: (choose_ms[k] - choose_ms["plain"]) / plain_step_ms for k in ("json", "mixed")},
    }
    print(f"| batch of {n} | tok/s per stream (1 / median step) | steps |\n|---|--:|--:|")
    for name, value in tok_s.items():
        print(f"| {name} | {value:.1f} | {len(steps[name])} |")
    print(f"\nmedian of per-round ratios over {args.repeats} rounds (load {load_before} before, {result['load_avg_1m']['after']} after):")
    print(f"constrained vs unconstrained: {json_vs_plain:.3f}x (goal >= 0.8x)")
    print(f"unconstrained beside constrained vs alone: {mixed_vs_plain:.3f}x (goal >= 0.95x)")
    print(
        f"grammar work per constrained row and step: {grammar_us:.0f} us median, {result['grammar_us_per_row_step_mean']:.0f} us mean "
        f"= {grammar_us / 10 / plain_step_ms:.2f} % of a {plain_step_ms:.1f} ms step per constrained row"
    )
    share = result["constraint_share_of_step"]
    print(
        f"token choice per step: plain {choose_ms['plain']:.2f} ms, json {choose_ms['json']:.2f} ms, mixed {choose_ms['mixed']:.2f} ms: "
        f"the constraint adds {share['json'] * 100:.2f} % to a step of all-json rows, {share['mixed'] * 100:.2f} % to a mixed step"
    )
    print("wrote", write_record(args.out, "constrained", result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
