"""Checks that run before an inference route: the API key, then the content type."""

from __future__ import annotations

import hmac

from fastapi import Depends, Request

from .errors import ApiError, unauthorized_error
from .state import AppState, get_state


def require_api_key(request: Request, state: AppState = Depends(get_state)) -> None:
    """TGI asks for ``Authorization: Bearer <API_KEY>`` on inference routes only, when API_KEY is set."""
    expected = state.config.api_key
    if not expected:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise unauthorized_error()


def require_json(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Expected request with `Content-Type: application/json`, got {content_type or 'no Content-Type'}",
        )


INFERENCE = [Depends(require_api_key), Depends(require_json)]
