"""POST /v1/completions: OpenAI's legacy text completions, a raw prompt with no chat template."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from .. import serving
from ..admission import inference
from ..dependencies import INFERENCE
from ..protocol.openai import CompletionRequest
from ..state import AppState, get_state
from .responses import whole

router = APIRouter(tags=["Messages API"])


async def handle_completion(state: AppState, body: CompletionRequest, http: Request) -> Response:
    async with inference(state, "completions", http) as call:
        prepared = await call.prepare(state.validator.completion, body)
        call.admit(serving.sequences_of(prepared))
        response_id = serving.completion_id("cmpl")  # also the engine's request id: see serving.request_id_for
        events = call.open(serving.requests_for(prepared, response_id))
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return call.stream(serving.stream_completion(events, state.metrics, state.facts, prepared, body.echo, include_usage, response_id))
        results = await call.run(serving.run_to_end(events, state.metrics, "completions"))
        return whole(serving.completion(state.facts, prepared, results, body.echo, response_id))


@router.post("/v1/completions", dependencies=INFERENCE, summary="OpenAI-compatible text completions")
async def completions(body: CompletionRequest, http: Request, state: AppState = Depends(get_state)) -> Response:
    return await handle_completion(state, body, http)
