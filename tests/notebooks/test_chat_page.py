"""Notebook 03's streaming chat page in a real headless chromium, against the real server and default model.

The page (tgi_course/course/web/) is served by :mod:`tgi_course.course.chat_page` from its own port, so
the browser's request to the model server is cross-origin and works only because the server allows the
page's origin (CORS_ALLOW_ORIGIN). The checks: the page loads; an answer arrives in several DOM updates
before the stream ends (it streams, whatever the words); Stop aborts the request and the server frees the
row; a page from an origin the server does not allow cannot fetch; a refused request shows the server's
message. Model text is never compared: it differs between dtypes and backends.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tgi_course.course import chat_page
from tgi_course.course.chat_page import ChatPage, preflight
from tgi_course.processes import free_port

from browser_helpers import browser_page

ROUTE = "chat_completions"


@pytest.fixture(scope="module")
def page_server():
    """The page's own server, started first: the model server must know the page's origin when it starts."""
    with ChatPage() as served:
        yield served


@pytest.fixture(scope="module")
def model_server(start_server, page_server):
    return start_server(cors_allow_origin=(page_server.origin,))


@pytest.fixture(scope="module")
def browser():
    with browser_page() as page:
        yield page


def metric(server_url: str, name: str, labels: str = "") -> float:
    """One sample of the server's /metrics (0 when the series does not exist yet)."""
    text = httpx.get(f"{server_url}/metrics", timeout=10).text
    pattern = re.compile(rf"^{re.escape(name)}{re.escape(labels)}\s+([0-9.eE+-]+)$", re.M)
    found = pattern.search(text)
    return float(found.group(1)) if found else 0.0


def open_page(browser, page_server: ChatPage, model_server, **fields) -> None:
    browser.goto(page_server.link(model_server.url, model="default"))
    browser.wait_for_selector("#status[data-state='idle']", timeout=30_000)
    if "max_tokens" in fields:
        browser.fill("#max-tokens", str(fields["max_tokens"]))
    if fields.get("ignore_eos"):
        browser.check("#ignore-eos")
    if "question" in fields:
        browser.fill("#question", fields["question"])


# Every change of the answer while the page says "streaming", with its length and time: a streamed answer
# grows in many steps before the status leaves "streaming"; a buffered one would appear in one step.
RECORD_UPDATES = """() => {
  window.updates = [];
  const answer = document.getElementById("answer"), status = document.getElementById("status");
  new MutationObserver(() => window.updates.push({
    length: answer.textContent.length, state: status.dataset.state, t: performance.now(),
  })).observe(answer, { childList: true, characterData: true, subtree: true });
}"""


def test_the_server_allows_the_page_origin_and_no_other(model_server, page_server):
    allowed = preflight(model_server.url, page_server.origin, ("content-type",))
    assert allowed.allowed and allowed.allow_origin == page_server.origin, allowed
    with ChatPage() as elsewhere:
        refused = preflight(model_server.url, elsewhere.origin, ("content-type",))
        assert not refused.allowed and refused.allow_origin is None, refused
    # The answer itself carries the header too: without it the browser hides the body from the page.
    response = httpx.post(
        f"{model_server.url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1},
        headers={"Origin": page_server.origin},
        timeout=60,
    )
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == page_server.origin


def test_the_page_serves_its_files(page_server):
    html = httpx.get(page_server.url, timeout=10)
    script = httpx.get(f"{page_server.origin}/chat.js", timeout=10)
    assert html.status_code == 200 and 'src="chat.js"' in html.text
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "getReader" in script.text and "AbortController" in script.text


