"""The control plane and its server processes, with a stand-in server (standin_server.py) whose SIGTERM
behaviour the tests choose: how a stop waits for the server's shutdown grace, and what the endpoint URL
sends the server instead of the caller's token.

The control plane is real (its own state folder, driven over its REST API); only the server command is
the stand-in, because a real server exits at once when idle and so cannot show how long a stop waits.
"""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import psutil
import pytest
from endpoint_helpers import DEFAULT_MODEL, poll

from tgi_course.endpoints import LocalEndpoints
from tgi_course.endpoints import process
from tgi_course.endpoints.process import KILL_MARGIN_S, stop_grace_s, wait_gone

STANDIN = Path(__file__).with_name("standin_server.py")


@pytest.fixture(scope="module")
def plane(tmp_path_factory, default_model_available):
    control_plane = LocalEndpoints(
        tmp_path_factory.mktemp("standin-state"), server_command=(sys.executable, str(STANDIN)), startup_timeout_s=120
    ).start()
    try:
        yield control_plane
    finally:
        control_plane.stop()


def call(plane: LocalEndpoints, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{plane.api_url}{path}", headers={"Authorization": f"Bearer {plane.token}"}, timeout=60, **kwargs)


def deploy(plane: LocalEndpoints, name: str, mode: str, grace: str) -> dict:
    """Create an endpoint served by the stand-in and wait until it runs; return its record from disk."""
    payload = {
        "name": name,
        "type": "protected",
        "model": {
            "repository": DEFAULT_MODEL,  # checked for offline availability, never loaded by the stand-in
            "framework": "pytorch",
            "task": "text-generation",
            "image": {"custom": {"url": "stand-in", "health_route": "/health"}},
            "env": {"SERVED_MODEL_NAME": mode, "SHUTDOWN_GRACE_SECONDS": grace},
        },
        "compute": {"accelerator": "cpu", "instanceType": "intel-icl", "instanceSize": "x1", "scaling": {"minReplica": 1, "maxReplica": 1}},
        "provider": {"vendor": "aws", "region": "us-east-1"},
    }
    assert call(plane, "POST", "/endpoint/learner", json=payload).status_code == 202
    poll(lambda: call(plane, "GET", f"/endpoint/learner/{name}").json()["status"]["state"] in ("running", "failed"), timeout_s=120)
    state = call(plane, "GET", f"/endpoint/learner/{name}").json()["status"]
    assert state["state"] == "running", state
    return record_of(plane, name)


def record_of(plane: LocalEndpoints, name: str) -> dict:
    return json.loads((plane.settings.state_dir / "learner" / f"{name}.json").read_text())


def log_of(plane: LocalEndpoints, name: str) -> str:
    return (plane.settings.state_dir / "learner" / f"{name}.log").read_text()


def timed_pause(plane: LocalEndpoints, name: str) -> float:
    started = time.monotonic()
    response = call(plane, "POST", f"/endpoint/learner/{name}/pause")
    assert response.status_code == 200 and response.json()["status"]["state"] == "paused"
    return time.monotonic() - started


# --- 4. the server's own API key ----------------------------------------------------------------------------


def test_the_proxy_sends_the_servers_key_and_never_the_callers_token(plane, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", plane.token)  # as use_local_endpoints() does: the server must not inherit it
    record = deploy(plane, "key-check", mode="exit-after-0", grace="1")
    url = f"{plane.url}/endpoints/learner/key-check/auth"
    seen = httpx.get(url, headers={"Authorization": f"Bearer {plane.token}"}).json()
    assert seen == {"headers": 1, "is_api_key": True}
    assert httpx.get(url).status_code == 401  # still protected: the key is added only after the token check

    key = record["api_key"]
    assert key and key != plane.token
    assert stat.S_IMODE((plane.settings.state_dir / "learner" / "key-check.json").stat().st_mode) == 0o600
    environ = psutil.Process(record["pid"]).environ()
    assert environ["API_KEY"] == key and environ["SERVED_MODEL_NAME"] == "exit-after-0"
    assert plane.token not in environ.values()

    # The stand-in prints its key; the logs route (and every response) still never shows it.
    assert f"API_KEY={key}" in log_of(plane, "key-check")
    logs = call(plane, "GET", "/endpoint/learner/key-check/logs").text
    assert "API_KEY=***" in logs and key not in logs
    for path in ("/endpoint/learner/key-check", "/endpoint/learner"):
        assert key not in call(plane, "GET", path).text
    call(plane, "DELETE", "/endpoint/learner/key-check")


# --- 5. stopping: SIGTERM, then the server's grace plus 5 s, then SIGKILL ---------------------------------


def test_a_stop_lets_the_server_finish_after_sigterm(plane):
    deploy(plane, "slow-exit", mode="exit-after-3", grace="0")  # may take up to 0 + 5 s
    took = timed_pause(plane, "slow-exit")
    assert took >= 3.0
    log = log_of(plane, "slow-exit")
    assert "stand-in: SIGTERM received" in log and "stand-in: exiting" in log
    assert "exited with code 0" in log and "SIGKILL" not in log
    call(plane, "DELETE", "/endpoint/learner/slow-exit")


def test_a_server_that_ignores_sigterm_is_killed_after_its_grace_plus_five_seconds(plane):
    record = deploy(plane, "stubborn", mode="ignore-term", grace="1")
    took = timed_pause(plane, "stubborn")
    assert took >= 1 + KILL_MARGIN_S - 0.1
    assert took < 1 + KILL_MARGIN_S + 20  # and not much later (a loaded machine is slow, not that slow)
    log = log_of(plane, "stubborn")
    assert "stand-in: SIGTERM received" in log
    assert "killed with SIGKILL: it did not exit within 6 s of SIGTERM" in log
    assert wait_gone([record["pid"]]) == []
    call(plane, "DELETE", "/endpoint/learner/stubborn")


def test_the_grace_is_read_from_the_servers_environment():
    assert stop_grace_s({}) == 10.0 + KILL_MARGIN_S  # ServerConfig's default shutdown_grace_seconds
    assert stop_grace_s({"SHUTDOWN_GRACE_SECONDS": "2.5"}) == 2.5 + KILL_MARGIN_S
    assert stop_grace_s({"SHUTDOWN_GRACE_SECONDS": "0"}) == KILL_MARGIN_S
    assert stop_grace_s({"SHUTDOWN_GRACE_SECONDS": "soon"}) == 10.0 + KILL_MARGIN_S  # the server refuses it anyway


IGNORES_SIGTERM = textwrap.dedent(
    """
    import signal, sys, time
    signal.signal(signal.SIGTERM, lambda *_: print("term", flush=True))
    print("ready", flush=True)
    time.sleep(120)
    """
)


def test_stop_sends_sigterm_first_and_sigkill_only_after_the_grace():
    proc = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.stop_grace_s = 1.5  # what spawn() sets from the server's environment
        started = time.monotonic()
        code = process.stop(proc)
        took = time.monotonic() - started
        assert proc.stdout.readline().strip() == "term"  # SIGTERM came first
        assert code == -signal.SIGKILL and took >= 1.5
    finally:
        proc.kill()
        proc.wait()
