"""End to end on the real default model in a real server process, as a learner starts it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import psutil
import pytest

from tgi_course import LocalServer, connect

pytestmark = pytest.mark.slow


def test_local_server_process_streams_with_curl_and_the_openai_client():
    with LocalServer() as server:
        # The curl example of TGI's Messages API docs, against our port.
        curl = subprocess.run(
            ["curl", "-sN", f"{server.url}/v1/chat/completions", "-X", "POST", "-H", "Content-Type: application/json",
             "-d", json.dumps({"model": "tgi", "messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is deep learning?"}], "stream": True, "max_tokens": 20})],
            capture_output=True, text=True, timeout=120, check=True,
        )
        events = [line for line in curl.stdout.splitlines() if line.startswith("data:")]
        assert events[-1] == "data: [DONE]" and len(events) > 5
        client = server_client = connect(url=server.url).openai()
        stream = server_client.chat.completions.create(model="tgi", messages=[{"role": "user", "content": "What is the capital of France?"}], stream=True, max_tokens=12, temperature=0)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert "Paris" in text
        whole = client.chat.completions.create(model="tgi", messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=12, temperature=0)
        assert whole.choices[0].message.content == text
        pid = server._process.pid  # noqa: SLF001
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_server_dies_with_the_process_that_started_it():
    """No orphans: even a parent killed with SIGKILL takes its server with it."""
    script = "from tgi_course import LocalServer; import os, time; s = LocalServer().start(); print(s._process.pid, flush=True); time.sleep(600)"
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    assert psutil.pid_exists(child_pid)
    parent.kill()
    parent.wait()
    child = psutil.Process(child_pid) if psutil.pid_exists(child_pid) else None
    if child is not None:
        child.wait(timeout=20)


def test_connect_uses_tgi_course_url(monkeypatch, server):
    monkeypatch.setenv("TGI_COURSE_URL", server.url + "/v1/")
    monkeypatch.setenv("TGI_COURSE_API_KEY", "abc")
    conn = connect()
    assert conn.url == server.url and conn.base_url == server.url + "/v1/" and conn.api_key == "abc"
    assert not conn.is_local
    assert conn.model == server.state.facts.name
    assert conn.context_window() == server.state.config.max_total_tokens


def test_invalid_settings_fail_at_start_naming_both(tmp_path):
    env = {**os.environ, "MAX_INPUT_TOKENS": "2048", "MAX_TOTAL_TOKENS": "1024", "PORT": "39999"}
    result = subprocess.run([sys.executable, "-m", "tgi_course", "serve"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "MAX_INPUT_TOKENS (2048)" in result.stderr and "MAX_TOTAL_TOKENS (1024)" in result.stderr


def test_hub_model_offline_gives_a_clear_error():
    env = {**os.environ, "MODEL_ID": "some-org/not-a-cached-model", "HF_HUB_OFFLINE": "1", "PORT": "39999"}
    result = subprocess.run([sys.executable, "-m", "tgi_course", "serve"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "some-org/not-a-cached-model" in result.stderr and "available offline" in result.stderr
