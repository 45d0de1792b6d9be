"""Bad input: the right status, a TGI error body naming the field and the limit, and the server keeps serving."""

from __future__ import annotations

import copy

import httpx
import openai
import pytest

http = httpx.Client(timeout=120)

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def small(start_server):
    """Tight limits so 'too long' is cheap to reach."""
    return start_server(max_input_tokens=64, max_total_tokens=96, max_batch_prefill_tokens=128, payload_limit=4096)


def still_serving(url: str) -> None:
    response = http.post(f"{url}/v1/chat/completions", json={"messages": HI, "max_tokens": 2})
    assert response.status_code == 200, response.text


CASES = [
    # (name, body, status, words the message must contain)
    ("missing messages", {"max_tokens": 2}, 422, ["messages", "Field required"]),
    ("empty messages", {"messages": []}, 422, ["messages", "at least one"]),
    ("unknown role", {"messages": [{"role": "wizard", "content": "x"}]}, 422, ["messages[0].role", "wizard"]),
    ("image part", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 422, ["content[0].type", "text"]),
    ("max_tokens zero", {"messages": HI, "max_tokens": 0}, 422, ["max_tokens", "strictly positive"]),
    ("max_tokens negative", {"messages": HI, "max_tokens": -3}, 422, ["max_tokens", "-3"]),
    ("max_tokens beyond total", {"messages": HI, "max_tokens": 90}, 422, ["max_tokens", "96", "MAX_TOTAL_TOKENS"]),
    ("input too long", {"messages": [{"role": "user", "content": "word " * 200}]}, 422, ["64", "MAX_INPUT_TOKENS"]),
    ("temperature negative", {"messages": HI, "temperature": -0.5}, 422, ["temperature", "-0.5"]),
    ("top_p zero", {"messages": HI, "top_p": 0}, 422, ["top_p", "(0.0, 1.0]"]),
    ("top_p above one", {"messages": HI, "top_p": 1.5}, 422, ["top_p", "1.5"]),
    ("frequency penalty", {"messages": HI, "frequency_penalty": -2.5}, 422, ["frequency_penalty", "[-2.0, 2.0]"]),
    ("presence penalty", {"messages": HI, "presence_penalty": 2.1}, 422, ["presence_penalty", "2.1"]),
    ("too many stops", {"messages": HI, "stop": ["a", "b", "c", "d", "e"]}, 422, ["stop", "4", "MAX_STOP_SEQUENCES"]),
    ("top_logprobs over limit", {"messages": HI, "logprobs": True, "top_logprobs": 6}, 422, ["top_logprobs", "5", "MAX_TOP_N_TOKENS"]),
    ("top_logprobs without logprobs", {"messages": HI, "top_logprobs": 2}, 422, ["top_logprobs", "logprobs"]),
    ("wrong type", {"messages": HI, "temperature": "hot"}, 422, ["temperature"]),
    ("n too large", {"messages": HI, "n": 50}, 422, ["`n`", "MAX_BEST_OF"]),
]


