"""tgi_course.course.capabilities: the probes against the real local server, and the reading of refusals
on the exact error bodies other servers send."""

from __future__ import annotations

import json

import httpx

from tgi_course.course.capabilities import (
    error_message,
    json_schema_support,
    read_json_schema_refusal,
    read_tool_refusal,
    tool_support,
)
from tgi_course.course.connect import Connection

# vLLM started without --enable-auto-tool-choice, answering a request with tools (HTTP 400).
VLLM_MESSAGE = '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
VLLM_BODY = json.dumps({"error": {"message": VLLM_MESSAGE, "type": "BadRequestError", "param": None, "code": 400}})
VLLM_OLD_BODY = json.dumps({"object": "error", "message": VLLM_MESSAGE, "type": "BadRequestError", "param": None, "code": 400})


def test_the_course_server_takes_tools(server):
    support = tool_support(Connection(url=server.url))
    assert support.supported, support.explanation
    assert support.feature == "tools" and support.status_code == 200 and support.server_message is None


def test_the_course_server_takes_openai_json_schema(server):
    support = json_schema_support(Connection(url=server.url))
    assert support.supported, support.explanation
    assert support.status_code == 200


def test_a_real_tool_error_body_is_read_and_explained(server):
    # The course server's own 422 (TGI's shape: {"error": ..., "error_type": "tool_error"}).
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "tgi", "messages": [{"role": "user", "content": "hi"}], "tool_choice": "required", "max_tokens": 1},
        timeout=60,
    )
    assert response.status_code == 422
    message = error_message(response.text)
    assert message == "Tool error: `tool_choice` is set but `tools` is empty"
    support = read_tool_refusal(response.status_code, message)
    assert not support.supported and support.status_code == 422 and support.server_message == message
    assert "refuses a minimal tools request" in support.explanation and message in support.explanation


def test_vllm_without_tool_flags_is_explained():
    for body in (VLLM_BODY, VLLM_OLD_BODY):
        message = error_message(body)
        assert message == VLLM_MESSAGE
        support = read_tool_refusal(400, message)
        assert not support.supported and support.feature == "tools"
        assert "vLLM" in support.explanation
        assert "--enable-auto-tool-choice --tool-call-parser <parser>" in support.explanation
        assert "trained to call tools" in support.explanation
        assert VLLM_MESSAGE in support.explanation


def test_vllm_refusing_required_the_same_way_is_explained():
    message = VLLM_MESSAGE.replace('"auto"', '"required"')
    support = read_tool_refusal(400, error_message(json.dumps({"error": {"message": message}})))
    assert not support.supported and "--enable-auto-tool-choice --tool-call-parser" in support.explanation


def test_tgi_refusing_openai_json_schema_is_explained():
    # TGI deserializes response_format as {"type": ..., "value": ...}; axum answers a body that does not fit
    # with a plain-text 422.
    body = "Failed to deserialize the JSON body into the target type: response_format: missing field `value` at line 1 column 190"
    assert error_message(body) == body
    support = read_json_schema_refusal(422, error_message(body))
    assert not support.supported and support.feature == "json_schema"
    assert '{"type": "json_schema", "value": {"name": ..., "schema": ...}}' in support.explanation
    assert "model_validate_json" in support.explanation


def test_other_error_shapes_are_read():
    assert error_message(json.dumps({"error": "Input validation error: x", "error_type": "validation"})) == "Input validation error: x"
    assert error_message(json.dumps({"detail": "Not Found"})) == "Not Found"
    assert error_message("") == ""
    assert read_tool_refusal(404, "Not Found").explanation.startswith("This server has no /v1/chat/completions route")
