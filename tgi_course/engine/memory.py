"""Giving freed heap memory back to the operating system (glibc only).

Each decode step frees and reallocates KV-cache tensors of a slightly different size. glibc keeps freed
chunks in its heap for reuse, and with bf16 tensors (many medium-sized blocks below the mmap threshold)
the retained part grows for minutes under a busy room: a 90 s soak of 64 streams left 330 MiB that
``malloc_trim(0)`` returned at once (1,459 -> 1,129 MiB; `python -m bench.soak`, bf16, 2-core Xeon).
Trimming every few seconds between steps keeps the resident size flat; it costs a few milliseconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable

TRIM_EVERY_SECONDS = 5.0


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows): nothing to do
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class HeapTrimmer:
    """Calls ``malloc_trim(0)`` at most every ``interval`` seconds, and whenever asked to now."""

    def __init__(self, interval: float = TRIM_EVERY_SECONDS) -> None:
        self._trim = _load_malloc_trim()
        self.interval = interval
        self._last = time.monotonic()

    def maybe(self, now: bool = False) -> None:
        if self._trim is None:
            return
        t = time.monotonic()
        if now or t - self._last >= self.interval:
            self._trim(0)
            self._last = t
