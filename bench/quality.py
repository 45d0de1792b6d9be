"""Answer quality per runner (issue 13): the corpus's Q/A facts through the course's RAG prompt, greedy.

    .venv/bin/python -m bench.quality                               # every runner and weight format built here
    .venv/bin/python -m bench.quality --variants llama.cpp:Q4_1 transformers:float32

llama.cpp multiplies quantized weights with activations it quantizes too (Q8 blocks), so its greedy answers
can differ from the dense path's on the same weights. This measures what that costs a learner: each fact of
``data/manifest.json`` is asked the way notebook 05 asks it (the corpus chunked as there, the 3 nearest
chunks by the packaged all-MiniLM-L6-v2 embeddings, context in the system message, the bare question as
the user turn), 48 new tokens greedy, and counts an answer correct when it contains the fact's answer
(case and spacing ignored), and strictly correct when it also names no name or number that the chunks and
the question lack (``tgi_course.course.rag_eval.score``, the rules notebook 05 explains). Retrieval is done
once, so every variant sees the same prompts; a variant is
``backend:weights``: ``transformers:float32``, ``transformers:bfloat16``, ``llama.cpp:Q4_1`` (the GGUF as
shipped) or ``llama.cpp:F16`` (the same weights de-quantized, see ``GGUF_WEIGHTS``). Prints accuracy and
decode speed per variant and writes bench/results/quality-<UTC time>.json. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

from .report import RESULTS
from .stats import load_avgs, machine

DEFAULT_VARIANTS = ("transformers:float32", "transformers:bfloat16", "llama.cpp:Q4_1", "llama.cpp:F16")


def retrieve_prompts() -> list[dict[str, Any]]:
    """Each fact with the messages the course's RAG chain would send for it, and the context they carry."""
    from tgi_course.course import rag, rag_eval
    from tgi_course.course.corpus import facts

    store = rag_eval.corpus_store(collection_name=f"quality-{time.time_ns()}")
    out = []
    for item in rag_eval.retrieve(store, facts(), max_k=rag.TOP_K):
        context = item.context(rag.TOP_K)
        out.append({"question": item.fact.question, "answer": item.fact.answer, "file": item.fact.file, "context": context,
                    "messages": rag_eval.SYSTEM_CONTEXT.messages(context, item.fact.question)})  # fmt: skip
    return out


def run_variant(variant: str, prompts: list[dict[str, Any]], max_new_tokens: int) -> dict[str, Any]:
    from tgi_course.course import rag_eval
    from tgi_course.engine import BatchLimits, Engine, GenerationRequest, SamplingParams, encode, render_chat
    from tgi_course.models import load, resolve

    backend, weights = variant.split(":", 1)
    started = time.perf_counter()
    if backend == "llama.cpp":
        loaded = load(resolve("default"), backend="llama.cpp", gguf_weights="file" if weights == "Q4_1" else weights.lower())
    else:
        loaded = load(resolve("default"), backend="transformers", dtype=weights)
    load_s = time.perf_counter() - started
    limits = BatchLimits(max_batch_prefill_tokens=8192, max_batch_total_tokens=65536, max_batch_size=16)
    runner = loaded.create_runner(limits)
    engine = Engine(None, loaded.tokenizer, loaded.eos_token_ids, limits, runner=runner).start()
    tokenizer = loaded.tokenizer
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    requests = [GenerationRequest(encode(tokenizer, render_chat(tokenizer, p["messages"])), params) for p in prompts]
    texts = [""] * len(requests)
    generated = 0

    async def drain() -> None:
        nonlocal generated
        async for index, event in engine.stream_many(requests):
            if hasattr(event, "reason"):
                texts[index] = event.text
                generated += event.generated_tokens

    started = time.perf_counter()
    try:
        asyncio.run(drain())
    finally:
        engine.stop()
        runner.close()
    seconds = time.perf_counter() - started
    scores = [rag_eval.score(p["answer"], t, p["context"], p["question"]) for p, t in zip(prompts, texts)]
    answers = [{"question": p["question"], "expected": p["answer"], "answer": t, "correct": s.substring, "strict": s.strict}
               for p, t, s in zip(prompts, texts, scores)]  # fmt: skip
    correct = sum(a["correct"] for a in answers)
    strict = sum(a["strict"] for a in answers)
    return {"variant": variant, "weights": loaded.weight_format, "correct": correct, "strict": strict, "total": len(answers),
            "accuracy": correct / len(answers), "strict_accuracy": strict / len(answers), "load_s": load_s,
            "generate_s": seconds, "tok_s": generated / seconds, "answers": answers}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)

    prompts = retrieve_prompts()
    results = []
    for variant in args.variants:
        try:
            results.append(run_variant(variant, prompts, args.max_new_tokens))
        except Exception as exc:  # a variant that cannot run here (llama.cpp not built) is reported, not fatal
            results.append({"variant": variant, "error": f"{exc.__class__.__name__}: {exc}"})
    print(f"{len(prompts)} facts, RAG prompt of notebook 05, greedy, {args.max_new_tokens} new tokens")
    print(f"{'variant':<24} {'weights':>8} {'correct':>8} {'accuracy':>9} {'strict':>8} {'tok/s':>7}")
    for r in results:
        if "error" in r:
            print(f"{r['variant']:<24} {r['error']}")
            continue
        print(f"{r['variant']:<24} {r['weights']:>8} {r['correct']:>4}/{r['total']:<3} {r['accuracy']:>9.1%} "
              f"{r['strict']:>4}/{r['total']:<3} {r['tok_s']:>7.1f}")  # fmt: skip
    created = dt.datetime.now(dt.timezone.utc)
    path = Path(args.out) / f"quality-{created:%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"created": f"{created:%Y-%m-%dT%H:%M:%SZ}", "machine": machine(), "load_avgs": load_avgs(),
              "max_new_tokens": args.max_new_tokens, "results": results}  # fmt: skip
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
