"""Every knob of the local control plane, read once from the environment.

The environment variables exist so that a notebook, a test and a CI job can each choose where state
lives and how fast time passes (``scaleToZeroTimeout`` is in minutes; tests cannot wait minutes).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

STATE_DIR_ENV = "TGI_COURSE_ENDPOINTS_DIR"
MINUTE_SECONDS_ENV = "TGI_COURSE_ENDPOINTS_MINUTE_SECONDS"
STARTUP_TIMEOUT_ENV = "TGI_COURSE_ENDPOINTS_STARTUP_TIMEOUT"
USER_ENV = "TGI_COURSE_ENDPOINTS_USER"
PORT_ENV = "TGI_COURSE_ENDPOINTS_PORT"

# The namespace whoami answers with. Offline there is one user; its name only shows in URLs and reprs.
DEFAULT_USER = "learner"
# First ever load of the default model converts a GGUF (~25 s on 2 cores); leave ample room on a busy laptop.
DEFAULT_STARTUP_TIMEOUT_S = 600.0


def _server_command() -> list[str]:
    # The same interpreter (same venv) runs the servers, so no PATH lookup of a console script is needed.
    return [sys.executable, "-m", "tgi_course", "serve"]


def default_state_dir() -> Path:
    """``$TGI_COURSE_ENDPOINTS_DIR``, else ``<tgi-course cache>/endpoints``."""
    override = os.environ.get(STATE_DIR_ENV)
    if override:
        return Path(override).expanduser()
    # Same rule as tgi_course.models.registry.cache_dir(), without importing the models package
    # (its __init__ imports torch, which a notebook kernel should not pay for just to deploy).
    root = os.environ.get("TGI_COURSE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "tgi-course"
    )
    return Path(root) / "endpoints"


@dataclass(frozen=True)
class ControlPlaneSettings:
    """How one control plane behaves. Build with :meth:`from_env` and override fields as needed."""

    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0: the OS picks a free port; the URL is reported by the control plane
    user: str = DEFAULT_USER
    minute_seconds: float = 60.0  # length of one scaleToZeroTimeout "minute"
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S
    server_command: tuple[str, ...] = field(default_factory=lambda: tuple(_server_command()))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ControlPlaneSettings:
        env = os.environ if env is None else env
        values: dict[str, object] = {"state_dir": default_state_dir()}
        if env.get(MINUTE_SECONDS_ENV):
            values["minute_seconds"] = float(env[MINUTE_SECONDS_ENV])
        if env.get(STARTUP_TIMEOUT_ENV):
            values["startup_timeout_s"] = float(env[STARTUP_TIMEOUT_ENV])
        if env.get(USER_ENV):
            values["user"] = env[USER_ENV]
        if env.get(PORT_ENV):
            values["port"] = int(env[PORT_ENV])
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "state_dir" in overrides and overrides["state_dir"] is not None:
            values["state_dir"] = Path(str(overrides["state_dir"])).expanduser()
        if "server_command" in values:
            values["server_command"] = tuple(values["server_command"])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]
