"""The local control plane as an object: a uvicorn server on a background thread of this process.

In-process (not a separate daemon) on purpose: it lives and dies with the notebook kernel or test
that started it, and so do the servers it supervises; state on disk outlives both.
"""

from __future__ import annotations

import atexit
import socket
import threading
import time
from pathlib import Path

import httpx

from .settings import ControlPlaneSettings
from .store import EndpointStore, StateDirBusy, user_token

_START_TIMEOUT_S = 30.0


class LocalEndpoints:
    """A local Inference Endpoints API. ``start()`` it, point huggingface_hub at :attr:`api_url` with
    :attr:`token` as its token, ``stop()`` it.

    Most code should call :func:`tgi_course.use_local_endpoints` instead, which does all of that.

    Args:
        state_dir: where endpoint records and server logs live (default ``$TGI_COURSE_ENDPOINTS_DIR`` or
            ``~/.cache/tgi-course/endpoints``).
        port: TCP port on 127.0.0.1; 0 picks a free one.
        minute_seconds: length of a ``scaleToZeroTimeout`` minute, in seconds (tests shorten it).
        **settings: other :class:`ControlPlaneSettings` fields (``user``, ``startup_timeout_s``, ``server_command``).
    """

    def __init__(
        self,
        state_dir: str | Path | None = None,
        *,
        port: int | None = None,
        minute_seconds: float | None = None,
        **settings: object,
    ) -> None:
        self.settings = ControlPlaneSettings.from_env(state_dir=state_dir, port=port, minute_seconds=minute_seconds, **settings)
        self.url: str | None = None
        self.owned = True  # False when attached to a control plane that another Python process runs
        self._server = None
        self._thread: threading.Thread | None = None
        self._store: EndpointStore | None = None
        self._supervisor = None

    @classmethod
    def attach(cls, url: str, state_dir: str | Path | None = None) -> LocalEndpoints:
        """A handle on a control plane another process runs (it owns the servers; we only point at it)."""
        response = httpx.get(f"{url}/health", timeout=5.0, trust_env=False)
        response.raise_for_status()
        handle = cls(state_dir)
        handle.url, handle.owned = url, False
        return handle

    @property
    def api_url(self) -> str:
        """What ``huggingface_hub.constants.INFERENCE_ENDPOINTS_ENDPOINT`` must be set to."""
        if self.url is None:
            raise RuntimeError("the control plane is not started")
        return f"{self.url}/v2"

    @property
    def token(self) -> str:
        """The token this control plane's API (and its protected endpoints) accept: this user's, made on first
        use and kept in ``control-plane.token`` (mode 0600) in the state folder. Never part of the repr."""
        return user_token(self.settings.state_dir)

    @property
    def running(self) -> bool:
        if not self.owned:
            return self.url is not None
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> LocalEndpoints:
        """Bind, load state from disk, serve. Raises :class:`StateDirBusy` if another control plane owns the folder."""
        if self.running:
            return self
        # Imported here so that `import tgi_course` stays cheap.
        import uvicorn

        from .api import create_app
        from .supervisor import Supervisor

        host = self.settings.host
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, self.settings.port))
        url = f"http://{host}:{sock.getsockname()[1]}"
        store = EndpointStore(self.settings.state_dir)
        try:
            store.acquire(url)
        except StateDirBusy:
            sock.close()
            raise
        supervisor = Supervisor(store, self.settings, url)
        app = create_app(supervisor)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5)
        server = uvicorn.Server(config)
        # The serving thread is also the one that spawns servers: PR_SET_PDEATHSIG ties them to it.
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="tgi-course-endpoints", daemon=True)
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                thread.join(5)
                store.release()
                sock.close()
                raise RuntimeError(f"the local Inference Endpoints control plane did not start (state in {self.settings.state_dir})")
            time.sleep(0.02)
        self.url, self._server, self._thread, self._store, self._supervisor = url, server, thread, store, supervisor
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        """Stop every endpoint server, then the API. Endpoint records stay on disk."""
        atexit.unregister(self.stop)
        if not self.owned:
            self.url = None
            return
        if self._server is not None and self._thread is not None:
            # Servers get SIGTERM, then their own shutdown grace plus 5 s before SIGKILL (process.stop): wait for that.
            stopping_s = self._supervisor.longest_stop_s() if self._supervisor is not None else 0.0
            self._server.should_exit = True
            self._thread.join(60 + stopping_s)
        if self._store is not None:
            self._store.release()
        self._server = self._thread = self._store = self._supervisor = None
        self.url = None

    def __enter__(self) -> LocalEndpoints:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url or "not started"
        owner = "" if self.owned else ", attached"
        return f"LocalEndpoints({where}{owner}, state_dir='{self.settings.state_dir}')"
