"""TGI's own routes, validated against the schemas of TGI's OpenAPI spec (read from ../shared/reference)."""

from __future__ import annotations

import json

import httpx
import pytest
from openapi_schema_validator import OAS30Validator

# One client with a generous timeout: a shared 2-core CI machine can be slow to produce the first token.
http = httpx.Client(timeout=120)


def _nullable_refs(node):
    """OpenAPI 3.0 puts `nullable` beside `allOf`, which JSON-Schema validators ignore; spell it as anyOf-null."""
    if isinstance(node, dict):
        node = {k: _nullable_refs(v) for k, v in node.items()}
        if node.get("nullable") and "allOf" in node:
            rest = {k: v for k, v in node.items() if k not in {"allOf", "nullable"}}
            return {**rest, "anyOf": [{"allOf": node["allOf"]}, {"enum": [None]}]}
        return node
    if isinstance(node, list):
        return [_nullable_refs(v) for v in node]
    return node


@pytest.fixture(scope="module")
def check(openapi_spec):
    components = _nullable_refs(openapi_spec["components"])

    def validate(schema_name: str, instance) -> None:
        schema = {"$ref": f"#/components/schemas/{schema_name}", "components": components}
        OAS30Validator(schema).validate(instance)

    return validate


def sse_json(response: httpx.Response) -> list:
    return [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:") and line[5:].strip() != "[DONE]"]


def test_info(server, check):
    info = http.get(f"{server.url}/info").json()
    check("Info", info)
    assert info["max_input_tokens"] < info["max_total_tokens"]


def test_generate_with_details(server, check):
    body = http.post(f"{server.url}/generate", json={"inputs": "The sky is", "parameters": {"max_new_tokens": 5, "details": True, "top_n_tokens": 2, "decoder_input_details": True}}).json()
    check("GenerateResponse", body)
    assert body["details"]["generated_tokens"] == 5 and body["details"]["finish_reason"] == "length"
    assert len(body["details"]["prefill"]) > 0 and len(body["details"]["top_tokens"][0]) == 2


def test_generate_without_details_is_just_text(server, check):
    body = http.post(f"{server.url}/generate", json={"inputs": "The sky is", "parameters": {"max_new_tokens": 3}}).json()
    check("GenerateResponse", body)
    assert set(body) == {"generated_text"}


def test_generate_best_of_returns_other_sequences(server, check):
    body = http.post(f"{server.url}/generate", json={"inputs": "My name is", "parameters": {"max_new_tokens": 4, "best_of": 2, "do_sample": True, "seed": 3, "details": True}}).json()
    check("GenerateResponse", body)
    assert len(body["details"]["best_of_sequences"]) == 1


def test_generate_stream_events(server, check):
    with http.stream("POST", f"{server.url}/generate_stream", json={"inputs": "The sky is", "parameters": {"max_new_tokens": 4, "details": True}}) as response:
        events = sse_json(response)
    for event in events:
        check("StreamResponse", event)
    assert [e["index"] for e in events] == [1, 2, 3, 4]
    assert events[-1]["generated_text"] == "".join(e["token"]["text"] for e in events)
    check("StreamDetails", events[-1]["details"])


def test_compat_route_answers_an_array_and_streams_when_asked(server, check):
    # TGI's POST / answers a one-element array of GenerateResponse (its spec, and its own client reads [0]).
    answer = http.post(f"{server.url}/", json={"inputs": "The sky is", "parameters": {"max_new_tokens": 3}}).json()
    assert isinstance(answer, list) and len(answer) == 1
    (plain,) = answer
    check("GenerateResponse", plain)
    with http.stream("POST", f"{server.url}/", json={"inputs": "The sky is", "parameters": {"max_new_tokens": 3}, "stream": True}) as response:
        events = sse_json(response)
    assert events[-1]["generated_text"] == plain["generated_text"]


def test_tokenize_and_chat_tokenize(server, check):
    tokens = http.post(f"{server.url}/tokenize", json={"inputs": "Hello world"}).json()
    check("TokenizeResponse", tokens)
    assert "".join(t["text"] for t in tokens) == "Hello world"
    templated = http.post(f"{server.url}/chat_tokenize", json={"messages": [{"role": "user", "content": "Hi"}]}).json()
    check("ChatTokenizeResponse", templated)
    assert templated["templated_text"].endswith("<|im_start|>assistant\n")


def test_chat_objects_match_tgi_schemas_too(server, check):
    whole = http.post(f"{server.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "logprobs": True, "top_logprobs": 1}).json()
    check("ChatCompletion", whole)
    with http.stream("POST", f"{server.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "stream": True, "stream_options": {"include_usage": True}}) as response:
        chunks = sse_json(response)
    for chunk in chunks:
        check("ChatCompletionChunk", chunk)
    completion = http.post(f"{server.url}/v1/completions", json={"prompt": "Hi", "max_tokens": 3}).json()
    check("CompletionFinal", completion)


def test_models_entry_matches_model_info(server, check):
    check("ModelInfo", http.get(f"{server.url}/v1/models").json()["data"][0])


def test_invocations_accepts_generate_chat_and_completion_bodies(server, check):
    generate = http.post(f"{server.url}/invocations", json={"inputs": "The sky is", "parameters": {"max_new_tokens": 3}}).json()
    chat = http.post(f"{server.url}/invocations", json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}).json()
    completion = http.post(f"{server.url}/invocations", json={"prompt": "Hi", "max_tokens": 3}).json()
    # TGI's router hands a generate body to compat_generate, which wraps the answer in a one-element array
    # (router/src/sagemaker.rs, server.rs); its OpenAPI spec draws a bare GenerateResponse. The code wins.
    assert isinstance(generate, list) and len(generate) == 1
    for body in (generate[0], chat, completion):
        check("SagemakerResponse", body)
    assert chat["object"] == "chat.completion" and completion["object"] == "text_completion"


def test_messages_api_enabled_makes_invocations_a_chat_route(start_server):
    server = start_server(messages_api_enabled=True)
    chat = http.post(f"{server.url}/invocations", json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
    assert chat.status_code == 200 and chat.json()["object"] == "chat.completion"
    generate = http.post(f"{server.url}/invocations", json={"inputs": "Hi"})
    assert generate.status_code == 422 and "MESSAGES_API_ENABLED" in generate.json()["error"]


def test_health_metrics_docs_and_openapi(server):
    assert http.get(f"{server.url}/health").status_code == 200
    http.post(f"{server.url}/generate", json={"inputs": "Hi", "parameters": {"max_new_tokens": 2}})
    metrics = http.get(f"{server.url}/metrics").text
    for name in ("tgi_request_count_total", "tgi_queue_size", "tgi_batch_current_size", "tgi_request_duration_bucket", "tgi_request_generated_tokens_bucket"):
        assert name in metrics
    assert http.get(f"{server.url}/docs").status_code == 200
    assert "/v1/chat/completions" in http.get(f"{server.url}/openapi.json").json()["paths"]


def test_error_bodies_match_tgi_error_response(server, check):
    response = http.post(f"{server.url}/v1/chat/completions", json={"messages": []})
    check("ErrorResponse", response.json())


def test_sagemaker_ping_is_the_health_check(server):
    # SageMaker's container contract: GET /ping answers 200 when healthy (TGI routes it to its health check).
    response = http.get(f"{server.url}/ping")
    assert response.status_code == 200 and response.text == ""


def test_health_is_503_when_the_engine_is_down(start_server):
    server = start_server()
    server.state.engine.stop()
    for route in ("/health", "/ping"):
        response = http.get(f"{server.url}{route}")
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert response.json() == {"error": "unhealthy", "error_type": "healthcheck"}


def test_cors_allows_the_configured_origin(start_server):
    server = start_server(cors_allow_origin=("http://notebook.local",))
    preflight = http.options(
        f"{server.url}/v1/chat/completions",
        headers={"Origin": "http://notebook.local", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"},
    )
    assert preflight.headers.get("access-control-allow-origin") == "http://notebook.local"
    other = http.get(f"{server.url}/info", headers={"Origin": "http://elsewhere"})
    assert "access-control-allow-origin" not in other.headers


def test_tgi_routes_keep_the_matched_stop_sequence_and_openai_routes_drop_it(server):
    # A space ends nearly any text within 12 tokens; which words come first does not matter here.
    parameters = {"max_new_tokens": 12, "stop": [" the"], "details": True}
    inputs = "Write a sentence about the sea and the sky and the sun:"
    whole = http.post(f"{server.url}/generate", json={"inputs": inputs, "parameters": parameters}).json()
    if whole["details"]["finish_reason"] == "stop_sequence":
        assert whole["generated_text"].endswith(" the"), whole  # TGI's generated_text keeps the stop sequence
        with http.stream("POST", f"{server.url}/generate_stream", json={"inputs": inputs, "parameters": parameters}) as response:
            events = [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]
        assert events[-1]["generated_text"] == whole["generated_text"]
    chat = http.post(
        f"{server.url}/v1/completions", json={"prompt": inputs, "max_tokens": 12, "stop": [" the"], "temperature": 0}
    ).json()["choices"][0]
    if chat["finish_reason"] == "stop":
        assert not chat["text"].endswith(" the")  # OpenAI's text stops before it


def test_invocations_documents_its_three_body_shapes(server):
    spec = http.get(f"{server.url}/openapi.json").json()
    schema = spec["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    refs = {item["$ref"].rsplit("/", 1)[-1] for item in schema["oneOf"]}
    assert refs == {"ChatCompletionRequest", "CompletionRequest", "GenerateRequest"}
    assert refs <= set(spec["components"]["schemas"])
