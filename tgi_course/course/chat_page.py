"""The course's streaming chat page (``tgi_course/course/web/``), served on loopback from a background thread.

The page is a plain HTML file whose script sends a chat completion with ``fetch`` and reads the
Server-Sent Events itself. It is served from its own port, so from another *origin* than the model
server: the browser then treats the chat request as cross-origin and lets the page read the answer only
if the model server names the page's origin in ``Access-Control-Allow-Origin``. This course's server
does that for the origins in ``CORS_ALLOW_ORIGIN``; TGI for those given to ``--cors-allow-origin`` (and,
without that flag, for any origin). Every web front-end served apart from its API is in this situation.

Usage::

    page = chat_page.serve()                                  # http://127.0.0.1:<free port>
    conn = connect(cors_allow_origin=(page.origin,))          # a local server that allows the page
    print(page.link(conn.url, model=conn.model, api_key=conn.api_key))
    page.stop()
"""

from __future__ import annotations

import http.server
import os
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlencode

import httpx

__all__ = ["PORT_ENV", "WEB_DIR", "ChatPage", "Preflight", "excerpt", "preflight", "running_rows", "serve"]

#: The page's files: chat.html and chat.js.
WEB_DIR = Path(__file__).resolve().with_name("web")
PAGE = "chat.html"
#: The port to serve the page on when none is given: a launcher that starts one server for the whole course
#: (``tgi-course lab``) picks it, and starts that server allowing the page's origin.
PORT_ENV = "TGI_COURSE_CHAT_PAGE_PORT"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static files from WEB_DIR; no request log on stderr (it would land in the notebook's output)."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def end_headers(self) -> None:
        # An edited chat.js shows up at the next reload, not after the browser's heuristic cache expires.
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


class ChatPage:
    """The page's own little web server. ``port=None`` lets the system pick a free one."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, directory: str | Path = WEB_DIR) -> None:
        self.host, self._port, self.directory = host, port or 0, Path(directory)
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the chat page is not being served; call start() first")
        return int(self._server.server_address[1])

    @property
    def origin(self) -> str:
        """What the browser sends as ``Origin`` from this page: scheme, host and port, no path."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.origin}/{PAGE}"

    def link(self, server_url: str, model: str | None = None, api_key: str | None = None) -> str:
        """The page's address, configured to talk to ``server_url``. The key goes after ``#``: browsers
        never send the fragment to the page's server, only the page's script reads it."""
        params = {"server": server_url.rstrip("/")}
        if model:
            params["model"] = model
        address = f"{self.url}?{urlencode(params)}"
        if api_key and api_key != "-":  # "-" is the course's placeholder for "no key"
            address += "#" + urlencode({"key": api_key})
        return address

    def start(self) -> ChatPage:
        if self._server is not None:
            return self
        handler = partial(_QuietHandler, directory=str(self.directory))
        server = http.server.ThreadingHTTPServer((self.host, self._port), handler)
        server.daemon_threads = True  # a browser's open keep-alive connection must not block stop()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="tgi-course-chat-page", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> ChatPage:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ChatPage(url={self.url!r})" if self.running else "ChatPage(stopped)"


def serve(host: str = "127.0.0.1", port: int | None = None) -> ChatPage:
    """Start serving the chat page and return it (``.origin``, ``.link(...)``, ``.stop()``).

    Without ``port``: ``$TGI_COURSE_CHAT_PAGE_PORT`` if set and free, else any free port.
    """
    if port is None and os.environ.get(PORT_ENV):
        try:
            return ChatPage(host, int(os.environ[PORT_ENV])).start()
        except (OSError, ValueError):
            # Taken (notebook 03 open in two kernels) or not a number: any free port. The course's shared
            # server then does not allow the page's origin, and the notebook's preflight cell says so.
            pass
    return ChatPage(host, port).start()


@dataclass(frozen=True)
class Preflight:
    """What a model server answered to the browser's CORS preflight for the page's chat request."""

    status_code: int
    allow_origin: str | None  # the Access-Control-Allow-Origin header, if any
    allow_headers: str | None  # the Access-Control-Allow-Headers header, if any
    origin: str
    request_headers: tuple[str, ...]

    @property
    def allowed(self) -> bool:
        """Whether a browser would go on to send the request: the origin is allowed (by name or ``*``)
        and so is every request header the page sets."""
        if self.allow_origin not in (self.origin, "*"):
            return False
        granted = {h.strip().lower() for h in (self.allow_headers or "").split(",") if h.strip()}
        return "*" in granted or all(h.lower() in granted for h in self.request_headers)


def preflight(server_url: str, origin: str, request_headers: tuple[str, ...] = ("content-type",)) -> Preflight:
    """Send the ``OPTIONS`` request a browser sends before the page's ``POST /v1/chat/completions``.

    ``request_headers`` are the non-simple headers the page will set: ``content-type`` (for
    ``application/json``), plus ``authorization`` when it sends an API key.
    """
    response = httpx.options(
        f"{server_url.rstrip('/')}/v1/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": ",".join(request_headers),
        },
        timeout=30,
    )
    return Preflight(
        status_code=response.status_code,
        allow_origin=response.headers.get("access-control-allow-origin"),
        allow_headers=response.headers.get("access-control-allow-headers"),
        origin=origin,
        request_headers=tuple(request_headers),
    )


# Gauges of the rows being decoded now: TGI's (and this course's server's) name, then vLLM's.
ROW_GAUGES = ("tgi_batch_current_size", "vllm:num_requests_running")


def running_rows(server_url: str, headers: dict[str, str] | None = None) -> float | None:
    """Rows in the server's running batch, read from ``/metrics``; None when it exports no such gauge."""
    try:
        response = httpx.get(f"{server_url.rstrip('/')}/metrics", headers=headers or {}, timeout=10)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    for name in ROW_GAUGES:
        values = [
            float(line.rsplit(" ", 1)[1])
            for line in response.text.splitlines()
            if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{")
        ]
        if values:
            return sum(values)  # vLLM labels its gauge by model name; one series per model
    return None


def excerpt(name: str, file: str = "chat.js") -> str:
    """The lines of ``web/<file>`` between the markers ``// <name>`` and ``// </name>`` (for the notebook)."""
    text = (WEB_DIR / file).read_text()
    start, end = f"// <{name}>\n", f"// </{name}>"
    if start not in text or end not in text:
        raise KeyError(f"no block {name!r} in {file}")
    return text.split(start, 1)[1].split(end, 1)[0].rstrip() + "\n"
