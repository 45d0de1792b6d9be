"""In-process targets, each run in a child process of its own environment: no HTTP, the ceiling a server
can approach.

    python -m bench.inprocess engine    --workload W.json --levels 1 4 --out R.json   # from .venv
    python -m bench.inprocess llama-cpp --workload W.json --levels 1 --gguf F --out R.json   # from .venv-peers

A child process per target keeps one model's memory and threads out of the next target's measurement,
and lets llama.cpp run from the peers' environment. Standard library at import time; torch, tgi_course or
llama_cpp are imported by the backend that needs them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .stats import LevelResult, StreamSample, load_avg_1m, summarise
from .workload import Workload


# -- our engine ------------------------------------------------------------------------------------
def _engine_from_server_settings(quantize: str | None = None, **settings: Any) -> tuple[Any, Any, float, dict[str, Any]]:
    state, load_seconds, info = server_state_from_settings(quantize, **settings)
    return state.engine, state.loaded.tokenizer, load_seconds, info


def server_state_from_settings(quantize: str | None = None, **settings: Any) -> tuple[Any, float, dict[str, Any]]:
    """The engine exactly as ``tgi-course serve`` builds it (same settings, limits, threads, dtype).

    Going through ``create_app`` rather than constructing ``Engine`` here keeps this measurement honest
    when the server's engine choice changes: whatever the server would run, this runs.
    """
    import torch

    from tgi_course import __version__
    from tgi_course.config import ServerConfig
    from tgi_course.server import create_app

    config = ServerConfig.from_sources(env={}, overrides={"quantize": quantize, **settings})  # defaults, as LocalServer() starts with
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    started = time.perf_counter()
    app = create_app(config)
    load_seconds = time.perf_counter() - started
    state = app.state.tgi
    info = {
        "tgi_course": __version__,
        "torch": torch.__version__,
        "device": str(state.loaded.device),
        "dtype": str(state.loaded.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "quantize": quantize,
        "backend": state.loaded.backend,
        "weights": state.loaded.weight_format,
    }
    return state, load_seconds, info


async def _engine_burst(engine: Any, tokenizer: Any, workload: Workload, size: int, max_tokens: int, offset: int) -> tuple[list[StreamSample], list[str]]:
    from tgi_course.engine import ErrorEvent, FinishEvent, GenerationRequest, SamplingParams, TokenEvent, encode, render_chat

    params = SamplingParams(temperature=workload.temperature, max_new_tokens=max_tokens, ignore_eos=True)
    prompts = [encode(tokenizer, render_chat(tokenizer, workload.messages(offset + i))) for i in range(size)]
    requests = [GenerationRequest(ids, params) for ids in prompts]
    stamps: list[list[float]] = [[] for _ in requests]
    done: list[float | None] = [None] * size
    errors: list[str] = []
    sent = time.perf_counter()
    async for index, event in engine.stream_many(requests):
        if isinstance(event, TokenEvent):
            stamps[index].append(time.perf_counter())  # every token, text or not: the engine's own pace
        elif isinstance(event, FinishEvent):
            done[index] = time.perf_counter()
        elif isinstance(event, ErrorEvent):
            errors.append(event.message)
    samples = [
        StreamSample(sent, stamps[i], finished, len(stamps[i]), "events", len(prompts[i]))
        for i, finished in enumerate(done)
        if finished is not None
    ]
    return samples, errors


def run_engine(workload: Workload, levels: list[int], target: str, quantize: str | None = None) -> dict[str, Any]:
    engine, tokenizer, load_seconds, info = _engine_from_server_settings(quantize)
    engine.start()
    try:
        asyncio.run(_engine_burst(engine, tokenizer, workload, max(1, workload.warmup_requests), workload.warmup_max_tokens, 0))
        results = []
        for concurrency in levels:
            results.append(_measure(target, workload, concurrency, lambda size, offset: asyncio.run(
                _engine_burst(engine, tokenizer, workload, size, workload.max_tokens, offset))))
    finally:
        engine.stop()
    return {"levels": [r.to_dict() for r in results], "load_seconds": load_seconds, "info": info}


# -- llama.cpp through llama-cpp-python ----------------------------------------------------------------
def _llama_stream(llm: Any, messages: list[dict[str, str]], max_tokens: int, temperature: float) -> StreamSample:
    stamps: list[float] = []
    sent = time.perf_counter()
    for chunk in llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=temperature, stream=True):
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            stamps.append(time.perf_counter())
    # llama-cpp-python streams one chunk per token (it holds back only incomplete UTF-8, which these
    # English prompts do not produce), and its stream carries no usage: chunks are the count.
    return StreamSample(sent, stamps, time.perf_counter(), len(stamps), "chunks")


def run_llama_cpp(workload: Workload, levels: list[int], target: str, gguf: str, threads: int, n_ctx: int) -> dict[str, Any]:
    import llama_cpp

    started = time.perf_counter()
    llm = llama_cpp.Llama(model_path=gguf, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)
    load_seconds = time.perf_counter() - started
    for i in range(max(1, workload.warmup_requests)):
        _llama_stream(llm, workload.messages(i), workload.warmup_max_tokens, workload.temperature)

    def burst(size: int, offset: int) -> tuple[list[StreamSample], list[str]]:
        # A Llama object decodes one sequence at a time; more than one stream is not what it is for.
        if size != 1:
            raise ValueError("in-process llama.cpp is measured single-stream only")
        return [_llama_stream(llm, workload.messages(offset), workload.max_tokens, workload.temperature)], []

    results = [_measure(target, workload, c, burst) for c in levels]
    info = {"llama_cpp_python": llama_cpp.__version__, "threads": threads, "n_ctx": n_ctx, "gguf": gguf}
    return {"levels": [r.to_dict() for r in results], "load_seconds": load_seconds, "info": info}


# -- shared ------------------------------------------------------------------------------------------
def _measure(target: str, workload: Workload, concurrency: int, burst: Any) -> LevelResult:
    samples: list[StreamSample] = []
    errors: list[str] = []
    load_before = load_avg_1m()
    cpu_before = time.process_time()
    started = time.perf_counter()
    for round_index in range(workload.rounds_for(concurrency)):
        got, failed = burst(concurrency, round_index * concurrency)
        samples += got
        errors += failed
    wall = time.perf_counter() - started
    # In-process, the "client" is the process itself: its CPU time is the whole target's, not overhead.
    return summarise(target, concurrency, workload.rounds_for(concurrency), samples, errors, wall, time.process_time() - cpu_before, load_before, load_avg_1m())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("backend", choices=["engine", "llama-cpp"])
    parser.add_argument("--workload", required=True, help="JSON file written by the harness")
    parser.add_argument("--levels", type=int, nargs="+", default=[1])
    parser.add_argument("--target", help="name in the report (default: the backend)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--gguf", help="llama-cpp: the GGUF file")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="llama-cpp: threads (its default is half the cores)")
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--quantize", choices=["int4"], help="engine: QUANTIZE for the server settings")
    args = parser.parse_args(argv)
    workload = Workload.from_dict(json.loads(Path(args.workload).read_text()))
    target = args.target or args.backend
    if args.backend == "engine":
        result = run_engine(workload, args.levels, target, args.quantize)
    else:
        if not args.gguf:
            parser.error("llama-cpp needs --gguf")
        result = run_llama_cpp(workload, args.levels, target, args.gguf, args.threads, args.n_ctx)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
