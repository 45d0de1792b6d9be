"""How whole results leave the server (streams leave through :meth:`InferenceCall.stream`)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


def whole(body: Any) -> JSONResponse:
    """A JSON response of a wire model, or of a list of them."""
    if isinstance(body, list):
        return JSONResponse([item.model_dump(mode="json") if hasattr(item, "model_dump") else item for item in body])
    if hasattr(body, "model_dump"):
        body = body.model_dump(mode="json")
    return JSONResponse(body)
