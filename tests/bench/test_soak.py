"""The soak benchmark (issue 12) runs end to end and writes the report it promises.

Behaviour only: a 10-second soak of 8 workers against a fresh LocalServer. Speed is never asserted, and
neither is a leak-free server: finding leaks is the benchmark's job, reporting them is what is tested.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SUMMARY_FIELDS = {
    "requests", "by_kind", "by_outcome", "server_errors", "server_errors_by_message", "completed_streams", "latency_p50_s",
    "latency_p99_s", "ttft_p50_s", "ttft_p99_s", "tokens_per_s_completed", "tokens_per_s_received", "tokens_per_stream_min",
}  # fmt: skip
RSS_FIELDS = {"warmup_end_mib", "end_mib", "growth_after_warmup_mib", "slope_after_warmup_mib_per_min", "idle_mib", "fds_end", "threads_end"}
GAUGES = {"tgi_batch_current_size", "tgi_queue_size", "tgi_request_in_flight"}


@pytest.mark.slow
def test_short_soak_against_a_local_server_reports_outcomes_rss_and_idle_state(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--duration", "10", "--concurrency", "8", "--max-tokens", "4",
         "--sample-every", "2", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=400, env=dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    [path] = tmp_path.glob("soak-*.json")
    record = json.loads(path.read_text())

    assert record["schema"] == "tgi-course-soak/1" and record["complete"] is True and not record["interrupted"]
    assert record["plan"]["concurrency"] == 8 and record["plan"]["max_tokens"] == 4 and record["plan"]["duration"] == 10
    assert abs(sum(record["plan"]["mix"].values()) - 1) < 1e-9
    assert 9 <= record["load_s"] <= 15  # the load stopped on time; the workers' last requests are the drain

    s = record["summary"]
    assert SUMMARY_FIELDS <= set(s)
    assert set(s["by_kind"]) == {"complete", "early", "mid", "nonstream"}
    # Every request sent has exactly one outcome, and the server errors are those outcomes' count.
    assert sum(n for outcomes in s["by_kind"].values() for n in outcomes.values()) == s["requests"] == sum(s["by_outcome"].values())
    assert s["server_errors"] == s["by_outcome"].get("server_error", 0) == sum(e["count"] for e in s["server_errors_by_message"])
    assert s["requests"] >= 8 and s["by_kind"]["complete"]  # the loop ran: at least one round per worker
    if s["completed_streams"]:
        assert 0 < s["ttft_p50_s"] <= s["latency_p50_s"] and s["latency_p50_s"] <= s["latency_p99_s"]
        assert s["tokens_per_stream_min"] == s["tokens_per_stream_max"] == 4  # ignore_eos reached the server

    # RSS of the LocalServer child, sampled during the load, at warm-up end and at the end.
    assert record["target"]["pid"] and record["target"]["pid_how"] == "LocalServer.pid"
    rss = record["rss"]
    assert rss["available"] and RSS_FIELDS <= set(rss) and rss["end_mib"] > 0 and rss["warmup_end_t"] <= rss["end_t"]
    assert isinstance(rss["warmup_reached"], bool)  # whether 10 s were enough depends on the machine
    labels = {p.get("label") for p in record["samples"]}
    assert {"load end", "drained", "idle", "after probe"} <= labels and len(record["samples"]) >= 6
    assert len(record["timeline"]) == 10

    # The idle check and the probe of fresh requests ran and say what they saw.
    assert set(record["idle"]["gauges"]) == GAUGES == set(record["idle"]["gauges_after_settle"])
    assert record["probe"]["requests"] == 16 and set(record["probe"]) >= {"status_200", "completed", "statuses", "passed"}
    assert {c["name"] for c in record["checks"]} >= {"server errors", "16 new concurrent requests"}
    assert record["server_log"] is not None and "tracebacks" in record["server_log"]

    assert "| client | sent | outcomes |" in done.stdout and "| complete |" in done.stdout  # the tables a person reads
    assert "RSS: start" in done.stdout and "Probe: 16 concurrent requests" in done.stdout and f"wrote {path}" in done.stdout


def test_mix_metrics_and_rss_summaries_without_a_server():
    import argparse

    from bench.soak import Plan, Result, parse_metrics, parse_mix, summarise_rss, warmup_end

    assert parse_mix("complete=60,early=15,mid=15,nonstream=10") == pytest.approx({"complete": 0.6, "early": 0.15, "mid": 0.15, "nonstream": 0.1})
    assert parse_mix("complete=1") == {"complete": 1.0, "early": 0.0, "mid": 0.0, "nonstream": 0.0}
    for bad in ("complete=60,sloppy=5", "complete=0", "early"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_mix(bad)

    metrics = parse_metrics(
        "# HELP tgi_queue_size Requests waiting\n# TYPE tgi_queue_size gauge\ntgi_queue_size 0.0\n"
        'tgi_request_failure_total{err="generation",route="chat_completions"} 2.0\ntgi_batch_current_size 3\n'
    )
    assert metrics == {"tgi_queue_size": 0.0, 'tgi_request_failure_total{err="generation",route="chat_completions"}': 2.0, "tgi_batch_current_size": 3.0}

    plan = Plan(60, 4, 8, {"complete": 1.0}, 1.5, 0.1, warmup=20, sample_every=5, drain=10, settle=1, idle_wait=1, seed=0)
    done = [Result("complete", "completed", 0.0, t) for t in (30.0, 10.0, 25.0, 50.0)] + [Result("mid", "abandoned_mid_stream", 0.0, 5.0)]
    assert warmup_end(done, plan) == 50.0  # the 4th completed stream, later than --warmup
    assert warmup_end(done[:3], plan) is None  # fewer completed streams than workers: never warm

    samples = [{"t": float(t), "rss_mib": 500.0 + min(t, 20) + (0.5 if t >= 40 else 0), "fds": 20, "threads": 9} for t in range(0, 56, 5)]
    samples += [{"t": 60.0, "label": "load end", "rss_mib": 520.5}, {"t": 62.0, "label": "drained", "rss_mib": 521.0}, {"t": 65.0, "label": "idle", "rss_mib": 480.0}]
    rss = summarise_rss(samples, 20.0, load_end=60.0)
    assert rss["warmup_reached"] and rss["warmup_end_t"] == 20 and rss["warmup_end_mib"] == 520
    assert rss["load_end_mib"] == 520.5 and rss["end_t"] == 62 and rss["end_mib"] == 521.0
    assert rss["growth_after_warmup_mib"] == 1.0 and rss["idle_mib"] == 480 and rss["start_mib"] == 500
    assert 0 < rss["slope_after_warmup_mib_per_min"] < 2
    late = summarise_rss(samples, None, load_end=60.0)  # warm-up never ended: load end vs drained, flagged
    assert not late["warmup_reached"] and late["warmup_end_t"] == 60 and late["growth_after_warmup_mib"] == 0.5
    assert summarise_rss([{"t": 0.0}], 20.0, 60.0) == {"available": False}


def test_finds_the_process_listening_on_a_port():
    from bench.soak import pid_listening_on, proc_status

    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux /proc")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert pid_listening_on(listener.getsockname()[1]) == os.getpid()
    status = proc_status(os.getpid())
    assert status and status["VmRSS"] > 0 and status["fds"] > 0 and status["Threads"] >= 1
