"""SIGTERM drains: new work is refused at once, running streams may finish within SHUTDOWN_GRACE_SECONDS,
the rest end with an error event and [DONE], and the process exits within grace + 5 s. A real
``tgi-course serve`` process, stopped the way Docker, systemd and LocalServer stop it."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest

from tgi_course import LocalServer

pytestmark = pytest.mark.slow
CHAT = [{"role": "user", "content": "Count from one to one hundred."}]


def read_stream(url: str, max_tokens: int, out: list, started: threading.Event) -> None:
    body = {"messages": CHAT, "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0, "stream": True}
    data = []
    try:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                    if len(data) == 3:
                        started.set()
    except httpx.HTTPError as exc:
        data.append(f"transport error: {exc.__class__.__name__}")
    out.append(data)


def start_streams(server: LocalServer, count: int, max_tokens: int) -> tuple[list, list[threading.Thread]]:
    results: list = []
    threads = []
    for _ in range(count):
        started = threading.Event()
        thread = threading.Thread(target=read_stream, args=(server.url, max_tokens, results, started))
        thread.start()
        threads.append(thread)
        assert started.wait(120), "a stream did not start"
    return results, threads


def refused_or_503(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 503
    except httpx.TransportError:
        return True  # the listening socket is closed: new connections are refused


def test_sigterm_ends_long_streams_with_an_error_event_and_done_after_the_grace_period():
    grace = 2.0
    with LocalServer(shutdown_grace_seconds=grace, max_concurrent_requests=8) as server:
        results, threads = start_streams(server, 4, max_tokens=3000)
        pid, process = server.pid, server._process
        signalled = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        time.sleep(0.3)
        assert refused_or_503(server.url)
        for thread in threads:
            thread.join(timeout=grace + 10)
        process.wait(timeout=grace + 5)
        took = time.monotonic() - signalled
    assert took <= grace + 5, f"exited {took:.1f} s after SIGTERM"
    assert len(results) == 4
    for data in results:
        assert data[-1] == "[DONE]", data[-3:]
        error = json.loads(data[-2])["error"]
        assert error["http_status_code"] == 503 and "shutting down" in error["message"], error


def test_sigterm_lets_short_streams_finish_normally():
    grace = 120.0  # far longer than the streams need, even on a loaded machine
    with LocalServer(shutdown_grace_seconds=grace) as server:
        results, threads = start_streams(server, 3, max_tokens=40)
        process = server._process
        os.kill(server.pid, signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=grace)
        streams_done = time.monotonic()
        process.wait(timeout=grace)
        after_streams = time.monotonic() - streams_done
    assert after_streams < 10, f"exited {after_streams:.1f} s after its last stream: it should not wait out the grace period"
    for data in results:
        assert data[-1] == "[DONE]" and not any('"error"' in d for d in data), data[-3:]
        finals = [json.loads(d)["choices"][0]["finish_reason"] for d in data[:-1] if json.loads(d)["choices"]]
        assert finals[-1] == "length"
