"""Serving until told to stop, then stopping cleanly: the drain that SIGTERM and Ctrl-C start.

On the first SIGTERM or SIGINT: health answers 503 and new inference requests are refused (uvicorn also
closes the listening socket), running requests may finish for SHUTDOWN_GRACE_SECONDS, then every request
still open ends with an error event and ``[DONE]`` (a 503 if it is not streamed). The process exits within
the grace period plus a few seconds. A second Ctrl-C stops at once, as uvicorn does.
"""

from __future__ import annotations

import logging
import threading
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger(__name__)

# What uvicorn may still spend after the grace period: streams that just got their error event flush and close.
CLOSE_MARGIN_SECONDS = 3.0


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain of the engine between the signal and uvicorn's own shutdown."""

    def __init__(self, config: uvicorn.Config, state: Any) -> None:
        super().__init__(config)
        self._state = state
        self._drain: threading.Thread | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain is None:
            self._drain = threading.Thread(target=drain, args=(self._state,), name="tgi-course-drain", daemon=True)
            self._drain.start()
        super().handle_exit(sig, frame)


def drain(state: Any) -> None:
    """Refuse new work now; give running work the grace period; then end whatever is left."""
    grace = state.config.shutdown_grace_seconds
    state.draining = True
    state.engine.close()
    running = state.engine.tracked
    log.info("stopping: %d sequence(s) running, %.0f s to finish", running, grace)
    if not state.engine.wait_idle(grace):
        log.warning("stopping: grace period over, ending %d sequence(s)", state.engine.tracked)
        state.engine.abort_all(f"the server is shutting down (SHUTDOWN_GRACE_SECONDS={grace:g} passed)", "shutdown")


def serve(app: Any, host: str, port: int) -> None:
    """Run ``app`` until SIGTERM/SIGINT, then drain (see the module docstring)."""
    from sse_starlette.sse import AppStatus

    # sse-starlette cuts every open stream the moment uvicorn sees a signal; the drain ends them instead.
    AppStatus.disable_automatic_graceful_drain()
    state = app.state.tgi
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False,
        timeout_graceful_shutdown=int(state.config.shutdown_grace_seconds + CLOSE_MARGIN_SECONDS) + 1,
    )
    DrainingServer(config, state).run()
