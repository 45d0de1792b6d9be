"""Wire models of the routes only this course's server has (TGI and vLLM have none of them)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ...engine import StepRecord, StepWindow


class EngineStep(BaseModel):
    """One step of the engine's loop."""

    step: int = Field(description="The step's number, from 1; prefill and decode steps are counted together.")
    kind: Literal["prefill", "decode"] = Field(
        description="`prefill`: newly admitted requests read their prompts (and get their first token); `decode`: every running request gets its next token."
    )
    start: float = Field(description="When the step began, in the server's monotonic seconds (compare with `now`).")
    end: float = Field(description="When the step's model call returned, in the same seconds.")
    request_ids: list[str] = Field(
        description="The requests in the step. For a chat completion or completion this is the response's `id`, "
        "followed by `#<choice index>` when the response has several choices."
    )

    @classmethod
    def of(cls, record: StepRecord) -> EngineStep:
        return cls(step=record.number, kind=record.kind, start=record.started, end=record.ended, request_ids=list(record.request_ids))


class EngineSteps(BaseModel):
    """A window of the engine's step record, oldest step first."""

    now: float = Field(description="The server's monotonic clock when this answer was made: subtract it from `start`/`end` to get seconds ago.")
    last_step: int = Field(description="The newest step's number (0 before the first step).")
    kept: int = Field(description="How many of the newest steps the server keeps.")
    dropped: int = Field(description="Steps after `since` that are no longer kept (the record is a ring).")
    more: bool = Field(description="More steps follow the last one returned: ask again with `since` set to its number.")
    steps: list[EngineStep]

    @classmethod
    def of(cls, window: StepWindow, kept: int) -> EngineSteps:
        return cls(
            now=window.now,
            last_step=window.last_number,
            kept=kept,
            dropped=window.dropped,
            more=window.more,
            steps=[EngineStep.of(r) for r in window.records],
        )
