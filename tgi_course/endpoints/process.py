"""Starting and stopping one local Messages API server process.

Guarantee: no server outlives the Python process that started it. Three layers, because each
alone has a gap:
- ``PR_SET_PDEATHSIG`` (Linux) makes the kernel SIGKILL the server when the *thread* that spawned it
  dies, which covers a crashed or SIGKILLed owner. The control plane therefore spawns from its
  long-lived event-loop thread, never from a short-lived worker thread.
- The control plane stops every server on shutdown and at interpreter exit (atexit).
- On start, a record whose process is still alive from an earlier session is killed (see the supervisor).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

_PR_SET_PDEATHSIG = 1


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Resolved once in the parent: the child (between fork and exec) should do as little as possible.
_PRCTL = _load_prctl()


def _die_with_parent(parent_pid: int) -> None:
    """preexec_fn: ask the kernel to SIGKILL this child when its parent thread exits."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died between fork() and prctl(): then nobody will signal us.
    if os.getppid() != parent_pid:
        os._exit(1)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# Server settings a parent process might have exported for its own server: they must not leak into
# an endpoint, whose only configuration is its payload (like a container, which sees none of the host's).
def _server_setting_names() -> set[str]:
    from ..config import SETTINGS  # standard library only: cheap

    return {name for setting in SETTINGS.values() for name in setting.env}


def build_env(
    base: Mapping[str, str], endpoint_env: Mapping[str, str], *, model_id: str, host: str, port: int
) -> dict[str, str]:
    """The server's environment: the parent's minus server settings, plus the endpoint's, plus where to listen."""
    blocked = _server_setting_names()
    env = {key: value for key, value in base.items() if key not in blocked}
    env.update(endpoint_env)
    env.update({"MODEL_ID": model_id, "HOSTNAME": host, "PORT": str(port)})
    # Logs go to a file that the learner may read: no progress bars in it.
    env.setdefault("TQDM_DISABLE", "1")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return env


def spawn(command: Sequence[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen:
    """Start a server with output appended to ``log_path``. Call from a thread that lives as long as the server."""
    with open(log_path, "ab") as log:
        log.write(f"[control plane] starting: {' '.join(command)} (MODEL_ID={env.get('MODEL_ID')}, PORT={env.get('PORT')})\n".encode())
        log.flush()
        return subprocess.Popen(
            list(command),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C in the owner's terminal must not kill servers behind the control plane's back,
            # and stop() can signal the whole group (including anything the server itself started).
            start_new_session=True,
            preexec_fn=lambda parent=os.getpid(): _die_with_parent(parent),
        )


def started_at(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def stop(proc: subprocess.Popen, grace_s: float = 5.0) -> int | None:
    """SIGTERM the server's process group, SIGKILL it after ``grace_s``; return the exit code."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def kill_stale(pid: int, pid_started: float | None) -> bool:
    """Kill a server left alive by an earlier session; True if one was found. Checks it is really ours."""
    try:
        process = psutil.Process(pid)
        if pid_started is None or abs(process.create_time() - pid_started) > 1.0:
            return False  # the pid was recycled by an unrelated process
        if "tgi_course" not in " ".join(process.cmdline()):
            return False
    except psutil.Error:
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
