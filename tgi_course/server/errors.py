"""The one place where failures become HTTP responses, in TGI's body shape ``{"error", "error_type"}``.

Everything that can go wrong is raised as :class:`ApiError` (or one of the known exception types mapped
below); handlers installed by :func:`install_error_handlers` turn them into JSON with the right status.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine import TemplateError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A failure a client should see: status code, TGI error_type and a message naming the field."""

    def __init__(self, status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        return {"error": self.message, "error_type": self.error_type}


def validation_error(message: str) -> ApiError:
    return ApiError(422, "validation", message)


def generation_error(message: str) -> ApiError:
    return ApiError(424, "generation", message)


# Seconds a client should wait before retrying a 429 or a 503. The openai client honours Retry-After (up to
# 60 s) in its own retries; a short, fixed wait suits a queue that drains in seconds.
RETRY_AFTER_SECONDS = 1


def overloaded_error(limit: int) -> ApiError:
    return ApiError(
        429, "overloaded", f"Model is overloaded: more than MAX_CONCURRENT_REQUESTS={limit} requests in flight",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def unavailable_error() -> ApiError:
    return ApiError(
        503, "unavailable", "The server is shutting down and takes no new requests; retry on another replica or later",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


class ClientGone(Exception):
    """The client closed the connection before its answer was ready: nothing is sent back."""


def unauthorized_error() -> ApiError:
    return ApiError(401, "authentication", "Unauthorized: send the API key as 'Authorization: Bearer <API_KEY>'")


def to_api_error(exc: Exception) -> ApiError:
    """Map a known exception type to the client-facing error; anything else is a 500."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, TemplateError):
        return ApiError(422, "template_error", f"Template error: {exc}")
    log.exception("unexpected error", exc_info=exc)
    return ApiError(500, "incomplete_generation", f"Internal error: {exc.__class__.__name__}: {exc}")


def error_type_of(exc: Exception) -> str:
    """The ``error_type`` a failure is reported with (the label of ``tgi_request_failure``), without logging."""
    if isinstance(exc, ApiError):
        return exc.error_type
    if isinstance(exc, TemplateError):
        return "template_error"
    if isinstance(exc, RequestValidationError):
        return "validation"
    return "incomplete_generation"


def _describe_pydantic(exc: RequestValidationError) -> ApiError:
    parts = []
    for error in exc.errors():
        location = [str(p) for p in error.get("loc", ()) if p != "body"]
        if error.get("type") == "json_invalid":
            return ApiError(400, "validation", f"Request body is not valid JSON: {error.get('msg', '')} (at {'/'.join(location) or 'body'})")
        field = ".".join(location) or "body"
        parts.append(f"`{field}`: {error.get('msg')}")
    return validation_error("Input validation error: " + "; ".join(parts))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers or None)

    @app.exception_handler(TemplateError)
    async def _template_error(_: Request, exc: TemplateError) -> JSONResponse:
        error = to_api_error(exc)
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        error = _describe_pydantic(exc)
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {400: "validation", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if isinstance(exc.__cause__, UnicodeDecodeError):  # FastAPI's "error parsing the body", said precisely
            detail = f"Request body is not valid JSON: it is not UTF-8 text ({exc.__cause__})"
        return JSONResponse(
            {"error": detail, "error_type": kinds.get(exc.status_code, "http")},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(ClientGone)
    async def _client_gone(_: Request, __: ClientGone) -> Response:
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        error = to_api_error(exc)
        return JSONResponse(error.body(), status_code=error.status)
