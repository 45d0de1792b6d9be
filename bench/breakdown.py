"""Where a decode step's time goes: the bare forward vs our engine's step, per batch size.

    .venv/bin/python -m bench.breakdown [--batches 1 16 64] [--steps 48] [--backend transformers|llama.cpp]

The bare forward is the floor our engine can reach without changing the model path: for the transformers
runner the model's own forward over a DynamicCache (eager PyTorch), for the llama.cpp runner the runner's
``decode`` (one ``llama_decode``) with argmax and nothing else. The engine's step adds sampling, per-row
bookkeeping and events. Prints a table and writes bench/results/breakdown-<UTC time>.json. Run it on a quiet
machine, like the harness.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import time
from pathlib import Path
from typing import Any

from .inprocess import _engine_from_server_settings
from .report import RESULTS
from .stats import load_avg_1m
from .workload import Workload


def bare_forward_ms(model: Any, prompt: list[int], batch: int, steps: int, warmup: int = 8) -> float:
    """Median ms of one batched decode forward, prompt prefilled, no sampling (argmax only)."""
    import torch
    from transformers import DynamicCache

    with torch.inference_mode():
        ids = torch.tensor([prompt] * batch, dtype=torch.long)
        mask = torch.ones_like(ids)
        out = model(input_ids=ids, attention_mask=mask, past_key_values=DynamicCache(config=model.config), use_cache=True, logits_to_keep=1)
        cache, position = out.past_key_values, len(prompt)
        token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
        times = []
        for i in range(warmup + steps):
            mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype)], dim=1)
            positions = torch.full((batch, 1), position, dtype=torch.long)
            started = time.perf_counter()
            out = model(input_ids=token, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
            token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
            if i >= warmup:
                times.append(time.perf_counter() - started)
            cache, position = out.past_key_values, position + 1
    return 1000 * statistics.median(times)


def bare_runner_ms(runner: Any, prompt: list[int], batch: int, steps: int, warmup: int = 8) -> float:
    """Median ms of one ``runner.decode`` for ``batch`` rows (argmax only, no engine): the llama.cpp floor."""
    ids = list(range(10_000, 10_000 + batch))
    logits = runner.prefill(ids, [prompt] * batch)
    tokens = {i: int(t) for i, t in zip(ids, logits.argmax(dim=-1).tolist())}
    times = []
    try:
        for step in range(warmup + steps):
            started = time.perf_counter()
            logits = runner.decode(tokens)
            tokens = {i: int(t) for i, t in zip(runner.seq_ids, logits.argmax(dim=-1).tolist())}
            if step >= warmup:
                times.append(time.perf_counter() - started)
    finally:
        runner.drop(ids)
    return 1000 * statistics.median(times)


def engine_step_ms(engine: Any, tokenizer: Any, workload: Workload, batch: int, steps: int) -> tuple[float, float]:
    """(median ms of the engine's decode step at ``batch`` rows, ms per token of the whole loop)."""
    from tgi_course.engine import GenerationRequest, SamplingParams, encode, render_chat

    observed: list[float] = []

    def observe(rows: int, seconds: float) -> None:
        if rows == batch:  # only steps where the whole batch was running
            observed.append(seconds)

    params = SamplingParams(temperature=0.0, max_new_tokens=steps, ignore_eos=True)
    requests = [GenerationRequest(encode(tokenizer, render_chat(tokenizer, workload.messages(i))), params) for i in range(batch)]

    async def drain() -> None:
        async for _ in engine.stream_many(requests):
            pass

    engine.step_observers.append(observe)
    started = time.perf_counter()
    try:
        asyncio.run(drain())
    finally:
        engine.step_observers.remove(observe)
    wall = time.perf_counter() - started
    return 1000 * statistics.median(observed), 1000 * wall / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.breakdown", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--backend", default="auto", help="BACKEND for the engine (auto, transformers, llama.cpp)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)

    workload = Workload()
    engine, tokenizer, _, info = _engine_from_server_settings(backend=args.backend)
    from tgi_course.engine import encode, render_chat

    prompt = encode(tokenizer, render_chat(tokenizer, workload.messages(0)))
    load_before = load_avg_1m()
    # Bare forwards first, before the engine's thread exists: two threads each with an OpenMP pool on two
    # cores slowed the bare forward twofold when they were interleaved.
    if info["backend"] == "transformers":
        bare = {batch: bare_forward_ms(engine.runner.model, prompt, batch, args.steps) for batch in args.batches}
    else:
        bare = {batch: bare_runner_ms(engine.runner, prompt, batch, args.steps) for batch in args.batches}
    rows = []
    engine.start()
    try:
        engine_step_ms(engine, tokenizer, workload, 2, 8)  # warm-up, not recorded
        for batch in args.batches:
            step, loop = engine_step_ms(engine, tokenizer, workload, batch, args.steps)
            rows.append({"batch": batch, "bare_forward_ms": bare[batch], "engine_step_ms": step, "engine_loop_ms_per_step": loop,
                         "bare_tok_s": 1000 * batch / bare[batch], "engine_tok_s": 1000 * batch / loop})  # fmt: skip
    finally:
        engine.stop()

    print(f"{'batch':>5} {'bare fwd ms':>12} {'engine step ms':>15} {'loop ms/step':>13} {'bare tok/s':>11} {'engine tok/s':>13}")
    for r in rows:
        print(f"{r['batch']:>5} {r['bare_forward_ms']:>12.1f} {r['engine_step_ms']:>15.1f} {r['engine_loop_ms_per_step']:>13.1f} {r['bare_tok_s']:>11.0f} {r['engine_tok_s']:>13.0f}")
    created = dt.datetime.now(dt.timezone.utc)
    path = Path(args.out) / f"breakdown-{created:%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"created": f"{created:%Y-%m-%dT%H:%M:%SZ}", "info": info, "steps": args.steps, "load_avg_1m_before": load_before, "load_avg_1m_after": load_avg_1m(), "rows": rows}
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
