"""The engine in-process, no HTTP: continuous batching, sampling settings, cancellation."""

from __future__ import annotations

import threading
import time

import pytest

from tgi_course.engine import BatchLimits, Engine, FinishEvent, GenerationRequest, SamplingParams, TokenEvent, encode, render_chat


@pytest.fixture(scope="module")
def engine(loaded_model):
    engine = loaded_model.engine(BatchLimits()).start()  # the run's backend (llama.cpp or transformers)
    yield engine
    engine.stop()


def chat_ids(loaded_model, text: str) -> list[int]:
    return encode(loaded_model.tokenizer, render_chat(loaded_model.tokenizer, [{"role": "user", "content": text}]))


QUESTIONS = ["What is the capital of France?", "Write one sentence about the sea.", "Name three colors.", "What is 2+2?"]


@pytest.fixture(scope="module")
def fp32_engine():
    """bf16 sums depend on batch shape, so exact equality is checked in fp32, where only padding could break it.
    The transformers runner: left padding and re-concatenated caches are what this guards."""
    from tgi_course.models import load, resolve

    loaded = load(resolve("default"), device="cpu", dtype="float32", backend="transformers")
    engine = loaded.engine().start()
    yield engine
    engine.stop()


def test_batched_rows_generate_exactly_what_they_generate_alone(fp32_engine, loaded_model, alone_and_together):
    greedy = SamplingParams(temperature=0, max_new_tokens=24)
    alone, together = alone_and_together(fp32_engine, [chat_ids(loaded_model, q) for q in QUESTIONS], greedy)
    # Left padding and joining/leaving the batch must not change a single greedy token.
    assert together == alone


def test_concurrent_requests_share_decode_steps(engine, loaded_model):
    params = SamplingParams(temperature=0, max_new_tokens=16, ignore_eos=True)
    first = GenerationRequest(chat_ids(loaded_model, QUESTIONS[0]), params)
    second = GenerationRequest(chat_ids(loaded_model, QUESTIONS[1]), params)
    results = {}
    threads = [threading.Thread(target=lambda r=r: results.setdefault(r.request_id, engine.generate(r))) for r in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shared = [ids for _, ids in engine.stats.recent_steps if first.request_id in ids and second.request_id in ids]
    assert len(shared) >= 8, "the two requests should have been decoded in the same forward steps"


def test_late_request_joins_a_running_batch_and_short_one_leaves_first(engine, loaded_model):
    long = GenerationRequest(chat_ids(loaded_model, QUESTIONS[1]), SamplingParams(temperature=0, max_new_tokens=40, ignore_eos=True))
    short = GenerationRequest(chat_ids(loaded_model, QUESTIONS[2]), SamplingParams(temperature=0, max_new_tokens=4, ignore_eos=True))
    done: dict[str, float] = {}
    t = threading.Thread(target=lambda: (engine.generate(long), done.setdefault("long", time.monotonic())))
    t.start()
    time.sleep(0.5)
    engine.generate(short)
    done["short"] = time.monotonic()
    t.join()
    assert done["short"] < done["long"]


def test_seed_gives_the_same_text_and_another_seed_differs(engine, loaded_model):
    prompt = chat_ids(loaded_model, "Tell me a short story about a cat.")

    def sample(seed: int) -> str:
        return engine.generate(GenerationRequest(prompt, SamplingParams(temperature=1.0, top_p=0.95, seed=seed, max_new_tokens=20))).text

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_stop_sequence_ends_generation_and_is_not_returned(engine, loaded_model):
    prompt = chat_ids(loaded_model, "What is the capital of France?")
    full = engine.generate(GenerationRequest(prompt, SamplingParams(temperature=0, max_new_tokens=20))).text
    assert "Paris" in full
    cut = engine.generate(GenerationRequest(prompt, SamplingParams(temperature=0, max_new_tokens=20, stop=("Paris",))))
    assert cut.reason == "stop_sequence"
    assert cut.text == full[: full.index("Paris")]


def test_logprobs_and_top_logprobs(engine, loaded_model):
    events = list(engine.iterate(GenerationRequest(chat_ids(loaded_model, "Hi"), SamplingParams(temperature=0, max_new_tokens=3, logprobs=True, top_logprobs=3))))
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    assert len(tokens) == 3
    for token in tokens:
        assert token.logprob is not None and token.logprob <= 0
        assert len(token.top_logprobs) == 3
        assert token.top_logprobs[0].token_id == token.token_id  # greedy picks the most likely token
    assert isinstance(events[-1], FinishEvent) and events[-1].reason == "length"


def test_penalties_change_a_repetitive_greedy_output(engine, loaded_model):
    prompt = chat_ids(loaded_model, "Repeat the word 'cat' twenty times.")
    plain = engine.generate(GenerationRequest(prompt, SamplingParams(temperature=0, max_new_tokens=24))).text
    penalised = engine.generate(GenerationRequest(prompt, SamplingParams(temperature=0, max_new_tokens=24, frequency_penalty=2.0, presence_penalty=2.0))).text
    assert plain != penalised
    assert penalised.lower().count("cat") < plain.lower().count("cat")


def test_logits_processor_hook_runs_per_request(engine, loaded_model):
    banned = loaded_model.tokenizer(" Paris", add_special_tokens=False)["input_ids"][0]
    seen = []

    def ban(generated, row):
        seen.append(len(generated))
        row[banned] = float("-inf")
        return row

    prompt = chat_ids(loaded_model, "What is the capital of France?")
    result = engine.generate(GenerationRequest(prompt, SamplingParams(temperature=0, max_new_tokens=12, logits_processors=(ban,))))
    assert "Paris" not in result.text
    assert seen[:3] == [0, 1, 2]


def test_cancelled_request_leaves_the_batch_at_the_next_step(engine, loaded_model):
    events = []
    handle = engine.submit(
        GenerationRequest(chat_ids(loaded_model, "Count to one thousand."), SamplingParams(temperature=0, max_new_tokens=400, ignore_eos=True)),
        events.append,
    )
    deadline = time.monotonic() + 30
    while len(events) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    handle.cancel()
    time.sleep(0.5)
    assert engine.stats.batch_size == 0
    count = len(events)
    time.sleep(0.3)
    assert len(events) == count  # nothing more arrives for a cancelled request
    assert count < 100
