"""Answer quality per runner (issue 13): the corpus's Q/A facts through the course's RAG prompt, greedy.

    .venv/bin/python -m bench.quality                               # every runner and weight format built here
    .venv/bin/python -m bench.quality --variants llama.cpp:Q4_1 transformers:float32

llama.cpp multiplies quantized weights with activations it quantizes too (Q8 blocks), so its greedy answers
can differ from the dense path's on the same weights. This measures what that costs a learner: each fact of
``data/manifest.json`` is asked the way notebook 05 asks it (the corpus chunked as there, the 3 nearest
chunks by the packaged all-MiniLM-L6-v2 embeddings, context in the system message, the bare question as
the user turn), 48 new tokens greedy, and counts an answer correct when it contains the fact's answer
(case and spacing ignored). Retrieval is done once, so every variant sees the same prompts; a variant is
``backend:weights``: ``transformers:float32``, ``transformers:bfloat16``, ``llama.cpp:Q4_1`` (the GGUF as
shipped) or ``llama.cpp:F16`` (the same weights de-quantized, see ``GGUF_WEIGHTS``). Prints accuracy and
decode speed per variant and writes bench/results/quality-<UTC time>.json. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from .report import RESULTS
from .stats import load_avgs, machine

DEFAULT_VARIANTS = ("transformers:float32", "transformers:bfloat16", "llama.cpp:Q4_1", "llama.cpp:F16")


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s.%-]", " ", text.lower())).strip()


def retrieve_prompts() -> list[dict[str, Any]]:
    """Each fact with the messages the course's RAG chain would send for it."""
    from langchain_chroma import Chroma
    from langchain_core.documents import Document

    from tgi_course.course import rag
    from tgi_course.course.corpus import data_dir, facts, load_manifest

    pages = []
    for doc in load_manifest()["documents"]:
        html = (data_dir() / doc["file"]).read_text(encoding="utf-8")
        from bs4 import BeautifulSoup  # WebBaseLoader's own parser: the same page text the notebook gets

        text = BeautifulSoup(html, "html.parser").get_text()
        pages.append(Document(page_content=text, metadata={"source": doc["file"], "title": doc["title"]}))
    chunks = rag.split_documents(pages)
    store = Chroma.from_documents(chunks, rag.embeddings(), collection_name=f"quality-{time.time_ns()}")
    retriever = store.as_retriever(search_kwargs={"k": rag.TOP_K})
    prompt = rag.rag_prompt()
    out = []
    for fact in facts():
        context = rag.format_docs(retriever.invoke(fact.question))
        messages = prompt.format_messages(context=context, question=fact.question)
        role = {"system": "system", "human": "user"}
        out.append({"question": fact.question, "answer": fact.answer, "file": fact.file,
                    "messages": [{"role": role[m.type], "content": m.content} for m in messages]})  # fmt: skip
    return out


def run_variant(variant: str, prompts: list[dict[str, Any]], max_new_tokens: int) -> dict[str, Any]:
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
    answers = [{"question": p["question"], "expected": p["answer"], "answer": t, "correct": normalise(p["answer"]) in normalise(t)}
               for p, t in zip(prompts, texts)]  # fmt: skip
    correct = sum(a["correct"] for a in answers)
    return {"variant": variant, "weights": loaded.weight_format, "correct": correct, "total": len(answers),
            "accuracy": correct / len(answers), "load_s": load_s, "generate_s": seconds,
            "tok_s": generated / seconds, "answers": answers}  # fmt: skip


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
    print(f"{'variant':<24} {'weights':>8} {'correct':>8} {'accuracy':>9} {'tok/s':>7}")
    for r in results:
        if "error" in r:
            print(f"{r['variant']:<24} {r['error']}")
            continue
        print(f"{r['variant']:<24} {r['weights']:>8} {r['correct']:>4}/{r['total']:<3} {r['accuracy']:>9.1%} {r['tok_s']:>7.1f}")
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
