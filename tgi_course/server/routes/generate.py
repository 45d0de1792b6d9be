"""TGI's native generation routes: POST /generate, /generate_stream and the compat route POST /."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from .. import serving
from ..admission import inference
from ..dependencies import INFERENCE
from ..errors import validation_error
from ..protocol.tgi import GenerateRequest
from ..state import AppState, get_state
from .responses import whole

router = APIRouter(tags=["Text Generation Inference"])


async def handle_generate(state: AppState, body: GenerateRequest, http: Request, stream: bool, as_list: bool = False) -> Response:
    """``as_list``: TGI's compat route ``POST /`` (and SageMaker's generate bodies, which TGI sends through
    it) answer a one-element JSON array of GenerateResponse, which its own ``text-generation`` client
    indexes with ``[0]``."""
    route = "generate_stream" if stream else "generate"
    async with inference(state, route, http) as call:
        p = body.parameters
        if stream and (p.best_of or 1) > 1:
            raise validation_error("Input validation error: `best_of` != 1 is not supported when streaming tokens")
        prepared = await call.prepare(state.validator.generate, body.inputs, p)
        call.admit(serving.sequences_of([prepared]))
        events = call.open(serving.requests_for([prepared]))
        if stream:
            return call.stream(serving.stream_generate(events, state.metrics, prepared, p.details, bool(p.return_full_text)))
        results = await call.run(serving.run_to_end(events, state.metrics, route))
        response = serving.generate_response(
            prepared, results, p.details, p.decoder_input_details, bool(p.return_full_text), state.loaded.tokenizer
        )
        return whole([response] if as_list else response)


@router.post("/generate", dependencies=INFERENCE, summary="Generate tokens")
async def generate(body: GenerateRequest, http: Request, state: AppState = Depends(get_state)) -> Response:
    return await handle_generate(state, body, http, stream=False)


@router.post("/generate_stream", dependencies=INFERENCE, summary="Generate a stream of tokens (Server-Sent Events)")
async def generate_stream(body: GenerateRequest, http: Request, state: AppState = Depends(get_state)) -> Response:
    return await handle_generate(state, body, http, stream=True)


@router.post("/", dependencies=INFERENCE, summary="Generate tokens; `stream: true` for Server-Sent Events")
async def compat_generate(body: GenerateRequest, http: Request, state: AppState = Depends(get_state)) -> Response:
    return await handle_generate(state, body, http, stream=body.stream, as_list=True)
