"""POST /v1/chat/completions: the Messages API."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from .. import serving
from ..dependencies import INFERENCE
from ..protocol.openai import ChatCompletionRequest
from ..state import AppState, get_state
from .responses import sse, whole

router = APIRouter(tags=["Messages API"])


async def handle_chat(state: AppState, body: ChatCompletionRequest, route: str = "chat_completions") -> Response:
    state.metrics.received(route)
    prepared = state.validator.chat(body)  # fails here, before any stream starts
    state.admission.enter()
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse(state, serving.stream_chat(state.engine, state.metrics, state.facts, prepared, include_usage))
    try:
        results = await serving.run_to_end(state.engine, state.metrics, route, [prepared])
    finally:
        state.admission.leave()
    return whole(serving.chat_completion(state.facts, prepared, results))


@router.post("/v1/chat/completions", dependencies=INFERENCE, summary="OpenAI-compatible chat completions")
async def chat_completions(body: ChatCompletionRequest, state: AppState = Depends(get_state)) -> Response:
    return await handle_chat(state, body)
