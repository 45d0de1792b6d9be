"""Continuous batching: one loop thread owns the model and serves every request in shared steps.

Each iteration: drop cancelled rows, admit waiting requests that fit the token budgets (one batched
prefill), then one decode step for every running row, then retire rows that finished. Requests join
and leave between steps, so a short request never waits for a long one to end.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .batch import PaddedBatch
from .params import ErrorEvent, Event, FinishEvent, GenerationRequest, TokenEvent, TopLogprob
from .sampling import RowState, choose_next_tokens
from .text import IncrementalDecoder, StopMatcher

log = logging.getLogger(__name__)

Sink = Callable[[Event], None]


@dataclass(frozen=True)
class BatchLimits:
    """Token budgets of the running batch (TGI's MAX_BATCH_* settings)."""

    max_batch_prefill_tokens: int = 4096
    max_batch_total_tokens: int = 16384
    max_batch_size: int = 64


@dataclass
class EngineStats:
    """Read by metrics and tests; written only by the loop thread."""

    queue_size: int = 0
    batch_size: int = 0
    steps: int = 0
    prefills: int = 0
    generated_tokens: int = 0
    # (step number, request ids in that step) for the last steps: proof that requests share steps.
    recent_steps: deque = field(default_factory=lambda: deque(maxlen=4096))


class _Running:
    """One sequence inside the loop: sampling state, text assembly and where its events go."""

    def __init__(
        self, request: GenerationRequest, sink: Sink, tokenizer: Any, eos: frozenset[int], special: frozenset[int]
    ) -> None:
        params = request.params
        self.request = request
        self.sink = sink
        self.seed = params.seed if params.seed is not None else random.randrange(2**63)
        generator = None
        if not params.greedy:
            generator = torch.Generator(device="cpu")
            generator.manual_seed(self.seed)
        self.state = RowState(params=params, prompt_ids=request.prompt_ids, generator=generator)
        self.decoder = IncrementalDecoder(tokenizer)
        self.stops = StopMatcher(params.stop)
        self.text_parts: list[str] = []
        self.tokenizer = tokenizer
        self.eos = eos
        self.special = special
        self.cancelled = False
        self.finished = False
        self.queued_at = time.perf_counter()
        self.started_at: float | None = None

    def accept(self, token_id: int, logprob: float | None, top: tuple[tuple[int, float], ...]) -> None:
        """Record one sampled token, emit its event and, if it ends the sequence, the finish event."""
        params = self.state.params
        self.state.generated.append(token_id)
        index = len(self.state.generated) - 1
        is_eos = token_id in self.eos and not params.ignore_eos
        special = token_id in self.special
        delta = "" if is_eos else self.stops.feed(self.decoder.push(token_id))
        reason = None
        if is_eos:
            reason = "eos_token"
        elif self.stops.matched is not None:
            reason = "stop_sequence"
        elif len(self.state.generated) >= params.max_new_tokens:
            reason = "length"
        if reason is not None and reason != "stop_sequence":
            delta += self.stops.flush()
        self.text_parts.append(delta)
        token_text = self.tokenizer.decode([token_id], skip_special_tokens=False)
        self.sink(
            TokenEvent(
                index=index,
                token_id=token_id,
                token_text=token_text,
                special=special,
                text=delta,
                logprob=logprob,
                top_logprobs=tuple(TopLogprob(i, self.tokenizer.decode([i]), lp) for i, lp in top),
            )
        )
        if reason is not None:
            self.finish(reason)  # type: ignore[arg-type]

    def finish(self, reason: str) -> None:
        self.finished = True
        now = time.perf_counter()
        started = self.started_at or now
        self.sink(
            FinishEvent(
                reason=reason,  # type: ignore[arg-type]
                text="".join(self.text_parts),
                prompt_tokens=len(self.request.prompt_ids),
                generated_tokens=len(self.state.generated),
                seed=None if self.state.params.greedy else self.seed,
                queue_seconds=started - self.queued_at,
                inference_seconds=now - started,
            )
        )

    @property
    def reserved_tokens(self) -> int:
        return len(self.request.prompt_ids) + self.state.params.max_new_tokens


class Handle:
    """Returned by :meth:`Engine.submit`; lets the caller give up on a request."""

    def __init__(self, engine: Engine, running: _Running) -> None:
        self._engine, self._running = engine, running

    def cancel(self) -> None:
        self._engine._cancel(self._running)


class Engine:
    """Owns the model and the loop thread. Thread-safe ``submit``; async ``stream``; sync ``generate``."""

    def __init__(self, model: Any, tokenizer: Any, eos_token_ids: frozenset[int], limits: BatchLimits | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos = eos_token_ids
        self._special = frozenset(tokenizer.all_special_ids)
        self.limits = limits or BatchLimits()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_token_ids or {0})
        self._batch = PaddedBatch(model, pad)
        self._rows: list[_Running] = []
        self._waiting: deque[_Running] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.stats = EngineStats()
        self.step_observers: list[Callable[[int, float], None]] = []  # (batch size, seconds) per decode step
        self.healthy = True

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Engine:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="tgi-course-engine", daemon=True)
            self._thread.start()
        return self

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    # -- submitting ------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest, sink: Sink) -> Handle:
        """Queue a request; ``sink`` is called from the loop thread with each event, in order."""
        if not request.prompt_ids:
            raise ValueError("prompt_ids must not be empty")
        running = _Running(request, sink, self.tokenizer, self.eos, self._special)
        with self._wake:
            self._waiting.append(running)
            self.stats.queue_size = len(self._waiting)
            self._wake.notify_all()
        return Handle(self, running)

    def _cancel(self, running: _Running) -> None:
        with self._wake:
            running.cancelled = True
            self._wake.notify_all()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """Yield the request's events; closing the iterator early cancels the request at the next step."""
        events = self.stream_many([request])
        try:
            async for _, event in events:
                yield event
        finally:
            await events.aclose()

    async def stream_many(self, requests: list[GenerationRequest]) -> AsyncIterator[tuple[int, Event]]:
        """Run several requests together and yield ``(index, event)`` as events arrive, in order per index.

        Closing the iterator early (a client that went away) cancels whatever is still running.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()

        def sink_for(index: int) -> Sink:
            def sink(event: Event) -> None:
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, (index, event))
                except RuntimeError:  # the event loop is gone: nobody is listening any more
                    pass

            return sink

        handles = [self.submit(request, sink_for(i)) for i, request in enumerate(requests)]
        open_requests = set(range(len(requests)))
        try:
            while open_requests:
                index, event = await queue.get()
                if isinstance(event, (FinishEvent, ErrorEvent)):
                    open_requests.discard(index)
                yield index, event
        finally:
            for index in open_requests:
                handles[index].cancel()

    def iterate(self, request: GenerationRequest) -> Iterator[Event]:
        """Blocking iterator over a request's events, for scripts and notebooks without asyncio."""
        import queue as queue_module

        events: queue_module.Queue[Event] = queue_module.Queue()
        handle = self.submit(request, events.put)
        done = False
        try:
            while True:
                event = events.get()
                yield event
                if isinstance(event, (FinishEvent, ErrorEvent)):
                    done = True
                    return
        finally:
            if not done:
                handle.cancel()

    def generate(self, request: GenerationRequest) -> FinishEvent:
        """Run one request to the end and return its finish event (raises on an engine error)."""
        for event in self.iterate(request):
            if isinstance(event, ErrorEvent):
                raise RuntimeError(event.message)
            if isinstance(event, FinishEvent):
                return event
        raise RuntimeError("engine stopped before the request finished")

    # -- the loop --------------------------------------------------------------------------------
    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._wake:
                while not self._stopping and not self._rows and not self._waiting:
                    self._wake.wait()
                if self._stopping:
                    break
                admitted = self._admit()
            try:
                self._drop_cancelled()
                if admitted:
                    self._prefill(admitted)
                if self._rows:
                    self._decode()
            except Exception as exc:  # a failed step fails its requests, never the server
                log.exception("generation step failed")
                self._fail_all(f"generation failed: {exc.__class__.__name__}: {exc}")
        self._fail_all("server is shutting down")

    def _admit(self) -> list[_Running]:
        """Take waiting requests in arrival order while they fit (called with the lock held)."""
        limits = self.limits
        admitted: list[_Running] = []
        reserved = sum(r.reserved_tokens for r in self._rows)
        width = 0
        while self._waiting:
            candidate = self._waiting[0]
            if candidate.cancelled:
                self._waiting.popleft()
                continue
            new_width = max(width, len(candidate.request.prompt_ids))
            fits = (
                len(self._rows) + len(admitted) < limits.max_batch_size
                and reserved + candidate.reserved_tokens <= limits.max_batch_total_tokens
                and new_width * (len(admitted) + 1) <= limits.max_batch_prefill_tokens
            )
            # An idle engine always takes the head of the queue, so an oversized request cannot wait forever.
            if not fits and (admitted or self._rows):
                break
            self._waiting.popleft()
            admitted.append(candidate)
            reserved += candidate.reserved_tokens
            width = new_width
        self.stats.queue_size = len(self._waiting)
        return admitted

    def _drop_cancelled(self) -> None:
        if any(r.cancelled for r in self._rows):
            self._retire(lambda r: r.cancelled)

    def _retire(self, gone: Callable[[_Running], bool]) -> None:
        keep = [i for i, r in enumerate(self._rows) if not gone(r)]
        self._batch.keep(keep)
        self._rows = [self._rows[i] for i in keep]
        self.stats.batch_size = len(self._rows)

    def _prefill(self, admitted: list[_Running]) -> None:
        now = time.perf_counter()
        for r in admitted:
            r.started_at = now
        logits, fresh = self._batch.prefill([r.request.prompt_ids for r in admitted])
        self.stats.prefills += 1
        choices = choose_next_tokens(logits, [r.state for r in admitted])
        for r, choice in zip(admitted, choices):
            r.accept(choice.token_id, choice.logprob, choice.top)
        fresh.set_next_tokens([c.token_id for c in choices])
        alive = [i for i, r in enumerate(admitted) if not r.finished and not r.cancelled]
        fresh.keep(alive)
        self._batch.extend(fresh)
        self._rows.extend(admitted[i] for i in alive)
        self.stats.batch_size = len(self._rows)
        self.stats.generated_tokens += len(admitted)

    def _decode(self) -> None:
        started = time.perf_counter()
        logits = self._batch.step()
        choices = choose_next_tokens(logits, [r.state for r in self._rows])
        for r, choice in zip(self._rows, choices):
            r.accept(choice.token_id, choice.logprob, choice.top)
        self._batch.set_next_tokens([c.token_id for c in choices])
        self.stats.steps += 1
        self.stats.generated_tokens += len(self._rows)
        self.stats.recent_steps.append((self.stats.steps, tuple(r.request.request_id for r in self._rows)))
        elapsed = time.perf_counter() - started
        for observer in self.step_observers:
            observer(len(self._rows), elapsed)
        self._retire(lambda r: r.finished or r.cancelled)

    def _fail_all(self, message: str) -> None:
        with self._wake:
            victims = self._rows + list(self._waiting)
            self._waiting.clear()
        self._rows = []
        self._batch.keep([])
        self.stats.batch_size = self.stats.queue_size = 0
        for r in victims:
            if not r.finished:
                r.finished = True
                r.sink(ErrorEvent(message))
