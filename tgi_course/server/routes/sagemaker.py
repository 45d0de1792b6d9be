"""POST /invocations: the route SageMaker calls.

With MESSAGES_API_ENABLED=true it is the Messages API (as TGI 1.4–2.3 made it); otherwise it accepts a
chat, completion or generate body and answers in kind, as TGI 2.4+ does. TGI hands a generate body to its
compat route (``router/src/sagemaker.rs`` calls ``compat_generate``), so a non-streamed one answers a
one-element array, exactly as ``POST /``.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError

from ..dependencies import INFERENCE
from ..errors import ApiError, validation_error
from ..protocol.openai import ChatCompletionRequest, CompletionRequest
from ..protocol.tgi import GenerateRequest
from ..state import AppState, get_state
from .chat import handle_chat
from .completions import handle_completion
from .generate import handle_generate

router = APIRouter(tags=["SageMaker"])


def _parse(model: type, body: dict) -> object:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        details = "; ".join(f"`{'.'.join(str(p) for p in e['loc'])}`: {e['msg']}" for e in exc.errors())
        raise validation_error(f"Input validation error: {details}") from None


# The body is read by hand (its shape picks the route), so its schema is declared here for /openapi.json.
_INVOCATIONS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/ChatCompletionRequest"},
                        {"$ref": "#/components/schemas/CompletionRequest"},
                        {"$ref": "#/components/schemas/GenerateRequest"},
                    ]
                }
            }
        },
    }
}


@router.post("/invocations", dependencies=INFERENCE, summary="SageMaker-compatible route", openapi_extra=_INVOCATIONS_BODY)
async def invocations(request: Request, state: AppState = Depends(get_state)) -> Response:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # a body that is not UTF-8 is a client error too
        raise ApiError(400, "validation", f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise validation_error("Input validation error: the body must be a JSON object")
    if state.config.messages_api_enabled or "messages" in body:
        if "messages" not in body:
            raise validation_error(
                "Input validation error: `messages` is required: MESSAGES_API_ENABLED=true makes /invocations a chat-completions route"
            )
        return await handle_chat(state, _parse(ChatCompletionRequest, body), request)  # type: ignore[arg-type]
    if "prompt" in body:
        return await handle_completion(state, _parse(CompletionRequest, body), request)  # type: ignore[arg-type]
    if "inputs" in body:
        parsed: GenerateRequest = _parse(GenerateRequest, body)  # type: ignore[assignment]
        return await handle_generate(state, parsed, request, stream=parsed.stream, as_list=True)
    raise validation_error("Input validation error: expected a chat (`messages`), completion (`prompt`) or generate (`inputs`) body")
