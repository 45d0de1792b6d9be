"""POST /v1/chat/completions: the Messages API."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from .. import serving
from ..admission import inference
from ..dependencies import INFERENCE
from ..protocol.openai import ChatCompletionRequest
from ..state import AppState, get_state
from .responses import whole

router = APIRouter(tags=["Messages API"])


async def handle_chat(state: AppState, body: ChatCompletionRequest, http: Request, route: str = "chat_completions") -> Response:
    async with inference(state, route, http) as call:
        prepared = await call.prepare(state.validator.chat, body)  # fails here, before any stream starts
        call.admit(serving.sequences_of([prepared]))
        response_id = serving.completion_id("chatcmpl")  # also the engine's request id: see serving.request_id_for
        events = call.open(serving.requests_for([prepared], response_id))
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return call.stream(serving.stream_chat(events, state.metrics, state.facts, prepared, include_usage, response_id))
        results = await call.run(serving.run_to_end(events, state.metrics, route))
        return whole(serving.chat_completion(state.facts, prepared, results, response_id))


@router.post("/v1/chat/completions", dependencies=INFERENCE, summary="OpenAI-compatible chat completions")
async def chat_completions(body: ChatCompletionRequest, http: Request, state: AppState = Depends(get_state)) -> Response:
    return await handle_chat(state, body, http)
