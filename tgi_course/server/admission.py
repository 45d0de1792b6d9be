"""One inference request's way through the server, from the route's first line to the response's last byte.

:func:`inference` wraps every inference route: it counts the request, runs validation off the event loop,
admits it against MAX_CONCURRENT_REQUESTS (429 above, as TGI), opens its engine streams, cancels them when
the client goes away, and gives the admission slot back however the request ends — a finished response,
an error, a vanished client, a stream whose reader stopped reading. Routes never pair enter/leave by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from fastapi import Request
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from ..engine import EngineClosed, GenerationRequest
from ..engine.engine import EventStream
from .errors import ClientGone, error_type_of, overloaded_error, unavailable_error, validation_error

T = TypeVar("T")
log = logging.getLogger(__name__)

# A client that stops reading a stream (a frozen tab, a paused debugger) blocks the send once the socket's
# buffers are full; after this many seconds the stream is ended and its slot given back.
STREAM_SEND_TIMEOUT_SECONDS = 20.0
# Comments sent on an idle stream, so proxies keep it open while a long prompt is queued (TGI: none; sse-starlette: 15).
STREAM_PING_SECONDS = 15


class Admission:
    """Requests and sequences in flight. A request holds one slot per sequence it generates (``n``, prompt
    lists, ``best_of``), and the sum is capped by MAX_CONCURRENT_REQUESTS."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0  # requests
        self.sequences = 0
        self._lock = threading.Lock()

    def acquire(self, sequences: int = 1) -> Ticket:
        if sequences > self.limit:
            raise validation_error(
                f"Input validation error: this request generates {sequences} sequences; at most "
                f"MAX_CONCURRENT_REQUESTS={self.limit} can be in flight"
            )
        with self._lock:
            if self.sequences + sequences > self.limit:
                raise overloaded_error(self.limit)
            self.in_flight += 1
            self.sequences += sequences
        return Ticket(self, sequences)

    def _release(self, sequences: int) -> None:
        with self._lock:
            self.in_flight -= 1
            self.sequences -= sequences


class Ticket:
    """An admitted request's slots; :meth:`release` is idempotent."""

    def __init__(self, admission: Admission, sequences: int) -> None:
        self._admission, self._sequences = admission, sequences
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._admission._release(self._sequences)


class ValidationWorkers:
    """Template rendering, tokenization and grammar compilation run here, never on the event loop (TGI's
    validation workers): a 100k-character prompt or a large schema must not stall every other stream."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tgi-course-validation")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class InferenceCall:
    """Handed to a route by :func:`inference`."""

    def __init__(self, state: Any, route: str, http: Request) -> None:
        self.state, self.route, self.http = state, route, http
        self.ticket: Ticket | None = None
        self._streams: list[EventStream] = []
        self.handed_over = False

    async def prepare(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a validator method on a validation worker."""
        return await self.state.workers.run(fn, *args)

    def admit(self, sequences: int) -> None:
        if self.state.draining or not self.state.engine.accepting:
            raise unavailable_error()
        self.ticket = self.state.admission.acquire(sequences)

    def open(self, requests: list[GenerationRequest]) -> EventStream:
        """Submit to the engine now, so a refusal is an HTTP error and not a broken stream."""
        try:
            stream = EventStream(self.state.engine, requests)
        except EngineClosed:
            raise unavailable_error() from None
        self._streams.append(stream)
        return stream

    async def close(self) -> None:
        """Cancel whatever is still running and give the slots back (safe to call twice)."""
        for stream in self._streams:
            await stream.aclose()
        if self.handed_over and any(s.abandoned for s in self._streams):
            self.state.metrics.failure(self.route, "client_disconnected")  # a stream its client left
        self._streams = []
        if self.ticket is not None:
            self.ticket.release()

    async def run(self, work: Awaitable[T]) -> T:
        """Await ``work``, cancelling it if the client disconnects first (then :class:`ClientGone`)."""
        task = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(_disconnected(self.http.receive))
        try:
            done, _ = await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            raise
        finally:
            gone.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise ClientGone()

    def stream(self, events: AsyncIterator[str]) -> EventSourceResponse:
        """An SSE response that owns this call's slots and engine streams until its last byte is sent."""
        self.handed_over = True
        return _InferenceStream(events, self.close)


async def _disconnected(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class _InferenceStream(EventSourceResponse):
    def __init__(self, events: AsyncIterator[str], on_close: Callable[[], Awaitable[None]]) -> None:
        # "\n" separators as TGI and OpenAI send them; sse-starlette defaults to "\r\n".
        super().__init__(events, sep="\n", ping=STREAM_PING_SECONDS, send_timeout=STREAM_SEND_TIMEOUT_SECONDS)
        self._on_close = on_close
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except Exception as exc:  # the client went away or stopped reading: nothing more can reach it
            log.info("stream ended early: %s", exc.__class__.__name__)
        finally:
            with contextlib.suppress(Exception):
                await self._events.aclose()  # type: ignore[attr-defined]
            await self._on_close()


@contextlib.asynccontextmanager
async def inference(state: Any, route: str, http: Request) -> AsyncIterator[InferenceCall]:
    """Wrap one inference route: metrics, admission, disconnects and clean-up in one place."""
    state.metrics.received(route)
    call = InferenceCall(state, route, http)
    try:
        yield call
    except ClientGone:
        state.metrics.failure(route, "client_disconnected")
        raise
    except EngineClosed:
        state.metrics.failure(route, "unavailable")
        raise unavailable_error() from None
    except Exception as exc:
        state.metrics.failure(route, error_type_of(exc))
        raise
    finally:
        if not call.handed_over:
            await call.close()


__all__ = ["Admission", "ClientGone", "InferenceCall", "Ticket", "ValidationWorkers", "inference"]
