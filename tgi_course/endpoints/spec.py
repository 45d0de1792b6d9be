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

from ..config import server_env_names  # standard library only: cheap
from .errors import InvalidPayload

ENDPOINT_TYPES = {"public", "protected", "authenticated", "private"}
# Types whose URL needs the owner's token as Bearer; "private" (AWS PrivateLink) has no local meaning
# beyond that, so it is treated like "authenticated".
TOKEN_TYPES = {"protected", "authenticated", "private"}
# The real service mounts the model repository in the container at this path.
REPOSITORY_MOUNT = "/repository"
# Tasks the local Messages API server can serve; anything else fails with a message saying so.
SERVED_TASKS = {None, "text-generation", "conversational", "text2text-generation"}
# Endpoint names. The create schema of the Inference Endpoints API gives CreateEndpointRequest.name the pattern
# "^[a-z0-9][a-z0-9-]{0,30}[a-z0-9]$": lower-case letters, digits and hyphens, at most 32 characters, no hyphen
# at either end (as catalogued at https://schemas.apis.io/schemas/hugging-face/hugging-face-createendpointrequest/;
# the API's own swagger is https://api.endpoints.huggingface.cloud). One-letter names are accepted here.
# Locally the first character must also be a letter, as in a DNS label (RFC 1035 2.3.1): the name becomes a
# file name in the state folder and a URL path segment, and a letter first keeps it a plain word in both.
_NAME = re.compile(r"^[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?$")
NAME_RULE = "use 1-32 lower-case letters, digits or hyphens, starting with a letter and ending with a letter or digit"
# Namespaces are Hub user or organisation names. huggingface_hub checks them client-side with
# utils.validate_repo_id (ASCII letters, digits, '-', '_' or '.', at most 96 characters, no '--' or '..',
# not starting or ending with '-' or '.'). Locally '.' is refused too: a namespace is a folder of the state
# folder, next to its own files (control-plane.json, control-plane.token), and must never name one of them
# (nor '.' or '..').
_NAMESPACE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,94}[A-Za-z0-9])?$")
NAMESPACE_RULE = "use 1-96 letters, digits, '-' or '_', starting and ending with a letter or digit, without '--'"
# Exported to every endpoint server: marks the process as that endpoint's (see process.kill_stale).
ENDPOINT_MARKER_ENV = "TGI_COURSE_ENDPOINT"
# The environment a payload may give the server (image env, model.env, model.secrets) is an allowlist: the
# server's own settings and the names below. Anything else could change which code the server process runs
# or which files it reads (PYTHONPATH, PYTHONSTARTUP, LD_PRELOAD, LD_LIBRARY_PATH, PATH, HOME, ...).
# Set by the control plane itself, so refused in a payload, with the reason:
CONTROLLED_ENV = {
    "HOSTNAME": "the server listens on 127.0.0.1, behind the endpoint URL",
    "TGI_COURSE_HOSTNAME": "the server listens on 127.0.0.1, behind the endpoint URL",
    "PORT": "each server listens on a free local port, behind the endpoint URL",
    "API_KEY": "each server gets its own random key, which the endpoint URL adds to the requests it forwards",
    ENDPOINT_MARKER_ENV: "it marks the process as this endpoint's server",
}
# Allowed beyond the server's settings: the Hub token that real payloads pass (usually as a secret) so that a
# container can download a gated model. It only authenticates Hub downloads; it changes no code path and no
# file location, and offline it is not even used.
EXTRA_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
# Top-level fields huggingface_hub may send, kept as given.
_TOP_LEVEL = ("type", "model", "compute", "provider", "tags", "route", "cacheHttpResponses", "privateService")


def parse_create(payload: Any) -> tuple[str, dict[str, Any]]:
    """Validate a create payload; return ``(name, spec)``. Raises :class:`InvalidPayload` naming every problem."""
    if not isinstance(payload, dict):
        raise InvalidPayload("The request body must be a JSON object")
    name = payload.get("name")
    problems: list[str] = []
    if not valid_name(name):
        problems.append(f"name {name!r} is invalid: {NAME_RULE}")
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


def valid_name(name: object) -> bool:
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def valid_namespace(namespace: object) -> bool:
    return isinstance(namespace, str) and _NAMESPACE.fullmatch(namespace) is not None and "--" not in namespace


def check_names(namespace: object, name: object = None) -> None:
    """Raise :class:`InvalidPayload` naming the field when a namespace (or endpoint name) from a URL is invalid."""
    if not valid_namespace(namespace):
        raise InvalidPayload(f"namespace {namespace!r} is invalid: {NAMESPACE_RULE}")
    if name is not None and not valid_name(name):
        raise InvalidPayload(f"name {name!r} is invalid: {NAME_RULE}")


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


def allowed_env_names() -> set[str]:
    """Environment variables a payload may set: the server's settings (minus the control plane's) and EXTRA_ENV."""
    return (server_env_names() - CONTROLLED_ENV.keys()) | set(EXTRA_ENV)


def server_env(spec: Mapping[str, Any]) -> dict[str, str]:
    """The container environment: image env, then ``model.env``, then ``model.secrets`` (later wins).

    Only allowed names pass, even from a record written before the allowlist existed (a payload with
    others is refused with a 400 before it is stored, see :func:`env_problems`).
    """
    env: dict[str, str] = {}
    allowed = allowed_env_names()
    for _, source in _env_sources(spec):
        if isinstance(source, dict):
            env.update({str(k): str(v) for k, v in source.items() if k in allowed})
    return env


def env_problems(spec: Mapping[str, Any]) -> list[str]:
    """One sentence per environment source that sets a name the server must not get from a payload."""
    problems: list[str] = []
    allowed = allowed_env_names()
    for where, source in _env_sources(spec):
        if source is None:
            continue
        if not isinstance(source, dict):
            problems.append(f"{where} must be an object of strings")
            continue
        refused = [key for key in source if key not in allowed and key not in CONTROLLED_ENV]
        if refused:
            listed = ", ".join(repr(key) for key in refused)
            problems.append(
                f"{where}: {listed} {'is' if len(refused) == 1 else 'are'} not allowed in the server's environment; "
                "it takes only the server's settings (those `tgi-course serve --help` lists, e.g. MAX_INPUT_LENGTH, "
                "MAX_TOTAL_TOKENS, MODEL_ID, DTYPE) and HF_TOKEN"
            )
        for key in source:
            if key in CONTROLLED_ENV:
                problems.append(f"{where}: {key!r} is set by the local control plane ({CONTROLLED_ENV[key]})")
        for key, value in source.items():
            if key in allowed and (not isinstance(value, (str, int, float, bool)) or "\x00" in str(value)):
                problems.append(f"{where}.{key} must be a string")
    return problems


def _env_sources(spec: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``(where, dict)`` for each place a payload sets environment variables, in the order they apply."""
    model = spec.get("model") or {}
    if not isinstance(model, Mapping):
        return []
    sources: list[tuple[str, Any]] = []
    image = model.get("image")
    if isinstance(image, dict) and len(image) == 1:
        variant, inner = next(iter(image.items()))
        if isinstance(inner, dict):
            sources.append((f"model.image.{variant}.env", inner.get("env")))
    sources += [("model.env", model.get("env")), ("model.secrets", model.get("secrets"))]
    return sources


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
    image = model.get("image")
    if image is not None and not (isinstance(image, dict) and len(image) <= 1):
        problems.append("model.image must be an object with one image variant, e.g. {'custom': {'url': ...}}")
    problems += env_problems(spec)
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
