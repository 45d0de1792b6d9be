"""Fault injection: a runner around the real one whose steps raise or give NaN logits on demand.

Whatever fails, every submitted sequence gets exactly one final event, the bystanders of a failed row
finish normally, and the engine's tables (tracked, queue, batch) return to zero.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Sequence

import pytest
import torch

from tgi_course.engine import Engine, ErrorEvent, FinishEvent, GenerationRequest, SamplingParams, TokenEvent, encode, render_chat
from tgi_course.engine.engine import UNHEALTHY_AFTER_FAILED_STEPS
from tgi_course.engine import BatchLimits
from tgi_course.engine.runners import ModelRunner


class FaultyRunner(ModelRunner):
    """The run's real runner (llama.cpp or transformers), plus switches that break the next steps."""

    def __init__(self, inner: ModelRunner) -> None:
        self.inner = inner
        self.cost = inner.cost
        self.max_rows = inner.max_rows
        self.fail_decodes = 0  # the next N decode steps raise
        self.fail_prefills = 0
        self.nan_for: set[int] = set()  # sequence ids whose logits become NaN
        self.decode_delay = 0.0

    @property
    def seq_ids(self) -> list[int]:
        return self.inner.seq_ids

    def prefill(self, seq_ids: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        if self.fail_prefills:
            self.fail_prefills -= 1
            raise RuntimeError("injected prefill failure")
        return self.inner.prefill(seq_ids, prompts)

    def decode(self, next_tokens: dict[int, int]) -> torch.Tensor:
        if self.decode_delay:
            time.sleep(self.decode_delay)
        if self.fail_decodes:
            self.fail_decodes -= 1
            raise RuntimeError("injected decode failure")
        logits = self.inner.decode(next_tokens).clone()  # inference tensors are read-only outside inference mode
        for row, seq_id in enumerate(self.inner.seq_ids):
            if seq_id in self.nan_for:
                logits[row] = float("nan")
        return logits

    def drop(self, seq_ids: Collection[int]) -> None:
        self.inner.drop(seq_ids)

    def reset(self) -> None:
        self.inner.reset()

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def faulty(loaded_model):
    tokenizer = loaded_model.tokenizer
    runner = FaultyRunner(loaded_model.create_runner(BatchLimits()))
    engine = Engine(None, tokenizer, loaded_model.eos_token_ids, runner=runner).start()
    yield engine, runner
    engine.stop()
    runner.close()


def prompt(loaded_model, text: str = "Name three colors.") -> list[int]:
    tok = loaded_model.tokenizer
    return encode(tok, render_chat(tok, [{"role": "user", "content": text}]))


PARAMS = SamplingParams(temperature=0, max_new_tokens=12, ignore_eos=True)


class Collector:
    """A sink that records events and checks there is exactly one final event, last."""

    def __init__(self) -> None:
        self.events: list = []
        self.done = threading.Event()

    def __call__(self, event) -> None:
        assert not self.done.is_set(), f"event after the final one: {event}"
        self.events.append(event)
        if isinstance(event, (FinishEvent, ErrorEvent)):
            self.done.set()

    @property
    def final(self):
        assert self.done.wait(60), "no final event"
        return self.events[-1]


def start_long(engine: Engine, loaded_model, sink: Collector, max_new_tokens: int, tokens_seen: int = 1):
    """Submit a long greedy sequence and wait until it has produced ``tokens_seen`` tokens."""
    handle = engine.submit(GenerationRequest(prompt(loaded_model), SamplingParams(temperature=0, max_new_tokens=max_new_tokens, ignore_eos=True)), sink)
    deadline = time.monotonic() + 60
    while sum(isinstance(e, TokenEvent) for e in sink.events) < tokens_seen:
        assert time.monotonic() < deadline, f"no {tokens_seen} tokens in 60 s: {sink.events[-1:]}"
        time.sleep(0.01)
    return handle


def settle(engine: Engine) -> None:
    deadline = time.monotonic() + 10
    while (engine.tracked or engine.stats.batch_size or engine.stats.queue_size) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (engine.tracked, engine.stats.batch_size, engine.stats.queue_size) == (0, 0, 0)


def test_nan_logits_end_that_row_only(faulty, loaded_model):
    engine, runner = faulty
    sinks = [Collector() for _ in range(3)]
    handles = [engine.submit(GenerationRequest(prompt(loaded_model), PARAMS), s) for s in sinks]
    victim = handles[1]._seq.seq_id
    runner.nan_for.add(victim)
    finals = [s.final for s in sinks]
    assert isinstance(finals[1], ErrorEvent) and finals[1].kind == "generation" and "non-finite" in finals[1].message
    for i in (0, 2):
        assert isinstance(finals[i], FinishEvent) and finals[i].generated_tokens == 12, finals[i]
    assert engine.stats.failed_rows == 1 and engine.healthy
    settle(engine)


def test_a_raising_logits_processor_ends_its_row_only(faulty, loaded_model):
    engine, _ = faulty

    def broken(generated, row):
        if len(generated) >= 3:
            raise ValueError("processor bug")
        return row

    bad, good = Collector(), Collector()
    engine.submit(GenerationRequest(prompt(loaded_model), SamplingParams(temperature=0, max_new_tokens=12, logits_processors=(broken,))), bad)
    engine.submit(GenerationRequest(prompt(loaded_model), PARAMS), good)
    assert isinstance(bad.final, ErrorEvent) and "processor bug" in bad.final.message
    assert sum(isinstance(e, TokenEvent) for e in bad.events) == 3
    assert isinstance(good.final, FinishEvent) and good.final.generated_tokens == 12
    settle(engine)


def test_a_processor_that_masks_every_token_is_an_error_not_a_token(faulty, loaded_model):
    engine, _ = faulty
    sink = Collector()
    everything_masked = lambda generated, row: row.fill_(float("-inf"))  # noqa: E731
    engine.submit(GenerationRequest(prompt(loaded_model), SamplingParams(temperature=0.7, max_new_tokens=4, logits_processors=(everything_masked,))), sink)
    assert isinstance(sink.final, ErrorEvent) and "no token is allowed" in sink.final.message
    settle(engine)


def test_a_failed_decode_step_fails_its_rows_and_the_engine_serves_the_next_request(faulty, loaded_model):
    engine, runner = faulty
    runner.decode_delay = 0.05
    first = [Collector() for _ in range(2)]
    for s in first:
        start_long(engine, loaded_model, s, 40)
    runner.fail_decodes = 1
    for s in first:
        assert isinstance(s.final, ErrorEvent) and "injected decode failure" in s.final.message
    runner.decode_delay = 0.0
    after = Collector()
    engine.submit(GenerationRequest(prompt(loaded_model), PARAMS), after)
    assert isinstance(after.final, FinishEvent) and after.final.generated_tokens == 12
    settle(engine)


def test_a_failed_prefill_fails_only_the_requests_it_admitted(faulty, loaded_model):
    engine, runner = faulty
    runner.decode_delay = 0.05
    running = Collector()
    start_long(engine, loaded_model, running, 30)
    runner.fail_prefills = 1
    late = Collector()
    engine.submit(GenerationRequest(prompt(loaded_model, "What is 2+2?"), PARAMS), late)
    assert isinstance(late.final, ErrorEvent) and "injected prefill failure" in late.final.message
    assert isinstance(running.final, FinishEvent) and running.final.generated_tokens == 30
    settle(engine)


def test_health_turns_after_repeated_failed_steps_and_back_after_a_good_one(faulty, loaded_model):
    engine, runner = faulty
    runner.fail_prefills = UNHEALTHY_AFTER_FAILED_STEPS
    for _ in range(UNHEALTHY_AFTER_FAILED_STEPS):
        sink = Collector()
        engine.submit(GenerationRequest(prompt(loaded_model), PARAMS), sink)
        assert isinstance(sink.final, ErrorEvent)
    assert not engine.healthy
    sink = Collector()
    engine.submit(GenerationRequest(prompt(loaded_model), PARAMS), sink)
    assert isinstance(sink.final, FinishEvent)
    assert engine.healthy
    settle(engine)


def test_cancel_in_every_phase_gives_one_final_event_and_frees_everything(faulty, loaded_model):
    engine, runner = faulty
    runner.decode_delay = 0.05
    from tgi_course.engine import BatchLimits

    engine._scheduler.limits = BatchLimits(max_batch_prefill_tokens=4096, max_batch_total_tokens=16384, max_batch_size=1)
    try:
        decoding, queued = Collector(), Collector()
        h_decoding = start_long(engine, loaded_model, decoding, 200)
        h_queued = engine.submit(GenerationRequest(prompt(loaded_model), PARAMS), queued)  # batch of 1 is full: it waits
        assert engine.stats.queue_size == 1
        h_queued.cancel()
        assert isinstance(queued.final, ErrorEvent) and queued.final.kind == "cancelled"
        assert engine.stats.queue_size == 0  # left the queue at once, not at the next step
        h_decoding.cancel()
        assert isinstance(decoding.final, ErrorEvent) and decoding.final.kind == "cancelled"
        h_decoding.cancel()  # twice is harmless
        settle(engine)
    finally:
        engine._scheduler.limits = BatchLimits()


def test_abort_all_and_stop_end_every_sequence_once(faulty, loaded_model):
    engine, runner = faulty
    runner.decode_delay = 0.02
    sinks = [Collector() for _ in range(3)]
    for s in sinks:
        start_long(engine, loaded_model, s, 500)
    engine.abort_all("going away", "shutdown")
    for s in sinks:
        assert isinstance(s.final, ErrorEvent) and s.final.kind == "shutdown"
    settle(engine)
    engine.close()
    with pytest.raises(Exception, match="shutting down"):
        engine.submit(GenerationRequest(prompt(loaded_model), PARAMS), Collector())
