"""TGI's own Python client, ``text-generation``, against the real server: what works against TGI works here.

The client reads TGI's wire format with its own pydantic models (``text_generation.types``), so a response
that parses is one TGI's client accepts. ``Client.generate`` posts to ``POST /`` and reads element ``[0]`` of
the array TGI answers there; ``generate_stream`` posts ``stream: true`` to the same route and reads the
Server-Sent Events. Checks are on the contract (types, finish reasons, token counts), never on model text.

It is installed with ``--no-deps`` (see the Makefile): its metadata pins huggingface-hub<1.0, yet all it
imports from there is ``huggingface_hub.utils.build_hf_headers``, which our pin still has.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

text_generation = pytest.importorskip("text_generation", reason="`make setup` installs text-generation (--no-deps)")
from text_generation import AsyncClient, Client  # noqa: E402
from text_generation.errors import ValidationError  # noqa: E402
from text_generation.types import FinishReason, Response, StreamResponse  # noqa: E402

PROMPT = "The sky is"
# The client's own default timeout is 10 s; a shared 2-core CI machine can be slower to the first token.
TIMEOUT = 120


def assert_finished_properly(details, max_new_tokens: int, eos_ids) -> None:
    """A finish reason the client knows, and token counts that agree with it."""
    assert isinstance(details.finish_reason, FinishReason)
    assert 1 <= details.generated_tokens <= max_new_tokens
    if details.finish_reason is FinishReason.Length:
        assert details.generated_tokens == max_new_tokens
    elif details.finish_reason is FinishReason.EndOfSequenceToken:
        assert details.tokens[-1].id in eos_ids


def test_client_generate(server):
    client = Client(server.url, timeout=TIMEOUT)
    response = client.generate(PROMPT, max_new_tokens=5, decoder_input_details=True, top_n_tokens=2)
    assert isinstance(response, Response) and isinstance(response.generated_text, str)
    details = response.details
    assert_finished_properly(details, 5, server.state.loaded.eos_token_ids)
    assert len(details.tokens) == details.generated_tokens
    assert all(isinstance(t.id, int) and isinstance(t.text, str) and isinstance(t.special, bool) for t in details.tokens)
    assert all(t.logprob is not None and t.logprob <= 0 for t in details.tokens)
    # decoder_input_details: one prefill entry per prompt token; the first has no logprob (nothing precedes it).
    prompt_ids = [t["id"] for t in httpx.post(f"{server.url}/tokenize", json={"inputs": PROMPT}, timeout=TIMEOUT).json()]
    assert [t.id for t in details.prefill] == prompt_ids
    assert details.prefill[0].logprob is None and all(t.logprob is None or t.logprob <= 0 for t in details.prefill)
    assert details.top_tokens is not None and [len(step) for step in details.top_tokens] == [2] * details.generated_tokens
    assert details.best_of_sequences is None and details.seed is None  # greedy: no seed to report


def test_client_generate_sampling_seed_and_best_of(server):
    client = Client(server.url, timeout=TIMEOUT)
    seeded = client.generate(PROMPT, max_new_tokens=4, do_sample=True, seed=42)
    assert seeded.details.seed == 42
    assert client.generate(PROMPT, max_new_tokens=4, do_sample=True, seed=42).generated_text == seeded.generated_text
    best = client.generate(PROMPT, max_new_tokens=3, do_sample=True, best_of=2)
    assert best.details.best_of_sequences is not None and len(best.details.best_of_sequences) == 1
    for sequence in (best.details, *best.details.best_of_sequences):
        assert_finished_properly(sequence, 3, server.state.loaded.eos_token_ids)
        assert sequence.seed is not None and len(sequence.tokens) == sequence.generated_tokens


def test_client_generate_with_a_stop_sequence_or_eos_says_why_it_stopped(server):
    # Whatever the model writes, the reason is one the client parses, and the count matches the tokens.
    response = Client(server.url, timeout=TIMEOUT).generate(PROMPT, max_new_tokens=8, stop_sequences=[" "])
    assert response.details.finish_reason in (FinishReason.StopSequence, FinishReason.Length, FinishReason.EndOfSequenceToken)
    assert len(response.details.tokens) == response.details.generated_tokens <= 8
    # The text is what the tokens say, up to the end (TGI keeps a matched stop sequence; cutting it is stricter).
    assert "".join(t.text for t in response.details.tokens).startswith(response.generated_text)


def test_async_client_generate(server):
    async def run():
        client = AsyncClient(server.url, timeout=TIMEOUT)
        return await asyncio.gather(client.generate(PROMPT, max_new_tokens=4), client.generate("Once upon a time", max_new_tokens=3))

    first, second = asyncio.run(run())
    for response, limit in ((first, 4), (second, 3)):
        assert isinstance(response, Response) and isinstance(response.generated_text, str)
        assert_finished_properly(response.details, limit, server.state.loaded.eos_token_ids)
        assert len(response.details.tokens) == response.details.generated_tokens
        assert response.details.prefill == []  # decoder_input_details left off


def test_client_generate_stream(server):
    client = Client(server.url, timeout=TIMEOUT)
    events = list(client.generate_stream(PROMPT, max_new_tokens=4))
    assert events and all(isinstance(e, StreamResponse) for e in events)
    *tokens, last = events
    assert all(e.details is None and e.generated_text is None for e in tokens)
    assert last.details is not None and isinstance(last.generated_text, str)
    assert_finished_properly(last.details, 4, server.state.loaded.eos_token_ids)
    assert last.details.generated_tokens == len(events)
    assert "".join(e.token.text for e in events if not e.token.special) == last.generated_text
    # Greedy: the stream and the whole answer are the same generation.
    whole = client.generate(PROMPT, max_new_tokens=4)
    assert whole.generated_text == last.generated_text and whole.details.generated_tokens == len(events)


def test_validation_errors_become_the_clients_validation_error(server):
    client = Client(server.url, timeout=TIMEOUT)
    too_long = server.state.config.max_total_tokens + 1
    with pytest.raises(ValidationError, match="max_new_tokens"):
        client.generate(PROMPT, max_new_tokens=too_long)
    with pytest.raises(ValidationError, match="max_new_tokens"):
        list(client.generate_stream(PROMPT, max_new_tokens=too_long))

    async def run():
        await AsyncClient(server.url, timeout=TIMEOUT).generate(PROMPT, max_new_tokens=too_long)

    with pytest.raises(ValidationError, match="max_new_tokens"):
        asyncio.run(run())
