"""POST /v1/completions: OpenAI's legacy text completions, a raw prompt with no chat template."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from .. import serving
from ..dependencies import INFERENCE
from ..protocol.openai import CompletionRequest
from ..state import AppState, get_state
from .responses import sse, whole

router = APIRouter(tags=["Messages API"])


async def handle_completion(state: AppState, body: CompletionRequest) -> Response:
    state.metrics.received("completions")
    prepared = state.validator.completion(body)
    state.admission.enter()
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse(state, serving.stream_completion(state.engine, state.metrics, state.facts, prepared, body.echo, include_usage))
    try:
        results = await serving.run_to_end(state.engine, state.metrics, "completions", prepared)
    finally:
        state.admission.leave()
    return whole(serving.completion(state.facts, prepared, results, body.echo))


@router.post("/v1/completions", dependencies=INFERENCE, summary="OpenAI-compatible text completions")
async def completions(body: CompletionRequest, state: AppState = Depends(get_state)) -> Response:
    return await handle_completion(state, body)
