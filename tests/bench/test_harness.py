"""The benchmark harness runs end to end and writes what the report, plots and notebook read.

Behaviour only: a tiny workload against a real local server. Speed is never asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tgi_course import LocalServer

ROOT = Path(__file__).resolve().parents[2]

LEVEL_FIELDS = {
    "target", "concurrency", "requests", "completed", "errors", "tokens", "wall_s", "aggregate_tok_s",
    "per_stream_decode_tok_s", "per_stream_e2e_tok_s", "ttft_p50_s", "ttft_p95_s", "itl_p50_ms", "itl_p95_ms",
    "token_source", "load_avg_1m_before", "error_messages",
}  # fmt: skip


@pytest.mark.slow
def test_tiny_workload_against_a_local_server_writes_results_and_plots(tmp_path):
    with LocalServer() as server:
        done = subprocess.run(
            [sys.executable, "-m", "bench", "--tiny", "--url", server.url, "--ignore-eos", "--out", str(tmp_path)],
            cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "MPLBACKEND": "Agg"},
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    [path] = tmp_path.glob("bench-*.json")
    result = json.loads(path.read_text())

    assert result["workload"]["max_tokens"] == 4 and result["workload"]["rounds"] == 1
    assert result["machine"]["cpu_count"] and result["machine"]["load_avg_before"]
    [target] = result["targets"]
    assert target["name"] == "url" and target["error"] is None
    levels = {lv["concurrency"]: lv for lv in target["levels"]}
    assert sorted(levels) == [1, 2]
    for concurrency, lv in levels.items():
        assert LEVEL_FIELDS <= set(lv)
        assert lv["errors"] == 0 and lv["completed"] == concurrency
        # ignore_eos reached our server: every stream generated exactly max_tokens, counted by the server.
        assert lv["tokens"] == 4 * concurrency and lv["token_source"] == "usage"
        assert lv["aggregate_tok_s"] > 0 and 0 < lv["ttft_p50_s"] <= lv["ttft_p95_s"]
        assert lv["itl_p50_ms"] is not None
    assert {r["name"] for r in result["ratios"]} >= {"TTFT p50 at 16 streams, issue 13", "server ready, warm cache"}
    assert "| url | 2 |" in done.stdout  # the table a person reads
    assert {p.name for p in tmp_path.glob("*.png")} == {f"{path.stem}-throughput.png", f"{path.stem}-ttft.png"}


def test_target_specs_and_percentiles():
    from bench.stats import percentile
    from bench.targets import parse_spec

    assert parse_spec("tgi-course@1,4,16", (1,)) == ("tgi-course", (1, 4, 16))
    assert parse_spec("engine", (1, 2)) == ("engine", (1, 2))
    with pytest.raises(ValueError, match="unknown target"):
        parse_spec("vllm", (1,))
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([0.0, 10.0], 0.95) == pytest.approx(9.5)


def test_ratios_read_one_run():
    from bench.report import ratios

    def lv(target, c, agg, decode, ttft):
        return {"target": target, "concurrency": c, "completed": c, "aggregate_tok_s": agg, "per_stream_decode_tok_s": decode, "ttft_p50_s": ttft}

    result = {
        "targets": [
            {"name": "tgi-course", "levels": [lv("tgi-course", 1, 50, 60, 0.1), lv("tgi-course", 16, 300, 20, 1.0)]},
            {"name": "engine", "levels": [lv("engine", 1, 55, 62, 0.1)]},
            {"name": "llama-cpp", "levels": [lv("llama-cpp", 1, 100, 120, 0.05)]},
            {"name": "llama-cpp-server", "levels": [lv("llama-cpp-server", 16, 100, 110, 5.0)]},
            {"name": "tgi-course-int4", "levels": [lv("tgi-course-int4", 1, 80, 90, 0.1), lv("tgi-course-int4", 16, 290, 19, 1.1)]},
        ],
        "ready_seconds_warm_cache": [4.0, 2.0, 3.0],
    }
    got = {r.name: (round(r.value, 3), r.met) for r in ratios(result) if r.value is not None}
    assert got == {
        "TTFT p50 at 16 streams, issue 13": (1.0, False),
        "single-stream decode, our HTTP vs llama.cpp in-process": (0.5, False),
        "aggregate at 16 streams, ours vs llama-cpp-python server": (3.0, True),
        "HTTP+SSE vs in-process engine (single stream)": (round(60 / 62, 3), True),
        "TTFT p50 at 16 streams": (1.0, True),
        "server ready, warm cache": (3.0, True),
        "single-stream decode, our HTTP with QUANTIZE=int4 vs llama.cpp in-process": (0.75, False),
        "aggregate at 16 streams, ours with QUANTIZE=int4 vs llama-cpp-python server": (2.9, False),
    }


def test_issue_13_ratios_compare_with_llama_server_and_vllm():
    from bench.report import ratios

    def lv(c, agg, decode, ttft=0.3):
        return {"concurrency": c, "completed": c, "aggregate_tok_s": agg, "per_stream_decode_tok_s": decode, "ttft_p50_s": ttft}

    result = {
        "targets": [
            {"name": "tgi-course", "levels": [lv(1, 40, 45), lv(16, 200, 14), lv(64, 300, 5)]},
            {"name": "llama-server", "levels": [lv(1, 80, 90), lv(16, 100, 7), lv(64, 150, 2.5)]},
            {"name": "vllm-cpu", "levels": [lv(16, 90, 6)]},
        ],
        "ready_seconds_warm_cache": [2.0, 2.5, 3.5, 4.0],
    }
    got = {r.name: (round(r.value, 3), r.met) for r in ratios(result)}
    assert got == {
        "one stream, ours vs llama-server": (0.5, False),
        "aggregate at 16 streams, ours vs llama-server -np 16": (2.0, True),
        "aggregate at 64 streams, ours vs llama-server -np 64": (2.0, True),
        "aggregate at 16 streams, ours vs vLLM CPU": (2.222, True),
        "TTFT p50 at 16 streams, issue 13": (0.3, True),
        "server ready, warm cache": (3.0, True),
    }


def test_ratios_use_the_median_of_repeated_passes():
    """``--repeat`` runs the target list several times; each figure is the median of its passes."""
    from bench.report import ratios

    def target(name, decode):
        return {"name": name, "levels": [{"concurrency": 1, "completed": 1, "per_stream_decode_tok_s": decode}]}

    result = {"targets": [target("engine", 20), target("tgi-course", 19), target("engine", 18), target("tgi-course", 15),
                          target("engine", 17), target("tgi-course", 18)]}  # fmt: skip
    http = next(r for r in ratios(result) if r.name.startswith("HTTP+SSE"))
    assert http.value == pytest.approx(18 / 18)


def test_gpu_benchmark_runs_at_tiny_size_on_the_cpu(tmp_path):
    """bench.gpu's plumbing (random model, engine burst, transformers generate, JSON) at a size CI can afford;
    the real figures need a CUDA machine (Llama-3-8B shape)."""
    import json

    from bench import gpu

    assert gpu.main(["--shape", "tiny", "--device", "cpu", "--levels", "1", "2", "--max-tokens", "3", "--prompt-tokens", "5", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("gpu-*.json")
    record = json.loads(path.read_text())
    assert [r["streams"] for r in record["rows"]] == [1, 2]
    for row in record["rows"]:
        assert row["engine"]["tokens"] == row["streams"] * 3 == row["transformers_generate"]["tokens"]
        assert row["engine"]["aggregate_tok_s"] > 0 and row["transformers_generate"]["ttft_p50_s"] > 0


def test_constrained_benchmark_plumbing(tmp_path):
    """bench.constrained end to end with the real model and the server's validator, at a tiny size."""
    import json

    from bench import constrained

    assert constrained.main(["--streams", "2", "--max-tokens", "6", "--repeats", "1", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("constrained-*.json")
    record = json.loads(path.read_text())
    assert set(record["per_stream_tok_s_from_median_step"]) == {"plain", "json", "mixed"}
    assert record["json_vs_plain"] > 0 and record["plain_beside_json_vs_plain"] > 0


def test_grammar_library_benchmark_plumbing(tmp_path):
    """bench.grammar_libs with the real tokenizer: xgrammar (the dependency) measured; absent libraries skipped."""
    import json

    from bench import grammar_libs

    assert grammar_libs.main(["--repeats", "1", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("grammar-libs-*.json")
    rows = json.loads(path.read_text())["rows"]
    measured = {(row["library"], row["grammar"]) for row in rows}
    assert {("xgrammar", "note schema"), ("xgrammar+engine mask", "tool call")} <= measured
    assert all(row["step_us_median"] > 0 for row in rows)


def test_loader_thread_benchmark_plumbing(tmp_path):
    """bench.loader_thread: both ways of loading (main thread, thread that exits) decode the real model.

    int4 where this CPU gives it bf16 activations (the bench loads with DTYPE auto); dense elsewhere, where the
    server refuses int4 (tests/engine/test_quantize.py checks that refusal).
    """
    import json

    from bench import loader_thread
    from tgi_course.models.loading import cpu_supports_bf16

    quantize = ["--quantize", "int4"] if cpu_supports_bf16() else []
    assert loader_thread.main([*quantize, "--rounds", "1", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("loader-thread-*.json")
    medians = json.loads(path.read_text())["median_step_ms"]
    assert set(medians) == {"main thread", "thread that exits"}
    assert all(step > 0 for where in medians.values() for step in where.values())
