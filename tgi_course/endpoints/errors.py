"""Control-plane failures, each with the HTTP status the real Inference Endpoints API would use.

They are rendered as ``{"error": message, "error_type": kind}``: huggingface_hub copies the ``error``
field into the exception it raises (``HfHubHTTPError``), so the learner reads our message verbatim.
"""

from __future__ import annotations


class ControlPlaneError(Exception):
    """Base class: an HTTP status, a short machine-readable kind and a sentence for the learner."""

    status: int = 400
    kind: str = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, str]:
        return {"error": self.message, "error_type": self.kind}

    def headers(self) -> dict[str, str]:
        return {}


class InvalidPayload(ControlPlaneError):
    status, kind = 400, "invalid_payload"


class NotAllowed(ControlPlaneError):
    """The action exists but the endpoint's current state forbids it (e.g. resume a running endpoint)."""

    status, kind = 400, "invalid_state"


class Unauthorized(ControlPlaneError):
    status, kind = 401, "unauthorized"


class EndpointNotFound(ControlPlaneError):
    status, kind = 404, "not_found"


class EndpointExists(ControlPlaneError):
    status, kind = 409, "conflict"


class Unavailable(ControlPlaneError):
    """An endpoint that cannot serve right now (paused, starting, failed): the proxy answers 503."""

    status, kind = 503, "unavailable"

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        # Honoured by the OpenAI client's automatic retries (it retries 503s twice by default).
        return {"Retry-After": str(self.retry_after)} if self.retry_after else {}
