"""Can the server do what a notebook is about to ask? One small probe per feature, and, when it cannot,
what the server would need.

Tools and structured outputs are where OpenAI-compatible servers differ most:

- **vLLM** answers requests with ``tool_choice: "auto"`` (the default whenever ``tools`` is set, and what
  agents send) only when it was started with ``--enable-auto-tool-choice --tool-call-parser <parser>``;
  otherwise it answers HTTP 400, ``"auto" tool choice requires --enable-auto-tool-choice and
  --tool-call-parser to be set``. The parser must match the model's chat template, and the model must have
  been trained to call tools.
- **TGI** supports tools on any model: it constrains the call with a grammar built from the tools' schemas.
  Its ``response_format`` takes only TGI's own shape, ``{"type": "json" | "regex" | "json_schema", "value":
  ...}``, so OpenAI's ``{"type": "json_schema", "json_schema": {...}}`` (what the ``openai`` client's
  ``chat.completions.parse()`` and LangChain's ``with_structured_output`` send) gets HTTP 422.

``tool_support(conn)`` and ``json_schema_support(conn)`` send minimal requests (a few tokens; a server that
answers 200 but ignores the feature, as ``transformers serve`` does, is caught by the reply's shape) and return a :class:`Support`: ``supported`` and an ``explanation`` a notebook can print instead of
failing with a traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from .connect import Connection

__all__ = ["Support", "error_message", "json_schema_support", "read_json_schema_refusal", "read_tool_refusal", "tool_support"]

# A function without arguments: the shortest call any server can write (about 13 tokens).
PROBE_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {"name": "ping", "description": "Check that the server answers.", "parameters": {"type": "object", "properties": {}}},
}
PROBE_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}

VLLM_TOOL_FLAGS = "--enable-auto-tool-choice --tool-call-parser <parser>"


@dataclass(frozen=True)
class Support:
    """What one probe found: can the server do ``feature``, and if not, why and what it needs."""

    feature: str
    supported: bool
    explanation: str
    status_code: int | None = None  # of the request that decided (None: the server could not be reached)
    server_message: str | None = None  # the server's own error message, when it refused


def error_message(body: str) -> str:
    """The error message in an error response's body, whatever the server's shape.

    TGI (and this course's server): ``{"error": "...", "error_type": "..."}``; OpenAI and recent vLLM:
    ``{"error": {"message": "...", ...}}``; older vLLM: ``{"object": "error", "message": "..."}``; FastAPI:
    ``{"detail": ...}``. A body that is not JSON (axum's rejections in TGI are plain text) is returned as is.
    """
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, TypeError):
        return (body or "").strip()
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str) and error:
            return error
        if data.get("message"):
            return str(data["message"])
        if "detail" in data:
            detail = data["detail"]
            return detail if isinstance(detail, str) else json.dumps(detail)
    return body.strip() if isinstance(body, str) else str(body)


def read_tool_refusal(status_code: int, message: str) -> Support:
    """Explain a server's refusal of a tools request (``status_code`` not 200, ``message`` its error text)."""
    text = message.lower()
    if "enable-auto-tool-choice" in text or "tool-call-parser" in text:
        explanation = (
            "This server refuses tool calls: it is vLLM, started without tool calling. Restart it with "
            f"`vllm serve <model> {VLLM_TOOL_FLAGS}`, where <parser> matches the model's chat template "
            "(for example hermes for Qwen2.5, llama3_json for Llama 3.1 and later, mistral for Mistral), and serve "
            "a model trained to call tools. TGI needs no flag: it supports tools on any model, with a grammar."
        )
    elif status_code == 404:
        explanation = "This server has no /v1/chat/completions route, so it cannot take tools at all."
    elif "tool" in text or "function" in text:
        explanation = (
            "This server refuses a minimal tools request, so it does not support function calling as OpenAI "
            "describes it. TGI supports tools on any model (a grammar constrains the call); vLLM needs "
            f"`{VLLM_TOOL_FLAGS}` and a model trained to call tools."
        )
    else:
        explanation = "A minimal tools request failed for a reason that names no tool feature; see the server's message."
    return Support("tools", False, f"{explanation}\nServer said (HTTP {status_code}): {message}", status_code, message)


def read_json_schema_refusal(status_code: int, message: str) -> Support:
    """Explain a refusal of OpenAI's ``response_format: {"type": "json_schema", "json_schema": {...}}``."""
    text = message.lower()
    if status_code == 404:
        explanation = "This server has no /v1/chat/completions route."
    elif "value" in text or "response_format" in text or "json_schema" in text or "grammar" in text:
        explanation = (
            "This server does not take OpenAI's response_format shape (what `client.chat.completions.parse()` "
            "sends). Real TGI takes only its own: {\"type\": \"json_schema\", \"value\": {\"name\": ..., \"schema\": ...}} "
            "(or {\"type\": \"json\", \"value\": <schema>}); send that with `chat.completions.create()` and "
            "validate the reply yourself, e.g. `Contact.model_validate_json(reply.choices[0].message.content)`."
        )
    else:
        explanation = "A minimal structured-output request failed for a reason that names no response_format feature."
    return Support("json_schema", False, f"{explanation}\nServer said (HTTP {status_code}): {message}", status_code, message)


def _post(conn: Connection, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{conn.url}/v1/chat/completions", json={"model": conn.model, "temperature": 0, **body}, headers=conn.headers, timeout=120)


def _ask(conn: Connection, feature: str, body: dict[str, Any], read_refusal: Any) -> httpx.Response | Support:
    """One probe request: the 200 response, or the Support that explains why there is none."""
    try:
        response = _post(conn, body)
    except httpx.HTTPError as error:
        return Support(feature, False, f"The server could not be reached to probe {feature}: {error}")
    if response.status_code != 200:
        return read_refusal(response.status_code, error_message(response.text))
    return response


def _first_message(response: httpx.Response) -> dict[str, Any]:
    """The first choice's message of a chat completion; empty when the body has none."""
    try:
        message = response.json()["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return {}
    return message if isinstance(message, dict) else {}


def tool_support(conn: Connection) -> Support:
    """Probe function calling with one no-argument tool: ``tool_choice`` ``"auto"`` (1 token; vLLM checks its
    flags before generating) and ``"required"`` (a whole call, about 13 tokens). Supported when both answer 200
    and the required one holds a call."""
    question = [{"role": "user", "content": "Check that the server answers."}]
    for choice, max_tokens in (("auto", 1), ("required", 32)):
        body = {"messages": question, "tools": [PROBE_TOOL], "tool_choice": choice, "max_tokens": max_tokens}
        response = _ask(conn, "tools", body, read_tool_refusal)
        if isinstance(response, Support):
            return response
    if not _first_message(response).get("tool_calls"):
        # A 200 without a call: the server accepted `tools` and ignored them (transformers serve does).
        return Support(
            "tools", False,
            "This server accepts `tools` but ignores them: asked for a required call, it answered with text and no "
            "`tool_calls`. TGI supports tools on any model (a grammar constrains the call); vLLM needs "
            f"`{VLLM_TOOL_FLAGS}` and a model trained to call tools.", 200,
        )
    return Support("tools", True, "This server takes tools (tool_choice \"auto\" and \"required\").", 200)


def _follows_probe_schema(content: Any) -> bool:
    try:
        reply = json.loads(content)
    except (TypeError, ValueError):
        return False
    return isinstance(reply, dict) and isinstance(reply.get("ok"), bool)


def json_schema_support(conn: Connection) -> Support:
    """Probe OpenAI's ``response_format`` shape, ``{"type": "json_schema", "json_schema": {...}}`` (a reply of
    about 5 tokens, which must follow the schema)."""
    response_format = {"type": "json_schema", "json_schema": {"name": "probe", "schema": PROBE_SCHEMA, "strict": True}}
    body = {"messages": [{"role": "user", "content": "Say ok."}], "response_format": response_format, "max_tokens": 16}
    response = _ask(conn, "json_schema", body, read_json_schema_refusal)
    if isinstance(response, Support):
        return response
    if not _follows_probe_schema(_first_message(response).get("content")):
        # A 200 whose text is no {"ok": ...} object: the server accepted response_format and ignored it.
        return Support(
            "json_schema", False,
            "This server accepts OpenAI's response_format but ignores it: the reply did not follow the schema, so "
            "`chat.completions.parse()` would fail to parse. Servers that enforce it: TGI (in its own shape), vLLM, "
            "and this course's server.", 200,
        )
    return Support("json_schema", True, "This server takes OpenAI's response_format {\"type\": \"json_schema\", ...}.", 200)
