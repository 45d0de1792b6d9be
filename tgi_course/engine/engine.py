"""The engine: one loop thread runs every request in shared steps, and bridges hand out its events.

Each iteration: drop cancelled rows, admit waiting sequences the scheduler lets in (one prefill), then
one decode step for every running row, then retire rows that finished. Requests join and leave between
steps, so a short request never waits for a long one to end.

Every sequence is tracked in one table from :meth:`Engine.submit` to its final event, and every way out
(finished, failed row, failed step, cancelled, aborted, stopped) goes through :meth:`Engine._finalize`,
so each sequence gets exactly one :class:`FinishEvent` or :class:`ErrorEvent` and frees its place at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .memory import HeapTrimmer
from .output import SequenceOutput
from .params import ErrorEvent, ErrorKind, Event, FinishEvent, FinishReason, GenerationRequest
from .runners import ModelRunner, TransformersRunner
from .sampling import RowFailure, RowState, choose_next_tokens
from .scheduler import BatchLimits, Scheduler
from .steps import StepLog

log = logging.getLogger(__name__)

Sink = Callable[[Event], None]

# Health turns 503 after this many steps in a row have failed as a whole (a broken model or device),
# and back to 200 after the next good step.
UNHEALTHY_AFTER_FAILED_STEPS = 3
# While idle the loop wakes this often to tell the runner how long it has been idle (ModelRunner.idle).
IDLE_TICK_SECONDS = 5.0


class EngineClosed(RuntimeError):
    """The engine takes no new work: it is draining or stopped."""


@dataclass
class EngineStats:
    """Read by metrics and tests; written only by the loop thread (and ``queue_size`` under the lock)."""

    queue_size: int = 0
    batch_size: int = 0
    steps: int = 0
    prefills: int = 0
    generated_tokens: int = 0
    failed_steps: int = 0
    failed_rows: int = 0
    consecutive_failed_steps: int = 0
    # (decode step number, request ids in that step) for the last decode steps: proof that requests share
    # steps. Engine.step_log has every step, prefills too, with times.
    recent_steps: deque = field(default_factory=lambda: deque(maxlen=4096))


class _Sequence:
    """One tracked sequence: its request, where its events go, sampling state and text assembly."""

    def __init__(self, seq_id: int, request: GenerationRequest, sink: Sink, output: SequenceOutput) -> None:
        params = request.params
        self.seq_id = seq_id
        self.request = request
        self.sink = sink
        self.output = output
        self.seed = params.seed if params.seed is not None else random.randrange(2**63)
        generator = None
        if not params.greedy:
            generator = torch.Generator(device="cpu")
            generator.manual_seed(self.seed)
        self.state = RowState(params=params, prompt_ids=request.prompt_ids, generator=generator)
        self.cancelled = False
        self.done = False
        self.queued_at = time.perf_counter()
        self.started_at: float | None = None

    def finish_event(self, reason: FinishReason) -> FinishEvent:
        now = time.perf_counter()
        started = self.started_at or now
        return FinishEvent(
            reason=reason,
            text=self.output.text,
            prompt_tokens=len(self.request.prompt_ids),
            generated_tokens=len(self.state.generated),
            seed=None if self.state.params.greedy else self.seed,
            queue_seconds=started - self.queued_at,
            inference_seconds=now - started,
            stop=self.output.matched_stop if reason == "stop_sequence" else None,
        )


class Handle:
    """Returned by :meth:`Engine.submit`; lets the caller give up on a request."""

    def __init__(self, engine: Engine, seq: _Sequence) -> None:
        self._engine, self._seq = engine, seq

    def cancel(self) -> None:
        self._engine._cancel(self._seq)


class Engine:
    """Owns the runner and the loop thread. Thread-safe ``submit``; async ``stream``; sync ``generate``.

    ``Engine(model, tokenizer, eos_token_ids)`` runs a transformers model; pass ``runner=`` for another
    :class:`~tgi_course.engine.runners.ModelRunner`.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        eos_token_ids: frozenset[int],
        limits: BatchLimits | None = None,
        *,
        runner: ModelRunner | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.eos = eos_token_ids
        self._special = frozenset(tokenizer.all_special_ids)
        self.limits = limits or BatchLimits()
        if runner is None:
            runner = TransformersRunner.for_model(model, tokenizer, eos_token_ids)
        self.runner = runner
        if runner.max_rows is not None and runner.max_rows < self.limits.max_batch_size:
            self.limits = dataclasses.replace(self.limits, max_batch_size=runner.max_rows)
        self._scheduler = Scheduler(self.limits, runner.cost)
        self._tracked: dict[int, _Sequence] = {}
        self._ids = itertools.count()
        self._wake = threading.Condition()
        self._stopping = False
        self._accepting = True
        self._abort: tuple[str, ErrorKind] | None = None
        self._thread: threading.Thread | None = None
        self._heap = HeapTrimmer()
        self.stats = EngineStats()
        self.step_log = StepLog()  # every prefill and decode step, with its requests and times (GET /engine/steps)
        self.step_observers: list[Callable[[int, float], None]] = []  # (batch size, seconds) per decode step

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Engine:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="tgi-course-engine", daemon=True)
            self._thread.start()
        return self

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def healthy(self) -> bool:
        """Running, and the last steps did not all fail."""
        return self.is_running and self.stats.consecutive_failed_steps < UNHEALTHY_AFTER_FAILED_STEPS

    @property
    def accepting(self) -> bool:
        return self._accepting and not self._stopping

    @property
    def tracked(self) -> int:
        """Sequences submitted and not yet given their final event."""
        with self._wake:
            return len(self._tracked)

    def close(self) -> None:
        """Refuse new work from now on (:class:`EngineClosed`); what is tracked runs on."""
        with self._wake:
            self._accepting = False

    def abort_all(self, message: str, kind: ErrorKind = "shutdown") -> None:
        """End every tracked sequence with an :class:`ErrorEvent` at the next step boundary."""
        with self._wake:
            self._abort = (message, kind)
            self._wake.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is tracked or ``timeout`` seconds pass; True if idle."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._tracked:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(min(left, 0.1))
            return True

    def stop(self) -> None:
        """Refuse new work, end whatever is tracked ("server is shutting down") and join the loop."""
        with self._wake:
            self._accepting = False
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self._finalize_all("server is shutting down", "shutdown")  # if the loop never ran or is stuck

    # -- submitting ------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest, sink: Sink) -> Handle:
        """Queue a request; ``sink`` is called with each event, in order, the last one final."""
        if not request.prompt_ids:
            raise ValueError("prompt_ids must not be empty")
        output = SequenceOutput(request.params, self.tokenizer, self.eos, self._special)
        with self._wake:
            if not self.accepting:
                raise EngineClosed("the server is shutting down and takes no new requests")
            seq = _Sequence(next(self._ids), request, sink, output)
            self._tracked[seq.seq_id] = seq
            self._scheduler.add(seq.seq_id, len(request.prompt_ids), request.params.max_new_tokens)
            self.stats.queue_size = self._scheduler.waiting
            self._wake.notify_all()
        return Handle(self, seq)

    def _cancel(self, seq: _Sequence) -> None:
        with self._wake:
            if seq.done:
                return
            seq.cancelled = True
            # A queued sequence holds nothing of the runner's: it leaves now, not at the next step.
            if self._scheduler.remove(seq.seq_id) == "waiting":
                self.stats.queue_size = self._scheduler.waiting
                self._finalize_locked(seq, ErrorEvent("cancelled", "cancelled"))
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
        events = EventStream(self, requests)
        try:
            async for item in events:
                yield item
        finally:
            await events.aclose()

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

    # -- final events ----------------------------------------------------------------------------
    def _finalize_locked(self, seq: _Sequence, event: FinishEvent | ErrorEvent) -> None:
        """The one way out of the tracking table (called with the lock held)."""
        if seq.done:
            return
        seq.done = True
        self._tracked.pop(seq.seq_id, None)
        self._scheduler.remove(seq.seq_id)
        self._wake.notify_all()
        try:
            seq.sink(event)
        except Exception:  # a caller's sink must not break the loop
            log.exception("event sink failed")

    def _finalize(self, seqs: list[_Sequence], event_for: Callable[[_Sequence], FinishEvent | ErrorEvent]) -> None:
        if not seqs:
            return
        self.runner.drop([s.seq_id for s in seqs])
        with self._wake:
            for seq in seqs:
                self._finalize_locked(seq, event_for(seq))
            self.stats.queue_size = self._scheduler.waiting
        self.stats.batch_size = len(self.runner.seq_ids)

    def _finalize_all(self, message: str, kind: ErrorKind) -> None:
        with self._wake:
            seqs = list(self._tracked.values())
        try:
            self.runner.reset()
        except Exception:
            log.exception("runner reset failed")
        self._finalize(seqs, lambda _: ErrorEvent(message, kind))

    # -- the loop --------------------------------------------------------------------------------
    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            # Going idle gives the last batch's memory back at once; under load, every few seconds. Outside the
            # lock: a trim takes milliseconds that submit() should not wait for.
            self._heap.maybe(now=not self._tracked)
            with self._wake:
                idle_since = time.monotonic()
                while not self._stopping and not self._tracked and self._abort is None:
                    if not self._wake.wait(IDLE_TICK_SECONDS):
                        self._tell_idle(time.monotonic() - idle_since)
                if self._stopping:
                    break
                abort, self._abort = self._abort, None
                cancelled = [s for s in self._tracked.values() if s.cancelled]
                admitted = [self._tracked[i] for i in self._scheduler.admit()]
                self.stats.queue_size = self._scheduler.waiting
            try:
                if abort is not None:
                    self._finalize_all(*abort)
                    continue
                self._finalize(cancelled, lambda _: ErrorEvent("cancelled", "cancelled"))
                admitted = [s for s in admitted if not s.done]
                if admitted:
                    self._prefill(admitted)
                if self.runner.seq_ids:
                    self._decode()
            except Exception as exc:  # a bug outside the runner's steps: end everything, keep serving
                log.exception("engine loop failed")
                self._finalize_all(f"generation failed: {exc.__class__.__name__}: {exc}", "generation")
        self._finalize_all("server is shutting down", "shutdown")

    def _tell_idle(self, seconds: float) -> None:
        try:
            self.runner.idle(seconds)
        except Exception:
            log.exception("runner idle hook failed")

    def _step_failed(self, seqs: list[_Sequence], exc: Exception) -> None:
        """A prefill or decode that raised fails only the sequences that were in it."""
        log.exception("generation step failed for %d sequence(s)", len(seqs), exc_info=exc)
        self.stats.failed_steps += 1
        self.stats.consecutive_failed_steps += 1
        message = f"generation failed: {exc.__class__.__name__}: {exc}"
        self._finalize(seqs, lambda _: ErrorEvent(message, "generation"))

    def _step_succeeded(self) -> None:
        self.stats.consecutive_failed_steps = 0

    def _prefill(self, admitted: list[_Sequence]) -> None:
        now = time.perf_counter()
        for seq in admitted:
            seq.started_at = now
        started = time.monotonic()
        try:
            logits = self.runner.prefill([s.seq_id for s in admitted], [s.request.prompt_ids for s in admitted])
        except Exception as exc:
            self._step_failed(admitted, exc)
            return
        self._step_succeeded()
        self.stats.prefills += 1
        # Recorded before any token is sent, so a client that has its tokens finds their steps in the record.
        self.step_log.append("prefill", started, time.monotonic(), tuple(s.request.request_id for s in admitted))
        self._accept(admitted, logits)

    def _decode(self) -> None:
        started = time.perf_counter()
        with self._wake:
            rows = [self._tracked[i] for i in self.runner.seq_ids if i in self._tracked]
        began = time.monotonic()
        try:
            logits = self.runner.decode({s.seq_id: s.state.generated[-1] for s in rows})
        except Exception as exc:
            self.runner.reset()  # the cache of a failed step cannot be trusted
            self._step_failed(rows, exc)
            return
        self._step_succeeded()
        self.stats.steps += 1
        request_ids = tuple(s.request.request_id for s in rows)
        self.stats.recent_steps.append((self.stats.steps, request_ids))
        self.step_log.append("decode", began, time.monotonic(), request_ids)  # before the tokens go out, as in _prefill
        self._accept(rows, logits)
        elapsed = time.perf_counter() - started
        for observer in self.step_observers:
            observer(len(rows), elapsed)

    def _accept(self, rows: list[_Sequence], logits: torch.Tensor) -> None:
        """Sample one token per row, send its event, and end the rows that finished or failed."""
        outcomes = choose_next_tokens(logits, [s.state for s in rows])
        finished: list[tuple[_Sequence, FinishEvent | ErrorEvent]] = []
        for seq, outcome in zip(rows, outcomes):
            if isinstance(outcome, RowFailure):
                self.stats.failed_rows += 1
                log.warning("sequence %s failed: %s", seq.request.request_id, outcome.message)
                finished.append((seq, ErrorEvent(f"generation failed: {outcome.message}", "generation")))
                continue
            seq.state.generated.append(outcome.token_id)
            event, reason = seq.output.accept(outcome.token_id, outcome.logprob, outcome.top)
            self.stats.generated_tokens += 1
            try:
                seq.sink(event)
            except Exception:
                log.exception("event sink failed")
            if reason is not None:
                finished.append((seq, seq.finish_event(reason)))
        if finished:
            final = dict((id(seq), event) for seq, event in finished)
            self._finalize([seq for seq, _ in finished], lambda seq: final[id(seq)])
        self.stats.batch_size = len(self.runner.seq_ids)


