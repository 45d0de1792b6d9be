"""The course reading corpus: a small static web server over ``data/`` and access to the manifest.

The RAG notebooks load the corpus the way a real application loads web pages: over HTTP, with
LangChain's ``WebBaseLoader``. To stay offline we serve ``data/`` ourselves, on the loopback
interface and a free port chosen by the operating system, from a daemon thread in the notebook's own
process, so it disappears with the kernel and leaves no process behind.

>>> with CorpusServer() as corpus:
...     urls = corpus.page_urls()

The data folder is ``data/`` next to the package in a source checkout; set ``TGI_COURSE_DATA`` to use
another folder with the same layout (``manifest.json`` + ``corpus/*.html``).
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import threading
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DATA_ENV = "TGI_COURSE_DATA"

__all__ = ["DATA_ENV", "CorpusServer", "Fact", "data_dir", "facts", "load_manifest", "page_paths"]


def data_dir() -> Path:
    """The folder holding ``manifest.json`` and ``corpus/``."""
    override = os.environ.get(DATA_ENV)
    candidates = [Path(override)] if override else []
    candidates.append(Path(__file__).resolve().parents[2] / "data")  # source checkout / editable install
    candidates.append(Path.cwd() / "data")
    candidates.append(Path.cwd().parent / "data")  # a notebook running in notebooks/
    for folder in candidates:
        if (folder / "manifest.json").is_file():
            return folder
    raise FileNotFoundError(
        f"Cannot find the course data (manifest.json); looked in {', '.join(map(str, candidates))}. "
        f"Run from a checkout of the course or set {DATA_ENV}."
    )


def load_manifest() -> dict[str, Any]:
    """The parsed ``data/manifest.json``."""
    return json.loads((data_dir() / "manifest.json").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Fact:
    """One question whose answer appears verbatim in one corpus page."""

    question: str
    answer: str
    file: str  # relative to the data folder, e.g. "corpus/harbor-lab-case-study.html"
    title: str


def facts(file_contains: str | None = None) -> list[Fact]:
    """Every manifest fact, optionally only those of pages whose file name contains ``file_contains``."""
    found = []
    for doc in load_manifest()["documents"]:
        if file_contains and file_contains not in doc["file"]:
            continue
        for item in doc["facts"]:
            found.append(Fact(item["question"], item["answer"], doc["file"], doc["title"]))
    return found


def page_paths() -> list[str]:
    """Paths of the content pages (relative to the data folder), in manifest order; the index page excluded."""
    return [doc["file"] for doc in load_manifest()["documents"]]


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves files; logs nothing (the default handler writes every request to stderr)."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        pass


class CorpusServer:
    """A static HTTP server over the data folder, on ``127.0.0.1`` and a free port.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. It also stops itself when
    the Python process exits. Only the loopback interface is bound: nothing outside this machine
    can reach it.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.directory = Path(directory) if directory is not None else data_dir()
        self._host, self._port = host, port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> CorpusServer:
        """Bind and serve from a daemon thread; returns ``self``. Starting twice is a no-op."""
        if self._httpd is not None:
            return self
        handler = functools.partial(_QuietHandler, directory=str(self.directory))
        httpd = ThreadingHTTPServer((self._host, self._port), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="tgi-course-corpus", daemon=True)
        self._thread.start()
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        """Stop serving and free the port. Safe to call more than once."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        atexit.unregister(self.stop)

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def url(self) -> str:
        """Root URL of the data folder, with a trailing slash, e.g. ``http://127.0.0.1:40123/``."""
        if self._httpd is None:
            raise RuntimeError("the corpus server is not running; call start() or use it in a with block")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def page_urls(self) -> list[str]:
        """URLs of the corpus content pages, in manifest order."""
        return [self.url + path for path in page_paths()]

    def __enter__(self) -> CorpusServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.url if self._httpd is not None else "stopped"
        return f"CorpusServer({state})"
