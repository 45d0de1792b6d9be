"""The engine's step record: which requests ran in each step, and when.

Continuous batching is easiest to believe when you can see it: the loop thread appends one
:class:`StepRecord` per prefill and per decode step, and anyone may read a window of the last ones (the
server's ``GET /engine/steps`` route, tests, the course's timeline picture). The record is bounded: the
oldest steps fall off once :data:`KEPT_STEPS` are held.

Times are :func:`time.monotonic` seconds, a clock that only moves forward and means nothing across
machines; a reader lines them up with its own clock through :attr:`StepWindow.now`, read at the same moment.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

StepKind = Literal["prefill", "decode"]

# About four minutes of steps at the default model's CPU speed; a few hundred KB of memory at most.
KEPT_STEPS = 4096


@dataclass(frozen=True)
class StepRecord:
    """One step that ran: a prefill (new rows read their prompts) or a decode (every running row adds a token)."""

    number: int  # from 1, prefill and decode steps counted together
    kind: StepKind
    started: float  # time.monotonic() when the runner was called
    ended: float  # time.monotonic() when its logits were back, before the tokens are sent
    request_ids: tuple[str, ...]  # GenerationRequest.request_id of every row in the step, in row order


@dataclass(frozen=True)
class StepWindow:
    """What :meth:`StepLog.window` answers: some records and where they sit in the whole record."""

    now: float  # time.monotonic() when the window was read
    last_number: int  # the newest step's number (0 before the first step)
    records: tuple[StepRecord, ...]  # oldest first
    more: bool  # steps after the last record returned exist (ask again from there)
    dropped: int  # steps after ``since`` that are no longer kept


class StepLog:
    """Appended by the engine's loop thread, read from any thread."""

    def __init__(self, kept: int = KEPT_STEPS) -> None:
        self.kept = kept
        self._records: deque[StepRecord] = deque(maxlen=kept)
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def append(self, kind: StepKind, started: float, ended: float, request_ids: tuple[str, ...]) -> StepRecord:
        with self._lock:
            record = StepRecord(next(self._numbers), kind, started, ended, request_ids)
            self._records.append(record)
        return record

    def window(self, since: int = 0, limit: int = KEPT_STEPS) -> StepWindow:
        """The first ``limit`` kept steps numbered above ``since``, oldest first."""
        with self._lock:
            now = time.monotonic()
            last = self._records[-1].number if self._records else 0
            oldest = self._records[0].number if self._records else last + 1
            # Numbers are consecutive in the deque, so the first wanted record is found by arithmetic (capped:
            # a client may ask from any number, and islice takes no index beyond sys.maxsize).
            start = min(max(since + 1, oldest) - oldest, len(self._records))
            records = tuple(itertools.islice(self._records, start, start + max(min(limit, len(self._records)), 0)))
        upto = records[-1].number if records else max(since, oldest - 1)
        return StepWindow(
            now=now,
            last_number=last,
            records=records,
            more=upto < last,
            dropped=max(0, oldest - 1 - since),
        )
