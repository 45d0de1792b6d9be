"""The official openai client against the real server: sync, stream, async; every object validates."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]

# One client with a generous timeout: a shared 2-core CI machine can be slow to produce the first token.
http = httpx.Client(timeout=120)


def sse_payloads(response: httpx.Response) -> list[str]:
    return [line[len("data:") :].strip() for line in response.iter_lines() if line.startswith("data:")]


def test_sync_completion_is_an_exact_openai_object(server):
    body = http.post(f"{server.url}/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 12, "temperature": 0}).json()
    parsed = ChatCompletion.model_validate(body)
    assert parsed.object == "chat.completion"
    assert parsed.id.startswith("chatcmpl-") and len(parsed.id) > 12
    assert parsed.choices[0].message.role == "assistant"
    assert "Paris" in parsed.choices[0].message.content
    assert parsed.choices[0].finish_reason == "stop"
    assert parsed.usage.total_tokens == parsed.usage.prompt_tokens + parsed.usage.completion_tokens
    assert parsed.model == server.state.facts.name and parsed.system_fingerprint


def test_ids_are_unique(server):
    client = server.openai()
    ids = {client.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=1).id for _ in range(3)}
    assert len(ids) == 3


def test_stream_chunks_validate_and_rebuild_the_sync_text(server):
    client = server.openai()
    whole = client.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=16, temperature=0).choices[0].message.content
    with http.stream("POST", f"{server.url}/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 16, "temperature": 0, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        payloads = sse_payloads(response)
    assert payloads[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(json.loads(p)) for p in payloads[:-1]]
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole
    assert all("usage" not in json.loads(p) for p in payloads[:-1])


def test_stream_with_the_client_and_include_usage(server):
    client = server.openai()
    stream = client.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == sum(1 for c in chunks if c.choices and c.choices[0].delta.content) or usage_chunk.usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


def test_async_client_runs_requests_concurrently(server):
    async def main() -> list[str]:
        client = server.async_openai()
        calls = [client.chat.completions.create(model="tgi", messages=[{"role": "user", "content": q}], max_tokens=8, temperature=0) for q in ("Hi", "Name a color.", "What is 2+2?")]
        return [r.choices[0].message.content for r in await asyncio.gather(*calls)]

    answers = asyncio.run(main())
    assert len(answers) == 3 and all(answers)


def test_max_completion_tokens_and_length_finish(server):
    response = server.openai().chat.completions.create(model="tgi", messages=MESSAGES, max_completion_tokens=2, temperature=0)
    assert response.usage.completion_tokens == 2
    assert response.choices[0].finish_reason == "length"


def test_stop_sequence_reports_stop_not_stop_sequence(server):
    response = server.openai().chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=20, temperature=0, stop=["Paris"])
    assert response.choices[0].finish_reason == "stop"  # TGI says "stop_sequence", which breaks OpenAI clients
    assert "Paris" not in response.choices[0].message.content


def test_stop_sequence_never_leaks_into_a_stream(server):
    stream = server.openai().chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=20, temperature=0, stop=["Paris"], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "Paris" not in text and text.startswith("The capital")


def test_seed_is_deterministic_on_an_idle_server(server):
    client = server.openai()

    def ask(seed: int) -> str:
        return client.chat.completions.create(model="tgi", messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=16, temperature=1.0, top_p=1.0, seed=seed).choices[0].message.content

    assert ask(1234) == ask(1234)
    assert ask(1234) != ask(4321)


def test_logprobs_in_openai_shape(server):
    response = server.openai().chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=4, temperature=0, logprobs=True, top_logprobs=3)
    content = response.choices[0].logprobs.content
    assert len(content) == response.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.bytes == list(entry.token.encode())
        assert entry.top_logprobs[0].token == entry.token


def test_n_choices_with_seed(server):
    response = server.openai().chat.completions.create(model="tgi", messages=[{"role": "user", "content": "Give me a name."}], max_tokens=6, n=3, seed=5, temperature=1.0)
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert len({c.message.content for c in response.choices}) > 1


def test_completions_with_a_list_of_prompts_and_logprobs(server):
    body = http.post(f"{server.url}/v1/completions", json={"prompt": ["The sky is", "Water is"], "max_tokens": 4, "temperature": 0, "logprobs": 2}).json()
    parsed = Completion.model_validate(body)
    assert [c.index for c in parsed.choices] == [0, 1]
    assert all(c.text and c.logprobs and len(c.logprobs.tokens) == 4 for c in parsed.choices)
    # Streamed = whole, for the same batch: one prompt alone both times. (Greedy text may change with what else
    # shares the batch: matmul kernels pick their blocking by the number of rows, on either backend.)
    alone = server.openai().completions.create(model="tgi", prompt="The sky is", max_tokens=4, temperature=0)
    stream = server.openai().completions.create(model="tgi", prompt="The sky is", max_tokens=4, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == alone.choices[0].text


def test_models_list(server):
    models = server.openai().models.list()
    assert [m.id for m in models.data] == [server.state.facts.name]
    assert http.get(f"{server.url}/v1/models").json() == {
        "object": "list",
        "data": [{"id": server.state.facts.name, "object": "model", "created": 0, "owned_by": server.state.facts.name}],
    }


def test_developer_role_and_content_parts_are_accepted(server):
    response = server.openai().chat.completions.create(
        model="tgi",
        messages=[{"role": "developer", "content": "Answer in one word."}, {"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]}],
        max_tokens=4,
        temperature=0,
    )
    assert response.choices[0].message.content
