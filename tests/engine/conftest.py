"""Engine-test helpers shared by the dense and the int4 batching checks."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from tgi_course.engine import Engine, GenerationRequest, SamplingParams


def _alone_and_together(engine: Engine, prompts: list[list[int]], params: SamplingParams) -> tuple[list[str], list[str | None]]:
    """Each prompt's text generated on its own, then all of them submitted at once (so they share steps)."""
    alone = [engine.generate(GenerationRequest(ids, params)).text for ids in prompts]
    together: list[str | None] = [None] * len(prompts)

    def run(i: int) -> None:
        together[i] = engine.generate(GenerationRequest(prompts[i], params)).text

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return alone, together


@pytest.fixture(scope="session")
def alone_and_together() -> Callable[[Engine, list[list[int]], SamplingParams], tuple[list[str], list[str | None]]]:
    return _alone_and_together
