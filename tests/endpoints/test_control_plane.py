"""The control plane's REST API through huggingface_hub, without starting any model server.

An endpoint whose repository is not available offline fails before a process starts, which makes it
a cheap subject for the error paths: 404, 409, 400, 401, failed deployment, and the redirect itself.
"""

from __future__ import annotations

import httpx
import pytest
from huggingface_hub import (
    constants,
    create_inference_endpoint,
    get_inference_endpoint,
    list_inference_endpoints,
    whoami,
)
from huggingface_hub.errors import HfHubHTTPError, InferenceEndpointError, OfflineModeIsEnabled
from huggingface_hub.utils import get_session

from tgi_course.endpoints import LocalEndpoints, use_real_endpoints
from tgi_course.endpoints import spec as specs
from tgi_course.endpoints.store import StateDirBusy

from endpoint_helpers import DEFAULT_MODEL, auth, seed_kwargs

MISSING_MODEL = "openai-community/gpt2"
# The seed call uses type="protected", which huggingface_hub now calls "authenticated" (with a warning).
pytestmark = pytest.mark.filterwarnings("ignore:.*type='protected'.*:FutureWarning")


@pytest.fixture(scope="module")
def failed(hub):
    """An endpoint for a model that is not available offline, waited on (it fails in a second or two)."""
    endpoint = create_inference_endpoint("not-offline", **seed_kwargs(repository=MISSING_MODEL, type="public"))
    with pytest.raises(InferenceEndpointError, match="failed to deploy"):
        endpoint.wait(timeout=60, refresh_every=0.2)
    return endpoint


def status_of(error: HfHubHTTPError) -> int:
    return error.response.status_code


def test_namespace_comes_from_local_whoami(hub):
    assert whoami()["name"] == "learner"
    assert constants.INFERENCE_ENDPOINTS_ENDPOINT == hub.control_plane.api_url


def test_unavailable_model_fails_with_a_message_naming_it_and_the_offline_models(hub, failed, default_model_available):
    assert failed.status == "failed"
    assert failed.url is None
    message = failed.raw["status"]["message"]
    assert MISSING_MODEL in message and DEFAULT_MODEL in message
    logs = httpx.get(f"{hub.control_plane.api_url}/endpoint/learner/not-offline/logs", headers=auth())
    assert MISSING_MODEL in logs.text


def test_get_and_list_return_what_was_created(failed):
    fetched = get_inference_endpoint("not-offline")
    assert (fetched.namespace, fetched.repository, fetched.framework, fetched.task) == ("learner", MISSING_MODEL, "pytorch", "text-generation")
    assert fetched.type == "public" and fetched.health_route == "/health"
    assert fetched.raw["model"]["image"]["custom"]["url"].startswith("ghcr.io/huggingface/text-generation-inference")
    assert "not-offline" in [e.name for e in list_inference_endpoints()]


def test_duplicate_name_is_409(failed):
    with pytest.raises(HfHubHTTPError, match="already exists") as error:
        create_inference_endpoint("not-offline", **seed_kwargs(repository=MISSING_MODEL))
    assert status_of(error.value) == 409


def test_changing_the_model_redeploys_and_a_failed_update_is_update_failed(failed):
    failed.update(repository="another-org/also-missing")
    with pytest.raises(InferenceEndpointError, match="failed to update"):
        failed.wait(timeout=60, refresh_every=0.2)
    assert failed.status == "updateFailed"
    assert "another-org/also-missing" in failed.raw["status"]["message"]


@pytest.mark.parametrize("call", ["get", "pause", "delete"])
def test_unknown_endpoint_is_404(hub, call):
    from huggingface_hub import HfApi

    action = {"get": HfApi().get_inference_endpoint, "pause": HfApi().pause_inference_endpoint, "delete": HfApi().delete_inference_endpoint}[call]
    with pytest.raises(HfHubHTTPError, match="'no-such-endpoint' not found") as error:
        action("no-such-endpoint")
    assert status_of(error.value) == 404


def test_invalid_payload_is_400_naming_the_problem(hub):
    with pytest.raises(HfHubHTTPError, match="name 'Not_Valid' is invalid") as error:
        create_inference_endpoint("Not_Valid", **seed_kwargs())
    assert status_of(error.value) == 400


def test_actions_not_allowed_in_the_current_state_are_400(failed):
    with pytest.raises(HfHubHTTPError, match="state 'updateFailed'") as error:
        failed.scale_to_zero()
    assert status_of(error.value) == 400
    failed.pause()
    assert failed.status == "paused"
    with pytest.raises(HfHubHTTPError, match="paused") as error:
        failed.scale_to_zero()
    assert status_of(error.value) == 400


def test_the_api_needs_a_token(hub):
    response = httpx.get(f"{hub.control_plane.api_url}/endpoint/learner")
    assert response.status_code == 401
    assert "error" in response.json()


def test_offline_mode_still_reaches_the_control_plane(hub, monkeypatch):
    # The course sets HF_HUB_OFFLINE=1; huggingface_hub then refuses every request but ours.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert isinstance(list_inference_endpoints(), list)
    with pytest.raises(OfflineModeIsEnabled):
        get_session().get("https://huggingface.co/api/whoami-v2")


def test_a_second_control_plane_cannot_take_the_same_state(hub):
    with pytest.raises(StateDirBusy, match=str(hub.control_plane.url)):
        LocalEndpoints(hub.state_dir).start()


def test_delete_forgets_the_endpoint(failed):
    failed.delete()
    assert "not-offline" not in [e.name for e in list_inference_endpoints()]


def test_model_id_repository_mount_means_the_payload_repository():
    spec = {"model": {"repository": "some/repo", "image": {"custom": {"env": {"MODEL_ID": "/repository"}}}}}
    assert specs.model_id(spec) == "some/repo"
    spec["model"]["env"] = {"MODEL_ID": "other/repo"}  # model.env wins over the image's env
    assert specs.model_id(spec) == "other/repo"


def test_use_real_endpoints_restores_the_client(hub):
    from huggingface_hub.hf_api import HfApi

    local_whoami = HfApi._inner_whoami
    use_real_endpoints()
    try:
        assert constants.INFERENCE_ENDPOINTS_ENDPOINT == "https://api.endpoints.huggingface.cloud/v2"
        assert HfApi._inner_whoami is not local_whoami
    finally:
        hub.restart()


def test_a_server_left_by_an_earlier_session_is_killed_only_if_it_is_that_endpoints(tmp_path):
    import subprocess
    import sys
    import time

    from tgi_course.endpoints import process

    env = {"TGI_COURSE_ENDPOINT": "learner/left-over", "PATH": "/usr/bin:/bin"}
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env, start_new_session=True)
    try:
        # On a loaded machine /proc may still show the pre-exec environment for a moment.
        deadline = time.monotonic() + 20
        while process.endpoint_of(stray.pid) != "learner/left-over" and time.monotonic() < deadline:
            time.sleep(0.05)
        started = process.started_at(stray.pid)
        assert not process.kill_stale(stray.pid, started, "learner/another-endpoint")
        assert not process.kill_stale(stray.pid, started + 100, "learner/left-over")  # a recycled pid
        assert process.kill_stale(stray.pid, started, "learner/left-over")
        assert process.wait_gone([stray.pid]) == []
    finally:
        stray.kill()
        stray.wait()
