"""Constants and helpers shared by the endpoint tests (imported by name: tests/ is not a package)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psutil
import pytest

MINUTE_SECONDS = 2.0  # one scaleToZeroTimeout "minute" lasts 2 s in these tests
DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
TGI_IMAGE = "ghcr.io/huggingface/text-generation-inference:3.3.6"
SEED_ENV = {
    "MAX_INPUT_LENGTH": "1024",
    "MAX_BATCH_PREFILL_TOKENS": "2048",
    "MAX_TOTAL_TOKENS": "1512",
    "MAX_BATCH_TOTAL_TOKENS": "8192",
    "MODEL_ID": "/repository",
}


def token() -> str:
    """The token a learner's code has: what huggingface_hub uses (the control plane's, after use_local_endpoints)."""
    from huggingface_hub import get_token

    value = get_token()
    assert value, "use_local_endpoints() should have set HF_TOKEN"
    return value


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {token()}"}


def seed_kwargs(**overrides: Any) -> dict[str, Any]:
    """The arguments of the course's seed call to create_inference_endpoint (repository: the offline default)."""
    kwargs: dict[str, Any] = dict(
        repository=DEFAULT_MODEL,
        framework="pytorch",
        task="text-generation",
        accelerator="gpu",
        vendor="aws",
        region="us-east-1",
        type="protected",
        instance_type="nvidia-a10g",
        instance_size="x1",
        custom_image={"health_route": "/health", "env": dict(SEED_ENV), "url": TGI_IMAGE},
    )
    kwargs.update(overrides)
    return kwargs


def server_pids() -> list[int]:
    """Endpoint servers started by this test process's control planes (not, e.g., a suite-wide server)."""
    from tgi_course.endpoints.process import endpoint_of

    pids = []
    for child in psutil.Process().children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and endpoint_of(child.pid):
                pids.append(child.pid)
        except psutil.Error:
            pass
    return pids


def poll(condition: Callable[[], Any], timeout_s: float = 60.0, every_s: float = 0.25) -> Any:
    """Call ``condition`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        time.sleep(every_s)