@pytest.mark.parametrize("name,body,status,words", CASES, ids=[c[0] for c in CASES])
def test_chat_validation(small, name, body, status, words):
    response = http.post(f"{small.url}/v1/chat/completions", json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert set(error) == {"error", "error_type"} and error["error_type"] == "validation"
    for word in words:
        assert word in error["error"], (word, error["error"])
    # A stream that fails validation fails before it starts: an HTTP status, not a 200 with an error event.
    streamed = http.post(f"{small.url}/v1/chat/completions", json={**body, "stream": True})
    assert streamed.status_code == status and streamed.json() == error
    still_serving(small.url)


@pytest.mark.parametrize("field", ["temperature", "top_p", "frequency_penalty", "presence_penalty", "repetition_penalty"])
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_422_naming_the_field(small, field, literal):
    # JSON parsers here accept these literals and pydantic keeps them as floats: validation must catch them,
    # or the step that samples the row fails.
    body = f'{{"messages": [{{"role": "user", "content": "Hi"}}], "max_tokens": 2, "{field}": {literal}}}'.encode()
    response = http.post(f"{small.url}/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert f"`{field}`" in response.json()["error"]
    generate = f'{{"inputs": "Hi", "parameters": {{"max_new_tokens": 2, "{field}": {literal}}}}}'.encode()
    if field != "presence_penalty":  # not a TGI generate parameter
        response = http.post(f"{small.url}/generate", content=generate, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
        assert f"`{field}`" in response.json()["error"]
    still_serving(small.url)


def test_temperatures_too_small_to_sample_decode_greedily(small):
    greedy = http.post(f"{small.url}/v1/chat/completions", json={"messages": HI, "max_tokens": 4, "temperature": 0}).json()
    tiny = http.post(f"{small.url}/v1/chat/completions", json={"messages": HI, "max_tokens": 4, "temperature": 1e-40})
    assert tiny.status_code == 200, tiny.text
    assert tiny.json()["choices"][0]["message"]["content"] == greedy["choices"][0]["message"]["content"]
    strong = http.post(f"{small.url}/generate", json={"inputs": "Hi", "parameters": {"max_new_tokens": 4, "temperature": 1e-45, "repetition_penalty": 100}})
    assert strong.status_code == 200, strong.text
    # Penalties have an upper bound: 1e30 is refused with the field and the limit, not sampled into inf.
    extreme = http.post(f"{small.url}/generate", json={"inputs": "Hi", "parameters": {"max_new_tokens": 4, "repetition_penalty": 1e30}})
    assert extreme.status_code == 422 and "`repetition_penalty`" in extreme.json()["error"] and "100" in extreme.json()["error"]
    still_serving(small.url)


def test_malformed_json(small):
    response = http.post(f"{small.url}/v1/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]
    still_serving(small.url)


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions", "/generate", "/generate_stream", "/", "/invocations", "/tokenize", "/chat_tokenize"])
def test_a_body_that_is_not_utf8_is_a_400(small, route):
    response = http.post(f"{small.url}{route}", content=b'{"inputs": "\xff\xfe caf\xe9"}', headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error_type"] == "validation"
    still_serving(small.url)


def test_wrong_content_type(small):
    response = http.post(f"{small.url}/v1/chat/completions", content=b"messages=hi", headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415 and "application/json" in response.json()["error"]
    still_serving(small.url)


def test_payload_over_limit_both_declared_and_chunked(small):
    big = {"messages": [{"role": "user", "content": "x" * 5000}]}
    response = http.post(f"{small.url}/v1/chat/completions", json=big)
    assert response.status_code == 413 and "PAYLOAD_LIMIT=4096" in response.json()["error"]

    def chunks():
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}]}'

    chunked = http.post(f"{small.url}/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    still_serving(small.url)


def test_unknown_route_and_wrong_method(small):
    missing = http.post(f"{small.url}/v1/chat/complete", json={"messages": HI})
    assert missing.status_code == 404 and missing.json()["error_type"] == "not_found"
    wrong = http.get(f"{small.url}/v1/chat/completions")
    assert wrong.status_code == 405 and wrong.json()["error_type"] == "method_not_allowed"
    still_serving(small.url)


def test_generate_validation_uses_tgi_rules(small):
    cases = [
        ({"inputs": "Hi", "parameters": {"temperature": 0}}, "temperature"),
        ({"inputs": "Hi", "parameters": {"max_new_tokens": 0}}, "max_new_tokens"),
        ({"inputs": "Hi", "parameters": {"top_n_tokens": 9}}, "top_n_tokens"),
        ({"inputs": "Hi", "parameters": {"stop": ["a", "b", "c", "d", "e"]}}, "stop"),
        ({"inputs": "word " * 200}, "MAX_INPUT_TOKENS"),
    ]
    for body, word in cases:
        response = http.post(f"{small.url}/generate", json=body)
        assert response.status_code == 422 and word in response.json()["error"], response.text
    # TGI rejects top_p=1.0; it means "no nucleus filtering", so it is accepted here.
    assert http.post(f"{small.url}/generate", json={"inputs": "Hi", "parameters": {"top_p": 1.0, "max_new_tokens": 2}}).status_code == 200


def test_openai_client_raises_the_matching_exception_with_the_field(small):
    client = small.openai()
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.create(model="tgi", messages=HI, max_tokens=1000)
    assert "max_tokens" in str(caught.value) and "96" in str(caught.value)
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.create(model="tgi", messages=HI, temperature=-1, stream=True)
    assert "temperature" in str(caught.value)
    with pytest.raises(openai.NotFoundError):
        small.openai(base_url=small.url + "/v2/").chat.completions.create(model="tgi", messages=HI)


def test_api_key_guards_inference_routes_only(start_server):
    guarded = start_server(api_key="s3cret")
    for path, body in [("/v1/chat/completions", {"messages": HI, "max_tokens": 1}), ("/generate", {"inputs": "Hi"}), ("/v1/completions", {"prompt": "Hi"}), ("/invocations", {"inputs": "Hi"}), ("/tokenize", {"inputs": "Hi"}), ("/generate_stream", {"inputs": "Hi"}), ("/", {"inputs": "Hi"})]:
        assert http.post(f"{guarded.url}{path}", json=body).status_code == 401, path
        wrong = http.post(f"{guarded.url}{path}", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error_type"] == "authentication"
    for path in ("/health", "/info", "/metrics", "/v1/models"):
        assert http.get(f"{guarded.url}{path}").status_code == 200, path
    with pytest.raises(openai.AuthenticationError):
        guarded.openai(api_key="wrong").chat.completions.create(model="tgi", messages=HI, max_tokens=1)
    ok = guarded.openai(api_key="s3cret").chat.completions.create(model="tgi", messages=HI, max_tokens=1)
    assert ok.choices[0].message.content is not None


def test_template_error_is_422_template_error(start_server, loaded_model):
    """A template that refuses system messages, as some models' templates do."""
    strict = copy.copy(loaded_model)
    tokenizer = copy.deepcopy(loaded_model.tokenizer)
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    strict.tokenizer = tokenizer
    server = start_server(loaded=strict).url
    response = http.post(f"{server}/v1/chat/completions", json={"messages": [{"role": "system", "content": "Be brief."}, *HI]})
    assert response.status_code == 422
    assert response.json() == {"error": "Template error: System role not supported", "error_type": "template_error"}
    assert http.post(f"{server}/v1/chat/completions", json={"messages": HI, "max_tokens": 2}).status_code == 200

