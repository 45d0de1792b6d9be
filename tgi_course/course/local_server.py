"""Run the Messages API server in a background process that never outlives its owner."""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from ..config import ServerConfig, run_wide_env, server_env_names
from ..processes import free_port, launch_command

__all__ = ["LocalServer", "free_port"]

class LocalServer:
    """``tgi-course serve`` in a child process, on a free loopback port unless told otherwise.

    Settings are :class:`~tgi_course.config.ServerConfig` field names, e.g.
    ``LocalServer(messages_api_enabled=True, max_total_tokens=1024)``. Of the server variables in this
    process's environment only the run-wide ones (``DTYPE``, see :data:`~tgi_course.config.RUN_WIDE_SETTINGS`)
    apply; keyword settings win over them.
    """

    def __init__(self, *, port: int | None = None, startup_timeout: float = 600.0, log_path: str | os.PathLike | None = None, **settings: Any) -> None:
        settings.setdefault("hostname", "127.0.0.1")
        self.config = ServerConfig.from_sources(env=run_wide_env(), overrides={**settings, "port": port or free_port(settings["hostname"])})
        self.startup_timeout = startup_timeout
        if log_path is None:
            handle, log_path = tempfile.mkstemp(prefix="tgi-course-server-", suffix=".log")
            os.close(handle)  # only the name is needed; the child process opens the file itself
        self.log_path = Path(log_path)
        self._process: subprocess.Popen[bytes] | None = None

    # -- addresses -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.config.hostname in {"0.0.0.0", "::"} else self.config.hostname
        return f"http://{host}:{self.config.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1/"

    @property
    def api_key(self) -> str:
        # The OpenAI clients refuse an empty key; any string works when the server has no API_KEY.
        return self.config.api_key or "-"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> LocalServer:
        if self.running:
            return self
        # Settings the notebook's own environment may carry must not leak in: this server's are explicit.
        env = {k: v for k, v in os.environ.items() if k not in server_env_names()}
        env.update(self.config.to_env())
        log = open(self.log_path, "ab")
        self._process = subprocess.Popen(
            launch_command([sys.executable, "-m", "tgi_course", "serve"]),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        atexit.register(self.stop)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError(f"the server exited during start-up:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the server did not become healthy within {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (for measuring it: RSS, threads)."""
        return self._process.pid if self.running else None  # type: ignore[union-attr]

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM, so running requests may finish within the server's SHUTDOWN_GRACE_SECONDS; SIGKILL only
        if it has not exited ``timeout`` seconds later (default: the grace period plus 5 s)."""
        process, self._process = self._process, None
        if process is None:
            return
        if timeout is None:
            timeout = self.config.shutdown_grace_seconds + 5.0
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        try:
            atexit.unregister(self.stop)
        except Exception:
            pass

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalServer(url={self.url!r}, running={self.running})"

