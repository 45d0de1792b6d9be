"""GET /engine/steps, the engine's step record (tgi-course only): its shape, auth, bounds, and that it names
the client's own requests, so overlapping requests can be seen sharing steps."""

from __future__ import annotations

import asyncio

import httpx

from tgi_course.course.connect import Connection
from tgi_course.course.timeline import fetch_steps, last_step, plot_timeline, shared_steps, staggered_streams, steps_of
from tgi_course.engine import StepLog
from tgi_course.server.routes.course import MAX_STEPS

http = httpx.Client(timeout=120)
HI = [{"role": "user", "content": "Say hello."}]
LONG = [{"role": "user", "content": "Count from one to one hundred."}]


def _steps(server, **params) -> httpx.Response:
    return http.get(f"{server.url}/engine/steps", params=params)


def test_the_record_names_each_step_its_kind_times_and_requests(server):
    before = _steps(server, limit=1).json()["last_step"]
    completion = server.openai().chat.completions.create(model="tgi", messages=HI, max_tokens=6, temperature=0)
    response = _steps(server, since=before)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"now", "last_step", "kept", "dropped", "more", "steps"}
    assert body["dropped"] == 0 and body["more"] is False and body["kept"] >= MAX_STEPS
    steps = body["steps"]
    assert [s["step"] for s in steps] == list(range(before + 1, body["last_step"] + 1))
    for step in steps:
        assert set(step) == {"step", "kind", "start", "end", "request_ids"}
        assert step["kind"] in ("prefill", "decode") and step["start"] <= step["end"] <= body["now"]
    for earlier, later in zip(steps, steps[1:]):
        assert earlier["end"] <= later["start"], (earlier, later)
    # The client's id is the engine's: one step per generated token, the prefill first.
    mine = [s for s in steps if completion.id in s["request_ids"]]
    assert len(mine) == completion.usage.completion_tokens, (completion.usage, mine)
    assert [s["kind"] for s in mine] == ["prefill"] + ["decode"] * (len(mine) - 1)


def test_several_choices_and_legacy_completions_map_to_their_response_ids(server):
    client = server.openai()
    before = _steps(server, limit=1).json()["last_step"]
    chat = client.chat.completions.create(model="tgi", messages=HI, max_tokens=3, temperature=0.8, seed=1, n=2)
    legacy = client.completions.create(model="tgi", prompt="Once upon a time", max_tokens=3, temperature=0)
    seen = {rid for s in _steps(server, since=before).json()["steps"] for rid in s["request_ids"]}
    assert {f"{chat.id}#0", f"{chat.id}#1", legacy.id} <= seen, (chat.id, legacy.id, seen)
    assert chat.id not in seen  # several choices: each is named by its index


def test_the_route_is_behind_the_api_key_like_inference(start_server):
    guarded = start_server(api_key="s3cret")
    refused = http.get(f"{guarded.url}/engine/steps")
    assert refused.status_code == 401 and refused.json()["error_type"] == "authentication"
    assert http.get(f"{guarded.url}/engine/steps", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert http.get(f"{guarded.url}/engine/steps", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert last_step(Connection(guarded.url, api_key="s3cret")) is not None


def test_bounds_are_checked_and_paging_covers_every_step(server):
    for params in ({"limit": 0}, {"limit": MAX_STEPS + 1}, {"since": -1}, {"limit": "many"}):
        response = _steps(server, **params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error_type"] == "validation"
    before = _steps(server, limit=1).json()["last_step"]
    server.openai().chat.completions.create(model="tgi", messages=HI, max_tokens=5, temperature=0)
    last = _steps(server, since=before, limit=1).json()
    assert len(last["steps"]) == 1 and last["more"] is True
    paged, since = [], before
    while True:
        page = _steps(server, since=since, limit=2).json()
        assert len(page["steps"]) <= 2
        paged += [s["step"] for s in page["steps"]]
        if not page["more"]:
            break
        since = page["steps"][-1]["step"]
    assert paged == list(range(before + 1, page["last_step"] + 1))
    assert _steps(server, since=page["last_step"]).json()["steps"] == []
    assert _steps(server, since=10**30).json()["steps"] == []  # a number from the future is no error


def test_the_record_is_a_bounded_ring_and_says_what_fell_off():
    log = StepLog(kept=5)
    for i in range(8):
        log.append("decode", float(i), float(i) + 0.5, (f"r{i}",))
    window = log.window(since=0)
    assert [r.number for r in window.records] == [4, 5, 6, 7, 8]
    assert window.dropped == 3 and window.last_number == 8 and not window.more
    assert log.window(since=5).dropped == 0 and [r.number for r in log.window(since=5, limit=2).records] == [6, 7]
    assert log.window(since=5, limit=2).more
    assert StepLog().window().records == () and StepLog().window().last_number == 0


def test_overlapping_streams_share_steps_and_are_found_by_their_ids(server):
    conn = Connection(server.url)
    before = last_step(conn)
    assert before is not None
    prompts = ["Count from one to one hundred.", "List the days of the week.", "Name ten colours."]
    traces = asyncio.run(staggered_streams(server.async_openai(), "tgi", prompts, max_tokens=24))
    steps = fetch_steps(conn, since=before)
    assert steps is not None and len(traces) == 3
    for trace in traces:
        assert trace.id and trace.id.startswith("chatcmpl-") and trace.arrivals, trace
        mine = steps_of(trace, steps)
        assert mine and mine[0].kind == "prefill", (trace.id, mine[:2])
        # Times are on the client's clock: the request was sent before its prefill began, and its first
        # text arrived after that step ended (same machine: the clocks agree to well under a millisecond).
        assert trace.sent <= mine[0].start + 0.01 and mine[0].end <= trace.arrivals[0] + 0.01, (trace, mine[0])
    shared = shared_steps(traces, steps)
    assert shared, "the three staggered streams never shared a step"
    # Each later request joined while the one before it was still decoding.
    for first, second in zip(traces, traces[1:]):
        assert any(first.id in s.request_ids and second.id in s.request_ids for s in steps), (first.id, second.id)

    # The notebook's picture of this run: one row per request, a bar per step it was in.
    import matplotlib.pyplot as plt

    for with_steps in (steps, None):
        fig = plot_timeline(traces, with_steps)
        ax = fig.axes[0]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["request 3", "request 2", "request 1"]
        bars = sum(len(c.get_paths()) for c in ax.collections)
        assert bars == (sum(len(steps_of(t, steps)) for t in traces) if with_steps else 0)
        plt.close(fig)


def test_a_server_without_the_route_reads_as_none(server):
    """What the notebook meets on real TGI or vLLM: no step record, and no exception."""
    elsewhere = Connection(server.url + "/no-such-prefix")
    assert last_step(elsewhere) is None and fetch_steps(elsewhere) is None


def test_the_route_is_documented_as_tgi_course_only(server):
    operation = http.get(f"{server.url}/openapi.json").json()["paths"]["/engine/steps"]["get"]
    assert operation["tags"] == ["tgi-course only"] and "TGI has no such route" in operation["description"]
    assert {p["name"] for p in operation["parameters"]} == {"since", "limit"}
