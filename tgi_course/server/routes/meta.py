"""Routes about the server rather than generation: health, info, models, metrics, tokenization."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from ... import __version__
from ...engine.chat import tokenize_with_offsets
from ..dependencies import require_api_key, require_json
from ..errors import RETRY_AFTER_SECONDS
from ..protocol.openai import ChatCompletionRequest, ModelCard, ModelList
from ..protocol.tgi import TokenizeRequest
from ..state import AppState, get_state

router = APIRouter(tags=["Text Generation Inference"])


@router.get("/health", summary="200 when the model can serve, 503 otherwise")
# SageMaker polls GET /ping on every container; TGI's router maps it to the same health check.
@router.get("/ping", summary="SageMaker's health check: the same answer as /health", include_in_schema=False)
async def health(state: AppState = Depends(get_state)) -> Response:
    if state.engine.healthy and not state.draining:
        return Response(status_code=200)
    return JSONResponse(
        {"error": "unhealthy", "error_type": "healthcheck"}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


@router.get("/info", summary="Model and router settings")
async def info(state: AppState = Depends(get_state)) -> dict:
    c, loaded = state.config, state.loaded
    return {
        "model_id": state.facts.name,
        "model_sha": loaded.sha,
        "model_pipeline_tag": "text-generation",
        "model_dtype": str(loaded.dtype).removeprefix("torch."),
        "model_device_type": loaded.device.type,
        "max_concurrent_requests": c.max_concurrent_requests,
        "max_best_of": c.max_best_of,
        "max_stop_sequences": c.max_stop_sequences,
        "max_input_tokens": c.max_input_tokens,
        "max_total_tokens": c.max_total_tokens,
        "max_batch_prefill_tokens": c.max_batch_prefill_tokens,
        "max_batch_total_tokens": c.max_batch_total_tokens,
        "max_top_n_tokens": c.max_top_n_tokens,
        "max_client_batch_size": c.max_client_batch_size,
        "validation_workers": c.validation_workers,
        "router": "text-generation-router",
        "version": __version__,
        "sha": None,
        "docker_label": None,
    }


@router.get("/v1/models", summary="The served model, in OpenAI's list shape")
async def models(state: AppState = Depends(get_state)) -> dict:
    name = state.facts.name
    return ModelList(data=[ModelCard(id=name, owned_by=name)]).model_dump()


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(state: AppState = Depends(get_state)) -> Response:
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.post("/tokenize", dependencies=[Depends(require_api_key), Depends(require_json)], summary="Tokenize a string")
async def tokenize(body: TokenizeRequest, state: AppState = Depends(get_state)) -> list[dict]:
    return await state.workers.run(tokenize_with_offsets, state.loaded.tokenizer, body.inputs, body.add_special_tokens)


@router.post("/chat_tokenize", dependencies=[Depends(require_json)], summary="Apply the chat template and tokenize")
async def chat_tokenize(body: ChatCompletionRequest, state: AppState = Depends(get_state)) -> dict:
    text = await state.workers.run(state.validator.chat_prompt, body)  # tools rendered as for generation, as TGI does
    return {
        "tokenize_response": await state.workers.run(tokenize_with_offsets, state.loaded.tokenizer, text, False),
        "templated_text": text,
    }
