"""What every route needs, built once per app: settings, engine, validator, metrics, admission."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

from fastapi import Request

from ..config import ServerConfig
from ..engine import Engine
from ..models import LoadedModel
from .errors import overloaded_error
from .metrics import Metrics
from .serving import ModelFacts
from .validation import Validator


class Admission:
    """Counts requests in flight and turns away the one over MAX_CONCURRENT_REQUESTS with a 429, as TGI does."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            if self.in_flight >= self.limit:
                raise overloaded_error(self.limit)
            self.in_flight += 1

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    async def hold_while(self, stream: AsyncIterator[str]) -> AsyncIterator[str]:
        """Keep the slot taken until a streamed response ends, however it ends."""
        try:
            async with aclosing(stream) as items:  # type: ignore[type-var]
                async for item in items:
                    yield item
        finally:
            self.leave()


@dataclass
class AppState:
    config: ServerConfig
    loaded: LoadedModel
    engine: Engine
    validator: Validator
    metrics: Metrics
    facts: ModelFacts
    admission: Admission


def get_state(request: Request) -> AppState:
    return request.app.state.tgi
