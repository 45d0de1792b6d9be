"""Routes only this course's server has, for seeing inside it. Real TGI and vLLM answer them 404."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from ..dependencies import require_api_key
from ..protocol.course import EngineSteps
from ..state import AppState, get_state

router = APIRouter(tags=["tgi-course only"])

# Steps per answer: enough for a few requests' whole lives, small enough that one answer stays cheap.
DEFAULT_STEPS = 256
MAX_STEPS = 1024

_STEPS_DESCRIPTION = """\
**tgi-course only; TGI has no such route.** The engine's last steps, oldest first: for each prefill or decode
step, when it ran and which requests were in it. Requests that share a step were batched together
(continuous batching). A request's id is the `id` of the chat completion or completion its client received
(with `#<choice>` after it when the response has several choices). Read-only; the record keeps the newest
`kept` steps. Page through it with `since` (the last step number you have) and `limit`."""


@router.get(
    "/engine/steps",
    dependencies=[Depends(require_api_key)],
    response_model=EngineSteps,
    summary="The engine's recent steps and the requests batched in each (tgi-course only)",
    description=_STEPS_DESCRIPTION,
)
async def engine_steps(
    since: int = Query(0, ge=0, description="Return only steps numbered above this one."),
    limit: int = Query(DEFAULT_STEPS, ge=1, le=MAX_STEPS, description="At most this many steps."),
    state: AppState = Depends(get_state),
) -> EngineSteps:
    log = state.engine.step_log
    return EngineSteps.of(log.window(since, limit), log.kept)
