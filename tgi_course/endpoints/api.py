"""The control plane's HTTP surface: the part of the Inference Endpoints REST API that huggingface_hub
calls (``/v2/endpoint/...``), the whoami it uses to find the default namespace, and the endpoint URLs.

Routes are thin: parse, call the supervisor, render with :func:`records.to_wire`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import proxy
from . import spec as specs
from .errors import ControlPlaneError, InvalidPayload, Unauthorized
from .records import to_wire
from .store import TOKEN_FILE
from .supervisor import Supervisor

_PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]


def create_app(supervisor: Supervisor) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        # No timeout on reads: a generation may take minutes. Connects to a local server are instant or refused.
        async with httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5.0), trust_env=False) as client:
            app.state.client = client
            await supervisor.open()
            try:
                yield
            finally:
                await supervisor.close()

    app = FastAPI(title="tgi-course local Inference Endpoints", lifespan=lifespan, docs_url=None, redoc_url=None)
    base = supervisor.base_url

    @app.exception_handler(ControlPlaneError)
    async def control_plane_error(request: Request, exc: ControlPlaneError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail
        if exc.status_code == 404:
            message = f"{request.method} {request.url.path} is not part of the local Inference Endpoints API"
        return JSONResponse({"error": message, "error_type": "not_found"}, status_code=exc.status_code)

    def caller(request: Request, namespace: str | None = None, name: str | None = None) -> None:
        """Like the real API, every call needs a token: here the user's own, made on first use (store.user_token).
        Then the namespace and name of the URL are checked, before they go anywhere near the state folder."""
        if not supervisor.valid_token(proxy.bearer_token(request)):
            raise Unauthorized(
                "Invalid credentials in Authorization header: the local control plane accepts only its own token, "
                f"kept in {supervisor.store.root / TOKEN_FILE}; tgi_course.use_local_endpoints() gives it to "
                "huggingface_hub as HF_TOKEN"
            )
        if namespace is not None:
            specs.check_names(namespace, name)

    async def json_body(request: Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            raise InvalidPayload("The request body is not valid JSON") from None

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/whoami-v2")
    async def whoami(request: Request) -> dict[str, Any]:
        caller(request)
        user = supervisor.settings.user
        return {
            "type": "user",
            "id": user,
            "name": user,
            "fullname": user,
            "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}},
        }

    @app.get("/v2/endpoint/{namespace}")
    async def list_endpoints(namespace: str, request: Request) -> dict[str, Any]:
        caller(request, namespace)
        return {"items": [to_wire(r, base) for r in supervisor.list(namespace)]}

    @app.post("/v2/endpoint/{namespace}", status_code=202)
    async def create(namespace: str, request: Request) -> dict[str, Any]:
        caller(request, namespace)
        return to_wire(await supervisor.create(namespace, await json_body(request)), base)

    @app.get("/v2/endpoint/{namespace}/{name}")
    async def get(namespace: str, name: str, request: Request) -> dict[str, Any]:
        caller(request, namespace, name)
        return to_wire(supervisor.get(namespace, name), base)

    @app.put("/v2/endpoint/{namespace}/{name}")
    async def update(namespace: str, name: str, request: Request) -> dict[str, Any]:
        caller(request, namespace, name)
        return to_wire(await supervisor.update(namespace, name, await json_body(request)), base)

    @app.delete("/v2/endpoint/{namespace}/{name}")
    async def delete(namespace: str, name: str, request: Request) -> dict[str, Any]:
        caller(request, namespace, name)
        await supervisor.delete(namespace, name)
        return {}

    @app.post("/v2/endpoint/{namespace}/{name}/pause")
    async def pause(namespace: str, name: str, request: Request) -> dict[str, Any]:
        caller(request, namespace, name)
        return to_wire(await supervisor.pause(namespace, name), base)

    @app.post("/v2/endpoint/{namespace}/{name}/resume")
    async def resume(namespace: str, name: str, request: Request) -> dict[str, Any]:
        caller(request, namespace, name)
        return to_wire(await supervisor.resume(namespace, name), base)

    @app.post("/v2/endpoint/{namespace}/{name}/scale-to-zero")
    async def scale_to_zero(namespace: str, name: str, request: Request) -> dict[str, Any]:
        caller(request, namespace, name)
        return to_wire(await supervisor.scale_to_zero(namespace, name), base)

    @app.get("/v2/endpoint/{namespace}/{name}/logs", response_class=PlainTextResponse)
    async def logs(namespace: str, name: str, request: Request) -> str:
        caller(request, namespace, name)
        record = supervisor.get(namespace, name)
        return supervisor.log_tail(record.key, lines=200)

    async def endpoint_traffic(request: Request):
        return await proxy.forward(request, supervisor, request.app.state.client)

    app.add_api_route("/endpoints/{namespace}/{name}", endpoint_traffic, methods=_PROXY_METHODS, include_in_schema=False)
    app.add_api_route("/endpoints/{namespace}/{name}/{path:path}", endpoint_traffic, methods=_PROXY_METHODS, include_in_schema=False)
    return app
