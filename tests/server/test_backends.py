"""The API contract on both runners in one run, whichever backend the run's default picked.

Each test runs against a server over the transformers runner (the run's dtype) and one over the llama.cpp
runner (float32 over the F16 re-encoded GGUF). Model text is compared only within one server (stream
against non-stream, a seed against itself, a stop against the same greedy answer), never across runners;
across them only facts the model gets right on both: "Paris", 12 and 34 copied into a tool call, JSON that
validates. Requests are short (max_tokens <= 24; 32 for the tool call, which needs ~26) to keep it fast.
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

PARIS = [{"role": "user", "content": "What is the capital of France?"}]
MULTIPLY = {
    "type": "function",
    "function": {
        "name": "multiply",
        "description": "Multiply two integers",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]},
    },
}
CAPITAL = {
    "type": "object",
    "properties": {"capital": {"type": "string", "maxLength": 12}},
    "required": ["capital"],
    "additionalProperties": False,
}
http = httpx.Client(timeout=120)


@pytest.fixture(scope="module", params=["transformers", "llama.cpp"])
def backend(request, start_server):
    """(backend name, loaded model, running server) for one runner; both servers stay up for the session."""
    from tgi_course.config import run_dtype
    from tgi_course.models import load, resolve

    name = request.param
    if name == "llama.cpp":
        pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed here; only the transformers runner can be tested")
        dtype = "float32"
    else:
        dtype = run_dtype()
    loaded = load(resolve("default"), device="cpu", dtype=dtype, backend=name)
    assert loaded.backend == name
    # A smaller KV budget than the default 65,536 tokens: the llama.cpp runner allocates all of it up front.
    # One llama.cpp thread (TGI_COURSE_THREADS; the transformers runner ignores it): its threads spin-wait for
    # each other at every op, and a decode step took 3 s instead of 40 ms beside a busy process on 2 cores.
    server = start_server(loaded=loaded, max_batch_total_tokens=8192, threads=1)
    return name, loaded, server


def _chat(server, **kwargs):
    kwargs.setdefault("messages", PARIS)
    kwargs.setdefault("max_tokens", 24)
    kwargs.setdefault("temperature", 0)
    return server.openai().chat.completions.create(model="tgi", **kwargs)


def test_health_and_info(backend):
    name, loaded, server = backend
    assert http.get(f"{server.url}/health").status_code == 200
    info = http.get(f"{server.url}/info").json()
    assert info["model_dtype"] == str(loaded.dtype).removeprefix("torch.")
    if name == "llama.cpp":
        assert info["model_dtype"] == "float32"
    assert info["model_device_type"] == "cpu" and info["max_batch_total_tokens"] == 8192


def test_system_fingerprint_names_the_backend(backend):
    name, loaded, server = backend
    fingerprint = _chat(server, max_tokens=2).system_fingerprint
    assert fingerprint.startswith("tgi-course-") and "-cpu-" in fingerprint
    if name == "llama.cpp":
        assert "llama.cpp" in fingerprint and fingerprint.endswith("-F16"), fingerprint
    else:
        assert "llama.cpp" not in fingerprint and fingerprint.endswith(str(loaded.dtype).removeprefix("torch.")), fingerprint


def test_greedy_answer_names_paris(backend):
    _, _, server = backend
    reply = _chat(server)
    assert "Paris" in reply.choices[0].message.content, reply.choices[0].message.content
    assert 0 < reply.usage.completion_tokens <= 24


def test_stream_concatenates_to_the_non_streamed_text(backend):
    _, _, server = backend
    whole = _chat(server).choices[0].message.content
    parts, finish = [], None
    for chunk in _chat(server, stream=True):
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(parts) == whole
    assert finish in {"stop", "length"}


def test_max_tokens_is_honoured_with_ignore_eos(backend):
    _, _, server = backend
    reply = _chat(server, max_tokens=9, extra_body={"ignore_eos": True})
    assert reply.usage.completion_tokens == 9
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content


def test_logprobs_with_three_sorted_alternatives(backend):
    _, _, server = backend
    reply = _chat(server, max_tokens=5, logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens > 0
    for entry in content:
        top = [alt.logprob for alt in entry.top_logprobs]
        assert len(top) == 3 and top == sorted(top, reverse=True), top
        assert entry.logprob <= 0 and all(lp <= 0 for lp in top)
        assert entry.top_logprobs[0].token == entry.token  # greedy: the chosen token is the most likely one
        assert entry.logprob == pytest.approx(top[0], abs=1e-4)


def test_seeded_sampling_repeats(backend):
    _, _, server = backend

    def sample() -> str:
        return _chat(server, messages=[{"role": "user", "content": "Tell me a story."}], temperature=0.8, seed=7, max_tokens=16).choices[0].message.content

    first = sample()
    assert first and sample() == first


def test_n_gives_two_choices(backend):
    _, _, server = backend
    reply = _chat(server, messages=[{"role": "user", "content": "Give me a name."}], n=2, temperature=0.8, seed=3, max_tokens=6)
    assert sorted(c.index for c in reply.choices) == [0, 1]
    assert all(c.message.content for c in reply.choices)
    assert 0 < reply.usage.completion_tokens <= 2 * 6


def test_a_stop_sequence_cuts_the_text(backend):
    _, _, server = backend
    whole = _chat(server).choices[0].message.content
    assert "Paris" in whole, whole
    stopped = _chat(server, stop=["Paris"]).choices[0]
    assert stopped.finish_reason == "stop"
    assert stopped.message.content == whole[: whole.index("Paris")]


def test_a_required_tool_call_has_integer_arguments(backend):
    _, _, server = backend
    # The call is ~26 tokens ({"name": "multiply", "arguments": {"a": 12, "b": 34}}): 24 would cut its last brace.
    reply = _chat(server, messages=[{"role": "user", "content": "What is 12 times 34?"}], tools=[MULTIPLY], tool_choice="required", max_tokens=32)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "multiply"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, MULTIPLY["function"]["parameters"])
    assert all(isinstance(arguments[k], int) for k in ("a", "b"))
    assert arguments == {"a": 12, "b": 34}


def test_response_format_json_schema_validates(backend):
    _, _, server = backend
    response_format = {"type": "json_schema", "json_schema": {"name": "capital", "schema": CAPITAL, "strict": True}}
    reply = _chat(server, messages=[{"role": "user", "content": "What is the capital of France? Answer in JSON."}], response_format=response_format)
    assert reply.choices[0].finish_reason == "stop", reply.choices[0]
    value = json.loads(reply.choices[0].message.content)
    jsonschema.validate(value, CAPITAL)
