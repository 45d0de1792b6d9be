"""Clients that go away, in every phase, give back their row at the next step and their slot at once;
admission counts sequences; failures are labelled by error type; the in-flight gauge is right."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

http = httpx.Client(timeout=120)
CHAT = [{"role": "user", "content": "Count from one to one hundred."}]
LONG = {"messages": CHAT, "max_tokens": 400, "temperature": 0, "ignore_eos": True}


def metric(server, name: str, **labels: str) -> float:
    text = http.get(f"{server.url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def wait_idle(server, timeout: float = 30.0) -> None:
    engine, admission = server.state.engine, server.state.admission
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not (engine.stats.batch_size or engine.stats.queue_size or engine.tracked or admission.in_flight or admission.sequences):
            return
        time.sleep(0.05)
    with engine._wake:
        detail = [(i, q.cancelled, q.done, len(q.state.generated), i in engine.runner.seq_ids) for i, q in engine._tracked.items()]
    raise AssertionError(
        f"{detail} not idle: batch {engine.stats.batch_size}, queue {engine.stats.queue_size}, tracked {engine.tracked}, "
        f"in flight {admission.in_flight}, sequences {admission.sequences}"
    )


def all_succeed(server, count: int) -> None:
    """``count`` concurrent requests all get 200: no slot was leaked."""

    async def run() -> list[int]:
        async with httpx.AsyncClient(timeout=120) as client:
            body = {"messages": CHAT, "max_tokens": 2}
            responses = await asyncio.gather(*(client.post(f"{server.url}/v1/chat/completions", json=body) for _ in range(count)))
        return [r.status_code for r in responses]

    assert asyncio.run(run()) == [200] * count


@pytest.fixture(scope="module")
def room(start_server):
    server = start_server(max_concurrent_requests=16)
    all_succeed(server, 6)  # a fresh process's first steps build their kernels: slow, and not what is tested
    return server


def test_non_streaming_clients_that_time_out_free_rows_and_slots(room):
    def impatient() -> None:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{room.url}/v1/chat/completions", json=LONG, timeout=1.5)

    threads = [threading.Thread(target=impatient) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_idle(room)
    assert metric(room, "tgi_request_failure_total", route="chat_completions", err="client_disconnected") >= 6
    all_succeed(room, 16)


def test_streams_abandoned_before_the_first_byte_free_rows_and_slots(room):
    async def abandon() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            async with client.stream("POST", f"{room.url}/v1/chat/completions", json={**LONG, "stream": True}) as response:
                assert response.status_code in (200, 429)
            # leaving the block closes the connection before any byte of the body is read

    async def run() -> None:
        await asyncio.gather(*(abandon() for _ in range(20)))

    asyncio.run(run())
    wait_idle(room)
    all_succeed(room, 16)


def test_a_queued_request_whose_client_leaves_frees_its_place_in_the_queue(start_server):
    server = start_server(max_batch_size=1, max_concurrent_requests=4)
    with http.stream("POST", f"{server.url}/v1/chat/completions", json={**LONG, "stream": True}) as running:
        lines = running.iter_lines()
        next(lines)
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{server.url}/v1/chat/completions", json={"messages": CHAT, "max_tokens": 4}, timeout=1.0)
        deadline = time.monotonic() + 5
        while (server.state.engine.stats.queue_size or server.state.admission.in_flight > 1) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.state.engine.stats.queue_size == 0 and server.state.admission.in_flight == 1
    wait_idle(server)


def test_in_flight_gauge_and_failure_labels(room):
    with http.stream("POST", f"{room.url}/v1/chat/completions", json={**LONG, "stream": True}) as response:
        lines = response.iter_lines()  # kept: a dropped line iterator closes the connection (a disconnect)
        next(lines)
        assert metric(room, "tgi_request_in_flight") == 1
    wait_idle(room)  # the client left mid-stream
    assert metric(room, "tgi_request_in_flight") == 0
    before = metric(room, "tgi_request_failure_total", route="chat_completions", err="validation")
    assert http.post(f"{room.url}/v1/chat/completions", json={"messages": CHAT, "temperature": 9}).status_code == 422
    assert metric(room, "tgi_request_failure_total", route="chat_completions", err="validation") == before + 1
    assert http.post(f"{room.url}/generate", json={"inputs": "Hi", "parameters": {"top_n_tokens": 99}}).status_code == 422
    assert metric(room, "tgi_request_failure_total", route="generate", err="validation") >= 1


def test_admission_counts_sequences_not_only_requests(start_server):
    server = start_server(max_concurrent_requests=4)
    body = {"messages": CHAT, "max_tokens": 60, "temperature": 0.7, "seed": 1, "ignore_eos": True, "stream": True}
    with http.stream("POST", f"{server.url}/v1/chat/completions", json={**body, "n": 4}) as running:
        lines = running.iter_lines()
        next(lines)
        assert server.state.admission.sequences == 4
        full = http.post(f"{server.url}/v1/chat/completions", json={"messages": CHAT, "max_tokens": 2})
        assert full.status_code == 429 and full.headers["retry-after"] == "1"
        for _ in lines:
            pass
    too_many = http.post(f"{server.url}/v1/chat/completions", json={"messages": CHAT, "max_tokens": 2, "n": 5})
    assert too_many.status_code == 422 and "MAX_CONCURRENT_REQUESTS=4" in too_many.json()["error"]
    wait_idle(server)


def test_max_client_batch_size_is_reported_and_enforced(room):
    info = http.get(f"{room.url}/info").json()
    assert info["max_client_batch_size"] == 4 and info["validation_workers"] == 2
    five = http.post(f"{room.url}/v1/completions", json={"prompt": ["a", "b", "c", "d", "e"], "max_tokens": 1})
    assert five.status_code == 422 and "MAX_CLIENT_BATCH_SIZE" in five.json()["error"] and "5 prompts" in five.json()["error"]
    four = http.post(f"{room.url}/v1/completions", json={"prompt": ["a", "b", "c", "d"], "max_tokens": 1})
    assert four.status_code == 200 and len(four.json()["choices"]) == 4


def test_bad_values_leave_bystanders_unharmed(room):
    """Each bad input next to a running stream: the bad one gets a 422 naming its field, the stream ends normally."""
    bad_bodies = {
        "temperature": {"messages": CHAT, "temperature": float("nan")},
        "top_p": {"messages": CHAT, "top_p": float("inf")},
        "repetition_penalty": {"messages": CHAT, "repetition_penalty": 1e30},
        "frequency_penalty": {"messages": CHAT, "frequency_penalty": -1e9},
        "max_tokens": {"messages": CHAT, "max_tokens": 10**9},
        "logit_bias": {"messages": CHAT, "logit_bias": {"0": float("nan")}},
    }
    with http.stream("POST", f"{room.url}/v1/chat/completions", json={**LONG, "max_tokens": 40, "stream": True}) as bystander:
        lines = bystander.iter_lines()
        next(lines)
        for field, body in bad_bodies.items():
            import json

            response = http.post(f"{room.url}/v1/chat/completions", content=json.dumps(body), headers={"content-type": "application/json"})
            assert response.status_code == 422, (field, response.text)
            assert f"`{field}" in response.json()["error"], (field, response.text)
        rest = [line for line in lines if line.startswith("data:")]
    assert rest[-1] == "data: [DONE]" and not any('"error"' in line for line in rest)
    wait_idle(room)


def test_a_stream_whose_client_stops_reading_is_ended_by_the_send_timeout(room, monkeypatch):
    """A client that keeps its connection open but reads nothing cannot hold a slot: the send times out.

    Filling real loopback socket buffers takes megabytes of events, so the app is called directly over ASGI
    with a ``send`` that blocks for ever after the first body chunk (what a full TCP window looks like to the
    server), and the timeout is shortened. Everything between the route and sse-starlette is the real code.
    """
    import json

    from tgi_course.server import admission as admission_module

    monkeypatch.setattr(admission_module, "STREAM_SEND_TIMEOUT_SECONDS", 0.5)
    body = json.dumps({**LONG, "max_tokens": 200, "stream": True}).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "root_path": "", "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 50000), "state": {},
    }
    sent: list[dict] = []

    async def run() -> float:
        stalled = asyncio.Event()
        delivered = False

        async def receive() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # connected, silent: never a disconnect
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and message.get("body"):
                stalled.set()
                await asyncio.Event().wait()  # the window is full: this send never completes

        started = time.monotonic()
        await asyncio.wait_for(room.app(scope, receive, send), timeout=30)
        assert stalled.is_set()
        return time.monotonic() - started

    seconds = asyncio.run(run())
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert seconds < 20, f"the stalled stream took {seconds:.1f} s to end"
    wait_idle(room)  # its row left the batch and its slot came back
    all_succeed(room, 16)
