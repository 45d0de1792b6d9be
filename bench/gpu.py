"""Issue 5's GPU measurement: our engine vs transformers' own batched ``generate`` on one randomly initialised
model of a real size, at 1/16/64 streams.

    python -m bench.gpu                                   # Llama-3-8B-shaped model on CUDA, levels 1 16 64
    python -m bench.gpu --shape tiny --device cpu --levels 1 2 --max-tokens 4   # plumbing check (tests run this)

The GPU machines have no network, so no checkpoint: the model is built from a config in this file, weights
drawn from a fixed seed. Speed does not depend on the weights' values, only on shapes and dtypes, so the
figures stand for the real model of that shape. The vocabulary is the course tokenizer's (49,152 tokens, not
Llama 3's 128,256) because the engine decodes every token to text; the note says so with the figures.

Both sides generate exactly ``--max-tokens`` tokens per stream (EOS ignored), greedy, from the same prompts
of ``--prompt-tokens`` tokens.
  * ours: the ``Engine`` as the server runs it; N requests submitted at once; TTFT = submit -> first token
    event of each stream; aggregate = all tokens / wall time of the burst.
  * transformers: one ``model.generate`` call on the N prompts as a static batch; its TTFT is the time of
    the same call with ``max_new_tokens=1`` (the prefill), which a streamer of a static batch cannot beat.
Writes bench/results/gpu-<UTC time>.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from .report import RESULTS

SHAPES: dict[str, dict[str, Any]] = {
    # Meta-Llama-3-8B's published config, vocabulary aside (see the module docstring).
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, rope_theta=500000.0, max_position_embeddings=8192),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=2048),
}  # fmt: skip


def build_model(shape: str, vocab_size: int, device: str, dtype: Any) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, **SHAPES[shape])
    # Same rule as the server's loader: SDPA on CUDA, eager on the CPU (bf16 CPU SDPA is wrong with left padding).
    config._attn_implementation = "sdpa" if device.startswith("cuda") else "eager"
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the target dtype: an 8B model in fp32 would need 32 GB first
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def default_tokenizer_folder() -> str:
    from tgi_course.models import resolve
    from tgi_course.models.loading import convert_gguf

    return str(convert_gguf(resolve("default")))


def prompts_for(tokenizer: Any, count: int, length: int) -> list[list[int]]:
    """``count`` different prompts of exactly ``length`` ordinary tokens (no special ids)."""
    special = set(tokenizer.all_special_ids)
    ordinary = [i for i in range(1000, 1000 + 4 * length) if i not in special]
    return [[ordinary[(row * 7 + j) % len(ordinary)] for j in range(length)] for row in range(count)]


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_engine(engine: Any, prompts: list[list[int]], max_tokens: int) -> dict[str, float]:
    from tgi_course.engine import FinishEvent, GenerationRequest, SamplingParams, TokenEvent

    params = SamplingParams(temperature=0.0, max_new_tokens=max_tokens, ignore_eos=True)
    requests = [GenerationRequest(p, params) for p in prompts]
    first: dict[int, float] = {}
    tokens = 0

    async def burst() -> None:
        nonlocal tokens
        async for index, event in engine.stream_many(requests):
            if isinstance(event, TokenEvent):
                tokens += 1
                first.setdefault(index, time.perf_counter())
            elif isinstance(event, FinishEvent):
                pass

    started = time.perf_counter()
    asyncio.run(burst())
    wall = time.perf_counter() - started
    ttfts = [first[i] - started for i in range(len(prompts))]
    return {"aggregate_tok_s": tokens / wall, "ttft_p50_s": statistics.median(ttfts), "wall_s": wall, "tokens": tokens}


def measure_generate(model: Any, prompts: list[list[int]], max_tokens: int, pad: int, device: str) -> dict[str, float]:
    import torch

    ids = torch.tensor(prompts, device=device)  # equal lengths: no padding, the baseline's best case
    mask = torch.ones_like(ids)

    def run(new_tokens: int) -> float:
        synchronize(device)
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 do_sample=False, pad_token_id=pad)  # fmt: skip
        synchronize(device)
        assert out.shape[1] == ids.shape[1] + new_tokens
        return time.perf_counter() - started

    ttft = run(1)
    wall = run(max_tokens)
    tokens = len(prompts) * max_tokens
    return {"aggregate_tok_s": tokens / wall, "ttft_p50_s": ttft, "wall_s": wall, "tokens": tokens}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="llama3-8b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--levels", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--tokenizer", help="a tokenizer folder (default: the course model's, converted here)")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)

    import torch
    from transformers import AutoTokenizer

    from tgi_course.engine import BatchLimits, Engine

    dtype = getattr(torch, args.dtype)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or default_tokenizer_folder())
    started = time.perf_counter()
    model = build_model(args.shape, len(tokenizer), args.device, dtype)
    build_s = time.perf_counter() - started
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    top = max(args.levels)
    limits = BatchLimits(max_batch_prefill_tokens=top * args.prompt_tokens,
                         max_batch_total_tokens=top * (args.prompt_tokens + args.max_tokens), max_batch_size=top)  # fmt: skip
    engine = Engine(model, tokenizer, frozenset(), limits).start()
    rows = []
    try:
        warm = prompts_for(tokenizer, 2, args.prompt_tokens)
        measure_engine(engine, warm, 4)  # CUDA context, kernels, allocator: not measured
        measure_generate(model, warm, 4, pad, args.device)
        for level in args.levels:
            prompts = prompts_for(tokenizer, level, args.prompt_tokens)
            ours = measure_engine(engine, prompts, args.max_tokens)
            theirs = measure_generate(model, prompts, args.max_tokens, pad, args.device)
            rows.append({"streams": level, "engine": ours, "transformers_generate": theirs,
                         "throughput_ratio": ours["aggregate_tok_s"] / theirs["aggregate_tok_s"]})  # fmt: skip
    finally:
        engine.stop()

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    params = sum(t.numel() for t in model.parameters())
    print(f"{args.shape} ({params / 1e9:.2f} B params, {args.dtype}) on {device_name}; prompt {args.prompt_tokens}, new {args.max_tokens} tokens")
    print("| streams | ours agg tok/s | generate agg tok/s | ours / generate | ours TTFT p50 s | generate TTFT s |\n|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        e, g = r["engine"], r["transformers_generate"]
        print(f"| {r['streams']} | {e['aggregate_tok_s']:.0f} | {g['aggregate_tok_s']:.0f} | {r['throughput_ratio']:.2f}x | {e['ttft_p50_s']:.3f} | {g['ttft_p50_s']:.3f} |")
    created = dt.datetime.now(dt.timezone.utc)
    record = {"schema": "tgi-course-gpu/1", "created": f"{created:%Y-%m-%dT%H:%M:%SZ}", "shape": args.shape, "config": SHAPES[args.shape],
              "vocab_size": len(tokenizer), "params": params, "dtype": args.dtype, "device": device_name, "torch": torch.__version__,
              "prompt_tokens": args.prompt_tokens, "max_tokens": args.max_tokens, "build_seconds": build_s, "rows": rows}  # fmt: skip
    path = Path(args.out) / f"gpu-{created:%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
