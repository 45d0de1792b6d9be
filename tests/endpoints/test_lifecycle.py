"""Endpoints backed by real model servers: the seed deployment, both clients, limits, the server's own API
key (its port is no way around the endpoint URL), pause/resume, scale-to-zero (explicit, on idle, and the
wake-up request), a control-plane restart, and process hygiene.

Each model server takes a few seconds to start, so two endpoints are shared by the tests of this
module, which run in file order and leave them in the state the next test expects.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import httpx
import openai
import psutil
import pytest
from endpoint_helpers import DEFAULT_MODEL, auth, poll, seed_kwargs, server_pids, token
from huggingface_hub import create_inference_endpoint, get_inference_endpoint, list_inference_endpoints
from huggingface_hub.errors import HfHubHTTPError

from tgi_course.endpoints.process import wait_gone

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("default_model_available"),
    pytest.mark.filterwarnings("ignore:.*type='protected'.*:FutureWarning"),
]

HI = [{"role": "user", "content": "Say hi."}]
WAIT = dict(timeout=300, refresh_every=0.5)


@pytest.fixture(scope="module")
def endpoints(hub):
    """The seed's protected endpoint and a public one, created together so their servers load in parallel."""
    protected = create_inference_endpoint("seed-protected", **seed_kwargs())
    public = create_inference_endpoint("open-to-all", **seed_kwargs(type="public"))
    assert protected.status == "pending"
    protected.wait(**WAIT)
    public.wait(**WAIT)
    return protected, public


@pytest.fixture(scope="module")
def protected(endpoints):
    return endpoints[0]


@pytest.fixture(scope="module")
def public(endpoints):
    return endpoints[1]


def chat_client(endpoint, api_key: str | None = None) -> openai.OpenAI:
    # No automatic retries: the tests want to see every status code, 503 included.
    return openai.OpenAI(base_url=endpoint.url + "/v1/", api_key=api_key or token(), max_retries=0)


def stored(hub, name: str) -> dict:
    """The endpoint's record as the control plane keeps it on disk."""
    return json.loads((hub.state_dir / "learner" / f"{name}.json").read_text())


def test_seed_deployment_runs_behind_a_url_the_control_plane_owns(hub, protected):
    assert protected.status == "running"
    assert protected.url == f"{hub.control_plane.url}/endpoints/learner/seed-protected"
    assert httpx.get(protected.url + protected.health_route, headers=auth()).status_code == 200
    assert get_inference_endpoint("seed-protected").status == "running"
    assert {"seed-protected", "open-to-all"} <= {e.name for e in list_inference_endpoints()}


def test_protected_endpoint_needs_the_creators_token(protected):
    assert httpx.get(protected.url + "/health").status_code == 401
    with pytest.raises(openai.AuthenticationError):
        chat_client(protected, api_key="somebody-elses-token").chat.completions.create(model="tgi", messages=HI, max_tokens=1)


def test_openai_client_and_inference_client_both_chat(protected):
    reply = chat_client(protected).chat.completions.create(model="tgi", messages=HI, temperature=0, max_tokens=3)
    assert reply.choices[0].message.content
    assert reply.model == DEFAULT_MODEL
    output = protected.client.chat_completion(HI, max_tokens=3, temperature=0)
    assert output.choices[0].message.content


def test_limits_from_env_are_visible_in_info_and_enforced(protected):
    info = httpx.get(protected.url + "/info", headers=auth()).json()
    assert (info["max_input_tokens"], info["max_total_tokens"]) == (1024, 1512)
    assert (info["max_batch_prefill_tokens"], info["max_batch_total_tokens"]) == (2048, 8192)
    assert info["model_id"] == DEFAULT_MODEL  # MODEL_ID=/repository -> the payload's repository
    too_long = [{"role": "user", "content": "hello " * 1100}]
    with pytest.raises(openai.UnprocessableEntityError, match="1024"):
        chat_client(protected).chat.completions.create(model="tgi", messages=too_long, max_tokens=1)


def test_the_servers_port_is_no_way_around_the_endpoint_url(hub, protected):
    record = stored(hub, "seed-protected")
    key, port = record["api_key"], record["port"]
    assert key and len(key) >= 40 and key != token()
    assert (hub.state_dir / "learner" / "seed-protected.json").stat().st_mode & 0o777 == 0o600
    body = {"model": "tgi", "messages": HI, "max_tokens": 1}
    direct = f"http://127.0.0.1:{port}/v1/chat/completions"
    # Straight to the server: neither no token nor the learner's own token gets through; only its key does.
    assert httpx.post(direct, json=body, timeout=120).status_code == 401
    assert httpx.post(direct, json=body, headers=auth(), timeout=120).status_code == 401
    assert httpx.post(direct, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120).status_code == 200
    # Through the endpoint URL the learner's token is enough: the proxy swaps in the server's key.
    assert httpx.post(protected.url + "/v1/chat/completions", json=body, headers=auth(), timeout=120).status_code == 200
    # The key is in the server's environment, and the control plane's token is not.
    environ = psutil.Process(record["pid"]).environ()
    assert environ["API_KEY"] == key and token() not in environ.values()
    assert environ["MAX_TOTAL_TOKENS"] == "1512"  # the payload's settings do reach it


def test_the_servers_key_is_in_no_response_and_no_log(hub, protected):
    key = stored(hub, "seed-protected")["api_key"]
    api = hub.control_plane.api_url
    for url in (f"{api}/endpoint/learner/seed-protected", f"{api}/endpoint/learner", f"{api}/endpoint/learner/seed-protected/logs"):
        response = httpx.get(url, headers=auth())
        assert response.status_code == 200 and key not in response.text
    assert key not in (hub.state_dir / "learner" / "seed-protected.log").read_text()
    assert "api_key" not in get_inference_endpoint("seed-protected").raw


