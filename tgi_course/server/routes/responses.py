"""How streamed and whole results leave the server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from ..state import AppState


def sse(state: AppState, stream: AsyncIterator[str]) -> EventSourceResponse:
    """An SSE response that holds its admission slot until the stream ends (or the client leaves)."""
    # "\n" separators as TGI and OpenAI send them; sse-starlette defaults to "\r\n".
    return EventSourceResponse(state.admission.hold_while(stream), sep="\n", ping=15)


def whole(body: Any) -> JSONResponse:
    """A JSON response of a wire model, or of a list of them."""
    if isinstance(body, list):
        return JSONResponse([item.model_dump(mode="json") if hasattr(item, "model_dump") else item for item in body])
    if hasattr(body, "model_dump"):
        body = body.model_dump(mode="json")
    return JSONResponse(body)
