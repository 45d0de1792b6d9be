"""The endpoint *specification*: what the learner asked for in the create/update payload.

The payload is kept in the wire shape huggingface_hub sends (``model``, ``compute``, ``provider``, ``type``,
...), so an update is a deep merge and a GET returns what was sent. The functions below derive what the
local server needs from it: its environment, its health route and its idle policy.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from .errors import InvalidPayload

ENDPOINT_TYPES = {"public", "protected", "authenticated", "private"}
# Types whose URL needs the owner's token as Bearer; "private" (AWS PrivateLink) has no local meaning
# beyond that, so it is treated like "authenticated".
TOKEN_TYPES = {"protected", "authenticated", "private"}
# The real service mounts the model repository in the container at this path.
REPOSITORY_MOUNT = "/repository"
# Tasks the local Messages API server can serve; anything else fails with a message saying so.
SERVED_TASKS = {None, "text-generation", "conversational", "text2text-generation"}
# Lower-case letters, digits and hyphens, at most 32 characters, like the real service.
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
# Top-level fields huggingface_hub may send, kept as given.
_TOP_LEVEL = ("type", "model", "compute", "provider", "tags", "route", "cacheHttpResponses", "privateService")


def parse_create(payload: Any) -> tuple[str, dict[str, Any]]:
    """Validate a create payload; return ``(name, spec)``. Raises :class:`InvalidPayload` naming every problem."""
    if not isinstance(payload, dict):
        raise InvalidPayload("The request body must be a JSON object")
    name = payload.get("name")
    problems: list[str] = []
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(
            f"name {name!r} is invalid: use 1-32 lower-case letters, digits or hyphens, starting and ending with a letter or digit"
        )
    for path in (
        "model.repository",
        "model.framework",
        "compute.accelerator",
        "compute.instanceType",
        "compute.instanceSize",
        "provider.vendor",
        "provider.region",
    ):
        if not _get(payload, path):
            problems.append(f"{path} is required")
    spec = {key: copy.deepcopy(payload[key]) for key in _TOP_LEVEL if key in payload}
    spec.setdefault("type", "authenticated")
    spec.setdefault("tags", [])
    problems += _check(spec)
    if problems:
        raise InvalidPayload("Invalid endpoint: " + "; ".join(problems))
    return str(name), spec


def merge_update(spec: Mapping[str, Any], payload: Any) -> dict[str, Any]:
    """Apply an update payload (only the fields sent) on top of ``spec``; validate the result."""
    if not isinstance(payload, dict):
        raise InvalidPayload("The request body must be a JSON object")
    if "name" in payload and payload["name"] is not None:
        raise InvalidPayload("An endpoint cannot be renamed; create a new one instead")
    merged = copy.deepcopy(dict(spec))
    for key in _TOP_LEVEL:
        if key in payload:
            merged[key] = _deep_merge(merged.get(key), payload[key])
    # env, secrets, image, command and args are replaced as a whole: merging two images (or two env
    # dicts) would keep settings the learner meant to drop.
    for key in ("image", "env", "secrets", "command", "args"):
        if key in payload.get("model", {}):
            merged["model"][key] = copy.deepcopy(payload["model"][key])
    problems = _check(merged)
    if problems:
        raise InvalidPayload("Invalid update: " + "; ".join(problems))
    return merged


def server_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether the running server must restart: the model section changed (compute/scaling does not matter)."""
    return old.get("model") != new.get("model")


def image_config(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The inner dict of ``model.image`` (``{"custom": {...}}``, ``{"tgi": {...}}``, ...), or ``{}``."""
    image = spec.get("model", {}).get("image") or {}
    inner = next(iter(image.values()), {}) if isinstance(image, dict) and image else {}
    return inner if isinstance(inner, dict) else {}


def health_route(spec: Mapping[str, Any]) -> str:
    """The route checked before an endpoint is reported running. TGI answers ``/health``."""
    image = image_config(spec)
    route = image.get("healthRoute") or image.get("health_route") or "/health"
    return route if route.startswith("/") else "/" + route


def server_env(spec: Mapping[str, Any]) -> dict[str, str]:
    """The container environment: image env, then ``model.env``, then ``model.secrets`` (later wins)."""
    env: dict[str, str] = {}
    model = spec.get("model", {})
    for source in (image_config(spec).get("env"), model.get("env"), model.get("secrets")):
        if isinstance(source, dict):
            env.update({str(k): str(v) for k, v in source.items()})
    return env


def model_id(spec: Mapping[str, Any]) -> str:
    """What the local server loads. ``MODEL_ID=/repository`` (the real mount point) means the payload's repository."""
    repository = spec["model"]["repository"]
    requested = server_env(spec).get("MODEL_ID")
    if not requested or requested.rstrip("/") == REPOSITORY_MOUNT:
        return str(repository)
    return requested


def requires_token(spec: Mapping[str, Any]) -> bool:
    return spec.get("type") in TOKEN_TYPES


def idle_timeout_minutes(spec: Mapping[str, Any]) -> int | None:
    """Minutes without requests before scaling to zero, or None. As on the real service, only with minReplica 0."""
    scaling = spec.get("compute", {}).get("scaling") or {}
    timeout = scaling.get("scaleToZeroTimeout")
    if timeout and scaling.get("minReplica") == 0:
        return int(timeout)
    return None


def public_view(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec as GET returns it: secret values are never sent back, only their names."""
    view = copy.deepcopy(dict(spec))
    secrets = view.get("model", {}).get("secrets")
    if isinstance(secrets, dict):
        view["model"]["secrets"] = {key: "***" for key in secrets}
    return view


def _check(spec: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    if spec.get("type") not in ENDPOINT_TYPES:
        problems.append(f"type {spec.get('type')!r} must be one of {sorted(ENDPOINT_TYPES)}")
    model = spec.get("model")
    if not isinstance(model, dict):
        return problems + ["model must be an object"]
    for key in ("env", "secrets"):
        if model.get(key) is not None and not isinstance(model[key], dict):
            problems.append(f"model.{key} must be an object of strings")
    image = model.get("image")
    if image is not None and not (isinstance(image, dict) and len(image) <= 1):
        problems.append("model.image must be an object with one image variant, e.g. {'custom': {'url': ...}}")
    scaling = (spec.get("compute") or {}).get("scaling") or {}
    low, high = scaling.get("minReplica"), scaling.get("maxReplica")
    for key, value in (("minReplica", low), ("maxReplica", high), ("scaleToZeroTimeout", scaling.get("scaleToZeroTimeout"))):
        if value is not None and (not isinstance(value, int) or value < 0):
            problems.append(f"compute.scaling.{key} must be a non-negative integer, got {value!r}")
    if isinstance(low, int) and isinstance(high, int) and low > high:
        problems.append(f"compute.scaling.minReplica ({low}) must be <= maxReplica ({high})")
    return problems


def _get(data: Mapping[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, Mapping):
            return None
        data = data.get(part)  # type: ignore[assignment]
    return data


def _deep_merge(base: Any, update: Any) -> Any:
    if isinstance(base, dict) and isinstance(update, dict):
        out = dict(base)
        for key, value in update.items():
            out[key] = _deep_merge(base.get(key), value)
        return out
    return copy.deepcopy(update)
