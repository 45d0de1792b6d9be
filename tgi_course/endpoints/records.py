"""One endpoint's record: its spec, its lifecycle state and the local process behind it.

The record is what the store writes to disk and what :func:`to_wire` renders into the JSON that
huggingface_hub parses (``InferenceEndpoint._populate_from_raw`` reads ``name``, ``type``,
``healthRoute``, ``model.{repository,framework,revision,task}`` and ``status.{state,url,createdAt,updatedAt}``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from . import spec as specs


class State(str, Enum):
    """Status values of the real service (``status.state``)."""

    PENDING = "pending"
    INITIALIZING = "initializing"
    UPDATING = "updating"
    UPDATE_FAILED = "updateFailed"
    RUNNING = "running"
    PAUSED = "paused"
    FAILED = "failed"
    SCALED_TO_ZERO = "scaledToZero"


# States in which a server process is (being) started or serving.
ACTIVE_STATES = {State.PENDING, State.INITIALIZING, State.UPDATING, State.RUNNING}


def now_iso() -> str:
    """UTC timestamp in the Hub's format, e.g. ``2024-05-01T10:20:30.123Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class EndpointRecord:
    namespace: str
    name: str
    spec: dict[str, Any]
    created_by: str
    state: State = State.PENDING
    message: str = "Endpoint created; waiting for a server process"
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    # Whether status.url is shown: once healthy, and kept while scaled to zero (a request wakes it up).
    url_visible: bool = False
    pid: int | None = None
    pid_started: float | None = None  # process create_time, to tell our server from a recycled pid
    port: int | None = None
    # The running server's API_KEY: random per start, sent by the endpoint URL with every request it forwards,
    # so the server's port is no way around the endpoint's type. Never rendered (see to_wire) nor printed.
    api_key: str | None = field(default=None, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EndpointRecord:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["state"] = State(known.get("state", State.PENDING))
        return cls(**known)


def endpoint_url(base_url: str, record: EndpointRecord) -> str:
    """The endpoint's public URL: a path on the control plane, which proxies to the server process."""
    return f"{base_url}/endpoints/{record.namespace}/{record.name}"


def to_wire(record: EndpointRecord, base_url: str) -> dict[str, Any]:
    """The JSON body of GET /v2/endpoint/{namespace}/{name}."""
    view = specs.public_view(record.spec)
    model = view.setdefault("model", {})
    # huggingface_hub indexes these keys directly, so they must exist even when the payload omitted them.
    model.setdefault("revision", None)
    model.setdefault("task", "text-generation")
    model.setdefault("framework", "pytorch")
    running = record.state is State.RUNNING
    status: dict[str, Any] = {
        "state": record.state.value,
        "message": record.message,
        "createdAt": record.created_at,
        "createdBy": {"id": record.created_by, "name": record.created_by},
        "updatedAt": record.updated_at,
        "updatedBy": {"id": record.created_by, "name": record.created_by},
        "private": None,
        "readyReplica": 1 if running else 0,
        "targetReplica": 1 if record.state in ACTIVE_STATES else 0,
    }
    if record.url_visible:
        status["url"] = endpoint_url(base_url, record)
    if record.state in (State.FAILED, State.UPDATE_FAILED):
        status["errorMessage"] = record.message
    return {
        "name": record.name,
        **view,
        "healthRoute": specs.health_route(record.spec),
        "status": status,
    }
