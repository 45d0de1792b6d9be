"""The endpoint URL: every request to ``/endpoints/{namespace}/{name}/...`` is checked here, then
forwarded to that endpoint's server process, response streamed back unchanged (SSE included).

The caller's ``Authorization`` header stops here: the server gets the proxy's own, with the random API
key that server was started with. So the server's port on 127.0.0.1 is no way around a protected
endpoint's token check, and the learner's token never reaches the server.

Owning the URL is what makes scale-to-zero work: a request for a scaled-to-zero endpoint reaches the
control plane even though no server runs, starts one, and gets a 503 "scaled to zero, starting".
"""

from __future__ import annotations

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse

from . import spec as specs
from .errors import Unauthorized, Unavailable
from .supervisor import Supervisor

# Connection-level headers describe one hop, not the message; they must not be forwarded.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
# Not forwarded either: replaced by the server's own API key.
_REPLACED = {"authorization"}


def bearer_token(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def forward(request: Request, supervisor: Supervisor, client: httpx.AsyncClient) -> StreamingResponse:
    namespace, name = request.path_params["namespace"], request.path_params["name"]
    specs.check_names(namespace, name)
    record = supervisor.get(namespace, name)
    if not supervisor.accepts(record, bearer_token(request)):
        # Checked before waking anything up: an anonymous request must not start a server.
        missing = bearer_token(request) is None
        raise Unauthorized(
            f"Inference Endpoint '{name}' is {record.spec['type']}: "
            + (
                "send your Hugging Face token as 'Authorization: Bearer <token>'"
                if missing
                else "this token is not allowed to use it (offline, the token is the one huggingface_hub.get_token() "
                "returns after use_local_endpoints())"
            )
        )
    port, api_key = supervisor.serving(record)
    target = httpx.URL(f"http://127.0.0.1:{port}/{request.path_params.get('path', '')}", query=request.url.query.encode())
    skip = _HOP_BY_HOP | _REPLACED
    headers = [(k, v) for k, v in request.headers.raw if k.decode("latin-1").lower() not in skip]
    headers.append((b"authorization", f"Bearer {api_key}".encode("latin-1")))
    body = await request.body()

    supervisor.request_started(record.key)
    finished = False

    async def finish() -> None:
        # Called from the body iterator and as a background task: whichever runs first counts.
        nonlocal finished
        if not finished:
            finished = True
            await upstream.aclose()
            supervisor.request_finished(record.key)

    try:
        upstream = await client.send(client.build_request(request.method, target, headers=headers, content=body), stream=True)
    except httpx.TransportError as exc:
        supervisor.request_finished(record.key)
        raise Unavailable(f"Inference Endpoint '{name}' did not answer ({exc.__class__.__name__}); retry in a few seconds", retry_after=2) from None

    async def relay():
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await finish()

    response_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
    return StreamingResponse(relay(), status_code=upstream.status_code, headers=response_headers, background=BackgroundTask(finish))