def test_public_endpoint_needs_no_token_and_scales_to_zero_when_idle(hub, public):
    assert httpx.get(public.url + "/health").status_code == 200
    response = httpx.post(public.url + "/v1/chat/completions", json={"model": "tgi", "messages": HI, "max_tokens": 1}, timeout=120)
    assert response.status_code == 200
    # Scaling changes need no restart; one "minute" lasts MINUTE_SECONDS here.
    public.update(min_replica=0, scale_to_zero_timeout=1)
    assert public.status == "running"
    poll(lambda: public.fetch().status == "scaledToZero", timeout_s=30)
    assert public.url is not None  # kept: a request to it wakes the endpoint up
    assert "without requests" in public.raw["status"]["message"]


def test_pause_stops_the_server_and_resume_starts_it_again(hub, protected):
    before = set(server_pids())
    old_key = stored(hub, "seed-protected")["api_key"]
    protected.pause()
    assert (protected.status, protected.url) == ("paused", None)
    assert not before & set(server_pids())  # pause returns once the server has exited
    # SIGTERM was enough: the server exited on its own, well within its shutdown grace plus 5 s.
    log = (hub.state_dir / "learner" / "seed-protected.log").read_text()
    assert "stopped the server" in log and "after SIGTERM" in log and "SIGKILL" not in log
    assert stored(hub, "seed-protected")["api_key"] is None  # a key is good only while its server runs
    with pytest.raises(HfHubHTTPError, match="paused") as error:
        protected.scale_to_zero()
    assert error.value.response.status_code == 400

    protected.resume()
    protected.wait(**WAIT)
    assert protected.status == "running"
    assert stored(hub, "seed-protected")["api_key"] not in (None, old_key)  # a new server, a new key
    with pytest.raises(HfHubHTTPError, match="already running") as error:
        protected.resume(running_ok=False)
    assert error.value.response.status_code == 400
    assert protected.resume().status == "running"  # running_ok=True (the default) accepts it


def test_a_request_wakes_a_scaled_to_zero_endpoint(protected):
    protected.scale_to_zero()
    assert protected.status == "scaledToZero" and protected.url

    client = chat_client(protected)
    with pytest.raises(openai.InternalServerError, match="scaled to zero, starting") as error:
        client.chat.completions.create(model="tgi", messages=HI, max_tokens=1)
    assert error.value.status_code == 503
    assert error.value.response.headers["retry-after"]
    assert protected.fetch().status in {"pending", "initializing", "running"}

    protected.wait(**WAIT)
    assert client.chat.completions.create(model="tgi", messages=HI, max_tokens=1).choices


def test_state_survives_a_control_plane_restart_and_no_server_outlives_it(hub, protected, public):
    pids = server_pids()
    assert pids, "the protected endpoint should be running"
    hub.restart()
    assert wait_gone(pids) == []

    again = get_inference_endpoint("seed-protected")
    # Reported, not silently running: the process is gone, so the endpoint is scaled to zero.
    assert again.status == "scaledToZero"
    assert "previous control plane" in again.raw["status"]["message"]
    assert again.url.startswith(hub.control_plane.url)
    assert get_inference_endpoint("open-to-all").status == "scaledToZero"
    assert again.type == "protected" and again.raw["model"]["image"]["custom"]["env"]["MAX_TOTAL_TOKENS"] == "1512"

    # The token check survived too (the token is the state folder's), and a request still wakes it.
    assert httpx.get(again.url + "/health").status_code == 401
    assert httpx.get(again.url + "/health", headers=auth()).status_code == 503
    again.wait(**WAIT)
    assert httpx.get(again.url + "/info", headers=auth()).json()["max_input_tokens"] == 1024


def test_a_server_that_dies_is_reported_failed(protected):
    (pid,) = server_pids()
    os.kill(pid, signal.SIGKILL)
    poll(lambda: protected.fetch().status == "failed", timeout_s=30)
    assert "exited unexpectedly" in protected.raw["status"]["message"]
    assert protected.url is None


def test_delete_stops_and_forgets(protected, public):
    protected.delete()
    public.delete()
    names = {e.name for e in list_inference_endpoints()}
    assert not names & {"seed-protected", "open-to-all"}
    assert server_pids() == []


OWNER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import psutil
    from huggingface_hub import create_inference_endpoint
    from tgi_course.endpoints import use_local_endpoints

    use_local_endpoints(sys.argv[1])
    endpoint = create_inference_endpoint(
        "orphan-check", repository="HuggingFaceTB/SmolLM2-135M-Instruct", framework="pytorch",
        accelerator="cpu", vendor="aws", region="us-east-1", instance_type="intel-icl", instance_size="x1", type="public",
    )
    endpoint.wait(timeout=300, refresh_every=0.5)
    print(*[child.pid for child in psutil.Process().children()], flush=True)
    time.sleep(600)
    """
)


def test_servers_die_with_a_killed_owner(tmp_path):
    """SIGKILL leaves no chance for cleanup code: PR_SET_PDEATHSIG must take the server down."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        line = owner.stdout.readline()
        assert line.strip(), f"the owner process exited with {owner.wait()}"
        pids = [int(pid) for pid in line.split()]
        assert pids
    finally:
        owner.kill()
        owner.wait()
    assert wait_gone(pids) == []
