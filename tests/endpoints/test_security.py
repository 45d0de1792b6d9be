"""The control plane's guards, through huggingface_hub and raw HTTP, without starting any model server:
its per-user token, the allowlist of the server environment a payload may set, and the names that
become paths in the state folder.
"""

from __future__ import annotations

import http.client
import json
import os
import stat
import threading
from urllib.parse import urlsplit

import httpx
import pytest
from endpoint_helpers import auth, seed_kwargs, token
from huggingface_hub import HfApi, create_inference_endpoint, get_inference_endpoint, get_token, list_inference_endpoints, whoami
from huggingface_hub.errors import HfHubHTTPError

from tgi_course.endpoints import spec as specs
from tgi_course.endpoints import use_local_endpoints
from tgi_course.endpoints.errors import InvalidPayload
from tgi_course.endpoints.records import EndpointRecord
from tgi_course.endpoints.store import TOKEN_FILE, EndpointStore, user_token

MISSING_MODEL = "openai-community/gpt2"  # not available offline: an endpoint for it fails before any process starts
pytestmark = pytest.mark.filterwarnings("ignore:.*type='protected'.*:FutureWarning")


def status_of(error: HfHubHTTPError) -> int:
    return error.response.status_code


def raw_request(hub, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """A request sent byte for byte (httpx would normalise '..' away), with the learner's token."""
    where = urlsplit(hub.control_plane.url)
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {**auth(), **({"Content-Type": "application/json"} if payload else {})}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


# --- 1. the per-user token ----------------------------------------------------------------------------


def test_the_token_is_random_private_and_the_one_huggingface_hub_uses(hub):
    path = hub.state_dir / TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == hub.control_plane.token
    assert len(hub.control_plane.token) >= 40
    # This is the notebooks' path: use_local_endpoints() sets it as HF_TOKEN, get_token() returns it.
    assert os.environ["HF_TOKEN"] == get_token() == hub.control_plane.token
    assert hub.control_plane.token not in repr(hub.control_plane)


def test_the_api_answers_only_its_own_token(hub):
    url = f"{hub.control_plane.api_url}/endpoint/learner"
    for headers in ({}, {"Authorization": "Bearer hf_anything_at_all"}, {"Authorization": f"Basic {token()}"}):
        response = httpx.get(url, headers=headers)
        assert response.status_code == 401
        assert response.json()["error_type"] == "unauthorized"
        assert "Invalid credentials in Authorization header" in response.json()["error"]
        assert TOKEN_FILE in response.json()["error"]  # it says where the token is
    whoami_url = f"{hub.control_plane.url}/api/whoami-v2"
    assert httpx.get(whoami_url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(url, headers=auth()).status_code == 200


def test_huggingface_hub_works_unchanged(hub):
    assert whoami()["name"] == "learner"
    assert isinstance(list_inference_endpoints(), list)


def test_a_protected_endpoint_refuses_another_token_before_anything_starts(hub):
    endpoint = create_inference_endpoint("guarded", **seed_kwargs(repository=MISSING_MODEL, type="protected"))
    try:
        url = f"{hub.control_plane.url}/endpoints/learner/guarded/health"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer somebody-else"}).status_code == 401
        assert httpx.get(url, headers=auth()).status_code == 503  # let through: not serving, for its own reasons
    finally:
        endpoint.delete()


def test_the_token_is_made_once_per_state_folder(tmp_path):
    folder = tmp_path / "fresh"
    tokens: list[str] = []
    threads = [threading.Thread(target=lambda: tokens.append(user_token(folder))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(tokens)) == 1 and len(tokens) == 8  # sessions starting together agree on one
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / TOKEN_FILE).stat().st_mode) == 0o600
    assert user_token(tmp_path / "another") != tokens[0]
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_a_token_file_others_can_read_is_made_private_again(tmp_path):
    first = user_token(tmp_path)
    (tmp_path / TOKEN_FILE).chmod(0o644)
    assert user_token(tmp_path) == first
    assert stat.S_IMODE((tmp_path / TOKEN_FILE).stat().st_mode) == 0o600


def test_the_token_survives_a_restart_and_use_real_endpoints_restores_hf_token(hub):
    from tgi_course.endpoints import use_real_endpoints

    before = hub.control_plane.token
    use_real_endpoints()
    try:
        assert os.environ.get("HF_TOKEN") != before
    finally:
        hub.restart()
    assert hub.control_plane.token == before == get_token()


def test_a_second_session_on_the_same_folder_gets_the_same_token(hub):
    from tgi_course.endpoints import LocalEndpoints

    attached = LocalEndpoints.attach(hub.control_plane.url, hub.state_dir)
    assert attached.token == hub.control_plane.token
    response = httpx.get(f"{attached.api_url}/endpoint/learner", headers={"Authorization": f"Bearer {attached.token}"})
    assert response.status_code == 200


def test_use_local_endpoints_takes_no_token(hub):
    with pytest.raises(TypeError, match="takes no token"):
        use_local_endpoints(hub.state_dir, token="hf_mine")


# --- 2. the server environment a payload may set ------------------------------------------------------


@pytest.mark.parametrize("key", ["PYTHONPATH", "PYTHONSTARTUP", "LD_PRELOAD", "LD_LIBRARY_PATH", "PATH", "HOME", "NUM_SHARD"])
def test_env_outside_the_allowlist_is_400_naming_the_key(hub, key):
    with pytest.raises(HfHubHTTPError, match=f"model.env: '{key}' is not allowed") as error:
        create_inference_endpoint("bad-env", **seed_kwargs(env={"MAX_TOTAL_TOKENS": "512", key: "/tmp/x"}))
    assert status_of(error.value) == 400
    assert "bad-env" not in [e.name for e in list_inference_endpoints()]


def test_secrets_and_image_env_are_checked_too(hub):
    with pytest.raises(HfHubHTTPError, match="model.secrets: 'LD_PRELOAD' is not allowed") as error:
        create_inference_endpoint("bad-secret", **seed_kwargs(secrets={"LD_PRELOAD": "/tmp/evil.so", "HF_TOKEN": "hf_x"}))
    assert status_of(error.value) == 400
    image = {"health_route": "/health", "url": "ghcr.io/huggingface/text-generation-inference:3.3.6", "env": {"PYTHONPATH": "/tmp"}}
    with pytest.raises(HfHubHTTPError, match="model.image.custom.env: 'PYTHONPATH' is not allowed") as error:
        create_inference_endpoint("bad-image-env", **seed_kwargs(custom_image=image))
    assert status_of(error.value) == 400


@pytest.mark.parametrize("key", ["API_KEY", "PORT", "HOSTNAME", "TGI_COURSE_ENDPOINT"])
def test_what_the_control_plane_sets_cannot_come_from_a_payload(hub, key):
    with pytest.raises(HfHubHTTPError, match=f"'{key}' is set by the local control plane") as error:
        create_inference_endpoint("own-key", **seed_kwargs(env={key: "1"}))
    assert status_of(error.value) == 400


def test_an_update_with_a_refused_key_is_400_and_changes_nothing(hub):
    endpoint = create_inference_endpoint("to-update", **seed_kwargs(repository=MISSING_MODEL, type="public"))
    try:
        with pytest.raises(HfHubHTTPError, match="'PYTHONPATH' is not allowed") as error:
            HfApi().update_inference_endpoint("to-update", env={"PYTHONPATH": "/tmp"})
        assert status_of(error.value) == 400
        assert "PYTHONPATH" not in json.dumps(get_inference_endpoint("to-update").raw)
    finally:
        endpoint.delete()


def test_allowed_env_is_the_servers_settings_and_the_hub_token():
    from tgi_course.config import server_env_names

    allowed = specs.allowed_env_names()
    assert {"MAX_INPUT_LENGTH", "MAX_TOTAL_TOKENS", "MODEL_ID", "DTYPE", "SHUTDOWN_GRACE_SECONDS", "HF_TOKEN"} <= allowed
    assert allowed - server_env_names() == {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}
    assert not allowed & {"API_KEY", "PORT", "HOSTNAME", "TGI_COURSE_HOSTNAME", "PATH", "HOME"}
    assert not any(name.startswith(("PYTHON", "LD_")) for name in allowed)


def test_a_record_from_before_the_allowlist_passes_only_allowed_env():
    # A state file written by an older version may hold anything: the server still gets only allowed names.
    spec = {"model": {"repository": "r", "env": {"PYTHONPATH": "/tmp", "MAX_TOTAL_TOKENS": "64"}, "secrets": {"LD_PRELOAD": "x"}}}
    assert specs.server_env(spec) == {"MAX_TOTAL_TOKENS": "64"}
    from tgi_course.endpoints.process import build_env

    child = build_env({"PATH": "/usr/bin"}, {"PYTHONPATH": "/tmp", "DTYPE": "float32"}, endpoint="a/b", model_id="m", host="127.0.0.1", port=1, api_key="k")
    assert "PYTHONPATH" not in child and child["DTYPE"] == "float32" and child["API_KEY"] == "k"


# --- 3. names that become paths -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Not_Valid", "UPPER", "-lead", "trail-", "1st-endpoint", "a" * 33, "../escape", "a/b", "a.b", ""])
def test_invalid_endpoint_names_are_400_naming_the_field(hub, name):
    with pytest.raises(HfHubHTTPError, match="name .* is invalid") as error:
        create_inference_endpoint(name, **seed_kwargs())
    assert status_of(error.value) == 400


def test_the_longest_and_shortest_names_are_valid():
    assert specs.valid_name("a" * 32) and specs.valid_name("x") and specs.valid_name("my-endpoint-2")
    assert specs.valid_namespace("HuggingFaceTB") and specs.valid_namespace("01-ai") and specs.valid_namespace("my_org")
    for bad in ("..", ".", "a..b", "a--b", "-a", "a/b", "control-plane.json", TOKEN_FILE, "", "x" * 97):
        assert not specs.valid_namespace(bad), bad


@pytest.mark.parametrize(
    "path",
    [
        "/v2/endpoint/%2E%2E",  # namespace '..'
        "/v2/endpoint/..%2Fescape",  # namespace '..' once decoded, name 'escape'
        "/v2/endpoint/learner/%2E%2E",  # name '..'
        "/v2/endpoint/bad--namespace",
        "/endpoints/%2E%2E/x/health",  # the endpoint URL too
    ],
)
def test_namespaces_and_names_from_the_url_are_checked(hub, path):
    status, body = raw_request(hub, "GET", path)
    assert status == 400, body
    assert "is invalid" in body["error"] and body["error"].split()[0] in ("namespace", "name")


def test_a_create_cannot_write_outside_the_state_folder(hub):
    payload = {
        "name": "escape",
        "type": "public",
        "model": {"repository": MISSING_MODEL, "framework": "pytorch", "task": "text-generation"},
        "compute": {"accelerator": "cpu", "instanceType": "intel-icl", "instanceSize": "x1"},
        "provider": {"vendor": "aws", "region": "us-east-1"},
    }
    outside = {p for p in hub.state_dir.parent.rglob("*") if not p.is_relative_to(hub.state_dir)}
    status, body = raw_request(hub, "POST", "/v2/endpoint/%2E%2E", payload)
    assert status == 400 and body["error"].startswith("namespace '..' is invalid")
    assert {p for p in hub.state_dir.parent.rglob("*") if not p.is_relative_to(hub.state_dir)} == outside


def test_the_store_refuses_paths_outside_its_folder(tmp_path):
    store = EndpointStore(tmp_path / "state")
    for namespace, name in (("..", "x"), ("learner", "../x"), ("/etc", "passwd"), ("learner", "/abs")):
        with pytest.raises(InvalidPayload, match="is invalid"):
            store.save(EndpointRecord(namespace, name, {"model": {}}, created_by="learner"))
    assert not (tmp_path / "x.json").exists()
    # A record file whose content names another place is ignored on load.
    (tmp_path / "state" / "learner").mkdir(parents=True)
    forged = EndpointRecord("..", "x", {"model": {}}, created_by="learner").to_json()
    (tmp_path / "state" / "learner" / "x.json").write_text(json.dumps(forged))
    # So is one in a folder no namespace may have (a hand-made one), instead of stopping the control plane.
    (tmp_path / "state" / "bad--ns").mkdir()
    odd = EndpointRecord("bad--ns", "y", {"model": {}}, created_by="learner").to_json()
    (tmp_path / "state" / "bad--ns" / "y.json").write_text(json.dumps(odd))
    assert store.load_all() == []
