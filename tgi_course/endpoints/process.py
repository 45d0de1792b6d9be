"""Starting and stopping one local Messages API server process.

Guarantee: no server outlives the Python process that started it. Three layers, because each
alone has a gap:
- ``PR_SET_PDEATHSIG`` via :func:`tgi_course.processes.launch_command` kills the server when the
  *thread* that spawned it dies, which covers a crashed or SIGKILLed owner. The control plane therefore
  spawns from its long-lived event-loop thread, never from a short-lived worker thread.
- The control plane stops every server on shutdown and at interpreter exit (atexit).
- On start, a record whose process is still alive from an earlier session is killed (see the supervisor).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from ..config import SETTINGS, ConfigError, ServerConfig, run_wide_env, server_env_names  # standard library only: cheap
from ..processes import free_port, launch_command
from .spec import ENDPOINT_MARKER_ENV, allowed_env_names

__all__ = ["ENDPOINT_MARKER_ENV", "free_port", "launch_command"]  # re-exported for the supervisor

# SIGKILL comes this long after the server's own shutdown grace (SHUTDOWN_GRACE_SECONDS) has run out.
KILL_MARGIN_S = 5.0


# Server settings a parent process might have exported for its own server: they must not leak into
# an endpoint, whose only configuration is its payload (like a container, which sees none of the host's).
def build_env(
    base: Mapping[str, str],
    endpoint_env: Mapping[str, str],
    *,
    endpoint: str,
    model_id: str,
    host: str,
    port: int,
    api_key: str | None = None,
) -> dict[str, str]:
    """The server's environment: the parent's minus server settings, plus the endpoint's, plus where to listen.

    ``endpoint_env`` passes only the names :func:`.spec.allowed_env_names` allows (a payload with others is
    refused before it gets here). ``endpoint`` ("namespace/name") is exported as ``TGI_COURSE_ENDPOINT``: it
    marks the process as this endpoint's server, so a later session can tell it from any other process (see
    :func:`kill_stale`). ``api_key`` becomes the server's ``API_KEY``: only the endpoint URL, which adds it to
    the requests it forwards, can then use the inference routes.
    """
    blocked = server_env_names() | {ENDPOINT_MARKER_ENV}
    env = {key: value for key, value in base.items() if key not in blocked}
    env.update(run_wide_env(base))  # the run's numerics (DTYPE) reach every endpoint; the payload's own win
    allowed = allowed_env_names()
    env.update({key: value for key, value in endpoint_env.items() if key in allowed})
    env.update({"MODEL_ID": model_id, "HOSTNAME": host, "PORT": str(port), ENDPOINT_MARKER_ENV: endpoint})
    if api_key is not None:
        env["API_KEY"] = api_key
    # Logs go to a file that the learner may read: no progress bars in it.
    env.setdefault("TQDM_DISABLE", "1")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return env


def stop_grace_s(env: Mapping[str, str]) -> float:
    """How long :func:`stop` waits after SIGTERM: the server's ``SHUTDOWN_GRACE_SECONDS`` plus :data:`KILL_MARGIN_S`.

    Read from the environment the server gets, the way the server reads it; a value the server would
    refuse falls back to the default (such a server exits at start anyway).
    """
    names = SETTINGS["shutdown_grace_seconds"].env
    try:
        grace = ServerConfig.from_sources(env={name: env[name] for name in names if name in env}).shutdown_grace_seconds
    except (ConfigError, ValueError, TypeError):
        grace = ServerConfig().shutdown_grace_seconds
    return min(max(float(grace), 0.0), 3600.0) + KILL_MARGIN_S


def spawn(command: Sequence[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen:
    """Start a server with output appended to ``log_path``. Call from a thread that lives as long as the server.

    The process gets a ``stop_grace_s`` attribute (see :func:`stop_grace_s`), which :func:`stop` honours.
    """
    with open(log_path, "ab", opener=_private) as log:
        log.write(f"[control plane] starting: {' '.join(command)} (MODEL_ID={env.get('MODEL_ID')}, PORT={env.get('PORT')})\n".encode())
        log.flush()
        proc = subprocess.Popen(
            launch_command(command),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C in the owner's terminal must not kill servers behind the control plane's back,
            # and stop() can signal the whole group (including anything the server itself started).
            start_new_session=True,
        )
    proc.stop_grace_s = stop_grace_s(env)  # type: ignore[attr-defined]
    return proc


def _private(path: str, flags: int) -> int:
    """``open(..., opener=_private)``: a new file is readable by its owner only."""
    return os.open(path, flags, 0o600)


def started_at(pid: int) -> float | None:
    """The process's start time: with the pid, it identifies one process (pids get recycled)."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def stop(proc: subprocess.Popen, grace_s: float | None = None) -> int | None:
    """SIGTERM the server's process group, SIGKILL it after ``grace_s``; return the exit code.

    ``grace_s`` defaults to the process's ``stop_grace_s`` (set by :func:`spawn`: the server's own shutdown
    grace plus :data:`KILL_MARGIN_S`, so that requests still running may finish), else to that of a server
    with default settings.
    """
    if grace_s is None:
        grace_s = getattr(proc, "stop_grace_s", None) or stop_grace_s({})
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def endpoint_of(pid: int) -> str | None:
    """The "namespace/name" a process serves, if it is an endpoint server (None otherwise or if gone)."""
    try:
        return psutil.Process(pid).environ().get(ENDPOINT_MARKER_ENV)
    except psutil.Error:
        return None


def kill_stale(pid: int, pid_started: float | None, endpoint: str) -> bool:
    """Kill a server left alive by an earlier session; True if one was found. Checks it is really that one."""
    try:
        process = psutil.Process(pid)
        if pid_started is None or abs(process.create_time() - pid_started) > 1.0:
            return False  # the pid was recycled by an unrelated process
    except psutil.Error:
        return False
    if endpoint_of(pid) != endpoint:
        return False
    _signal_group(pid, signal.SIGKILL)
    try:
        process.wait(5)
    except psutil.Error:
        pass
    return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the server leads its own session, so its pid is the group id
    except ProcessLookupError:
        pass
    except PermissionError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def wait_gone(pids: Sequence[int], timeout_s: float = 10.0) -> list[int]:
    """Pids still alive after ``timeout_s`` (used by tests and shutdown checks)."""
    deadline = time.monotonic() + timeout_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _alive(pid)]
        if alive:
            time.sleep(0.1)
    return alive


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
