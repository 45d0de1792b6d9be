"""Load behaviour over HTTP: shared decode steps, overload, and a client that leaves mid-stream."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

http = httpx.Client(timeout=120)
LONG = {"messages": [{"role": "user", "content": "Count from one to one hundred."}], "max_tokens": 48, "temperature": 0}


def test_two_concurrent_requests_share_decode_steps(server):
    client = server.openai()
    ids: list[str] = []

    def ask() -> None:
        ids.append(client.chat.completions.create(model="tgi", **LONG).id)

    before = server.state.engine.stats.steps
    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    steps = [rows for number, rows in server.state.engine.stats.recent_steps if number > before]
    shared = [rows for rows in steps if len(rows) == 2]
    assert len(ids) == 2
    assert len(shared) >= 8 and len(shared) >= 0.6 * len(steps), f"only {len(shared)} of {len(steps)} steps served both requests"


def test_over_max_concurrent_requests_gets_429_then_recovers(start_server):
    server = start_server(max_concurrent_requests=1)
    with http.stream("POST", f"{server.url}/v1/chat/completions", json={**LONG, "stream": True}) as first:
        lines = first.iter_lines()
        next(lines)  # the stream has started: its slot is taken
        second = http.post(f"{server.url}/v1/chat/completions", json={"messages": LONG["messages"], "max_tokens": 2})
        assert second.status_code == 429
        assert second.json()["error_type"] == "overloaded" and "MAX_CONCURRENT_REQUESTS=1" in second.json()["error"]
        assert second.headers["retry-after"] == "1"  # the openai client waits this long before its own retry
        with pytest.raises(openai.RateLimitError):
            server.openai().chat.completions.create(model="tgi", messages=LONG["messages"], max_tokens=2)
        for _ in lines:
            pass
    assert http.post(f"{server.url}/v1/chat/completions", json={"messages": LONG["messages"], "max_tokens": 2}).status_code == 200


def test_client_disconnect_mid_stream_frees_its_slot(start_server):
    server = start_server(max_concurrent_requests=1)
    engine = server.state.engine
    body = {"messages": LONG["messages"], "max_tokens": 2000 - 100, "temperature": 0, "stream": True}
    with http.stream("POST", f"{server.url}/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()
        for _ in range(5):
            next(lines)
        assert engine.stats.batch_size == 1
    # The connection is closed: the row must leave the batch within a few steps, and the slot must free.
    deadline = time.monotonic() + 20
    while (engine.stats.batch_size or server.state.admission.in_flight) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.stats.batch_size == 0
    assert server.state.admission.in_flight == 0
    assert http.post(f"{server.url}/v1/chat/completions", json={"messages": LONG["messages"], "max_tokens": 2}).status_code == 200
