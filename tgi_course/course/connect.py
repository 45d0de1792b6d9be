"""One entry point for every notebook: a local server by default, any OpenAI-compatible server on request.

Set ``TGI_COURSE_URL`` (and ``TGI_COURSE_API_KEY`` if it needs one) to run the same notebooks against a
real TGI, an Inference Endpoint or a vLLM server; nothing else in the notebooks changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import httpx

from .local_server import LocalServer

URL_ENV = "TGI_COURSE_URL"
API_KEY_ENV = "TGI_COURSE_API_KEY"
MODEL_ENV = "TGI_COURSE_MODEL"  # for servers whose /v1/models does not name the served model

_shared_server: LocalServer | None = None


def _root(url: str) -> str:
    """Accept ``http://host:port``, ``.../`` or ``.../v1`` and keep the server's root."""
    url = url.strip().rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


@dataclass
class Connection:
    """Where the course's requests go, and ready-made clients for it."""

    url: str
    api_key: str = "-"
    is_local: bool = False
    server: LocalServer | None = field(default=None, repr=False)
    _model: str | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        """What OpenAI-style clients take as ``base_url``."""
        return f"{self.url}/v1/"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key and self.api_key != "-" else {}

    @property
    def model(self) -> str:
        """The served model's id: ``$TGI_COURSE_MODEL`` if set, else the first of ``/v1/models``."""
        if self._model is None and os.environ.get(MODEL_ENV):
            self._model = os.environ[MODEL_ENV]
        if self._model is None:
            response = httpx.get(f"{self.url}/v1/models", headers=self.headers, timeout=30)
            response.raise_for_status()
            self._model = response.json()["data"][0]["id"]
        return self._model

    def info(self) -> dict[str, Any]:
        """TGI's ``/info``; an empty dict on servers that do not have it (vLLM, OpenAI)."""
        response = httpx.get(f"{self.url}/info", headers=self.headers, timeout=30)
        return response.json() if response.status_code == 200 else {}

    def context_window(self, default: int = 4096) -> int:
        """Tokens the server accepts per request: TGI's max_total_tokens, vLLM's max_model_len, else ``default``."""
        total = self.info().get("max_total_tokens")
        if total:
            return int(total)
        try:
            card = httpx.get(f"{self.url}/v1/models", headers=self.headers, timeout=30).json()["data"][0]
            return int(card.get("max_model_len") or default)
        except (httpx.HTTPError, KeyError, IndexError, ValueError):
            return default

    def openai(self, **kwargs: Any) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key=self.api_key, **kwargs)

    def async_openai(self, **kwargs: Any) -> Any:
        from openai import AsyncOpenAI

        return AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, **kwargs)


def connect(url: str | None = None, api_key: str | None = None, **settings: Any) -> Connection:
    """The server the course talks to.

    ``url`` (or ``$TGI_COURSE_URL``) names an existing server; otherwise a local one is started on first
    use and shared by later calls in the same process. ``settings`` configure that local server.
    """
    global _shared_server
    url = url or os.environ.get(URL_ENV)
    if url:
        return Connection(url=_root(url), api_key=api_key or os.environ.get(API_KEY_ENV) or "-", is_local=False)
    if _shared_server is None or not _shared_server.running:
        _shared_server = LocalServer(**settings).start()
    return Connection(url=_shared_server.url, api_key=_shared_server.api_key, is_local=True, server=_shared_server)