def test_serve_takes_the_port_a_launcher_chose_and_falls_back_when_it_is_taken(monkeypatch):
    port = free_port()
    monkeypatch.setenv(chat_page.PORT_ENV, str(port))
    first = chat_page.serve()
    try:
        assert first.origin == f"http://127.0.0.1:{port}"
        second = chat_page.serve()  # the port is taken now: any free one
        try:
            assert second.port != port and httpx.get(second.url, timeout=10).status_code == 200
        finally:
            second.stop()
    finally:
        first.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_page_loads(browser, page_server, model_server):
    open_page(browser, page_server, model_server)
    assert browser.inner_text("#origin") == page_server.origin
    assert browser.inner_text("#server-url") == model_server.url
    assert browser.is_enabled("#send") and not browser.is_enabled("#stop")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_question_streams_an_answer(browser, page_server, model_server):
    open_page(browser, page_server, model_server, question="Explain in a few sentences why the sky is blue.", max_tokens=24)
    browser.evaluate(RECORD_UPDATES)
    browser.click("#send")
    browser.wait_for_selector("#status[data-state='done'], #status[data-state='error']", timeout=240_000)
    status = browser.inner_text("#status")
    assert browser.get_attribute("#status", "data-state") == "done", status
    assert "finish_reason" in status
    updates = browser.evaluate("window.updates")
    growing = [u for u in updates if u["state"] == "streaming" and u["length"] > 0]
    lengths = [u["length"] for u in growing]
    assert len(growing) >= 3, updates  # several separate updates, all before the stream ended
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1], lengths
    assert growing[-1]["t"] > growing[0]["t"], growing  # they came at different moments, not in one batch
    assert browser.inner_text("#answer").strip(), "the final answer is empty"
    assert metric(model_server.url, "tgi_request_success_total", f'{{route="{ROUTE}"}}') >= 1


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_stop_aborts_the_stream_and_the_server_frees_the_row(browser, page_server, model_server):
    # ignore_eos and a large max_tokens: the answer cannot end by itself before Stop is pressed.
    open_page(browser, page_server, model_server, question="Tell me a very long story about a lighthouse.", max_tokens=3000, ignore_eos=True)
    disconnects = metric(model_server.url, "tgi_request_failure_total", f'{{err="client_disconnected",route="{ROUTE}"}}')
    browser.evaluate(RECORD_UPDATES)
    browser.click("#send")
    browser.wait_for_function("window.updates.filter(u => u.length > 0).length >= 5", timeout=240_000)
    assert browser.get_attribute("#status", "data-state") == "streaming"
    assert metric(model_server.url, "tgi_batch_current_size") >= 1  # the request holds a row of the batch now
    browser.click("#stop")
    browser.wait_for_selector("#status[data-state='stopped']", timeout=10_000)
    assert browser.is_enabled("#send") and not browser.is_enabled("#stop")
    stopped_at = len(browser.inner_text("#answer"))

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows, in_flight = metric(model_server.url, "tgi_batch_current_size"), metric(model_server.url, "tgi_request_in_flight")
        left = metric(model_server.url, "tgi_request_failure_total", f'{{err="client_disconnected",route="{ROUTE}"}}')
        if rows == 0 and in_flight == 0 and left > disconnects:
            break
        time.sleep(0.1)
    assert (rows, in_flight) == (0, 0), f"the server still holds the aborted request: batch {rows}, in flight {in_flight}"
    assert left == disconnects + 1, (disconnects, left)  # the server saw its client leave (prometheus sorts the labels)
    time.sleep(0.5)
    assert len(browser.inner_text("#answer")) == stopped_at  # nothing more reaches the page


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_page_from_an_origin_not_allowed_cannot_fetch(browser, model_server):
    received = metric(model_server.url, "tgi_request_count_total", f'{{route="{ROUTE}"}}')
    with ChatPage() as elsewhere:
        open_page(browser, elsewhere, model_server, max_tokens=8)
        browser.click("#send")
        browser.wait_for_selector("#status[data-state='error']", timeout=30_000)
        status = browser.inner_text("#status")
        assert "could not fetch" in status and elsewhere.origin in status and "CORS_ALLOW_ORIGIN" in status, status
    # The preflight failed, so the browser never sent the POST: the server generated nothing.
    assert metric(model_server.url, "tgi_request_count_total", f'{{route="{ROUTE}"}}') == received


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_refused_request_shows_the_server_message(browser, page_server, model_server):
    open_page(browser, page_server, model_server, max_tokens=100000)
    browser.click("#send")
    browser.wait_for_selector("#status[data-state='error']", timeout=60_000)
    status = browser.inner_text("#status")
    assert "HTTP 422" in status and "max_tokens" in status and "MAX_TOTAL_TOKENS" in status, status