class EventStream:
    """Events of requests submitted on construction, as an async iterator of ``(index, event)``.

    Submitting happens at once (not at the first ``__anext__``), so a caller learns of
    :class:`EngineClosed` before it promises anything to its own client. :meth:`aclose` cancels every
    request that has not had its final event; it is safe to call more than once.
    """

    def __init__(self, engine: Engine, requests: list[GenerationRequest]) -> None:
        loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        self._handles: list[Handle] = []

        def sink_for(index: int) -> Sink:
            def sink(event: Event) -> None:
                try:
                    loop.call_soon_threadsafe(self._queue.put_nowait, (index, event))
                except RuntimeError:  # the event loop is gone: nobody is listening any more
                    pass

            return sink

        try:
            for i, request in enumerate(requests):
                self._handles.append(engine.submit(request, sink_for(i)))
        except BaseException:
            for handle in self._handles:
                handle.cancel()
            raise
        self._open = set(range(len(requests)))
        self.abandoned = False  # closed while some request had no final event yet (its client left)

    def __aiter__(self) -> EventStream:
        return self

    def __len__(self) -> int:
        """How many requests this stream carries."""
        return len(self._handles)

    async def __anext__(self) -> tuple[int, Event]:
        if not self._open:
            raise StopAsyncIteration
        index, event = await self._queue.get()
        if isinstance(event, (FinishEvent, ErrorEvent)):
            self._open.discard(index)
        return index, event

    async def aclose(self) -> None:
        if self._open:
            self.abandoned = True
        for index in sorted(self._open):
            self._handles[index].cancel()
        self._open.clear()
