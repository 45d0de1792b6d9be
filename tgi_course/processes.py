"""Child processes that never outlive their owner, shared by LocalServer and the endpoints control plane.

``PR_SET_PDEATHSIG`` (Linux) makes the kernel kill a child when the thread that spawned it dies, even
when the owner is SIGKILLed. It is set by a few lines of Python that run *after* exec and then exec
the real command (the setting survives ``execve``), not by ``preexec_fn``: Python code between fork and
exec can deadlock in a process with threads (a notebook kernel has several), and did.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence

# Run with ``python -c`` as the first program of the new process: ask the kernel to SIGKILL us when
# our parent thread exits, make sure the parent did not die already (then nobody would), exec the command.
_LAUNCHER = """
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    os._exit(1)
os.execvp(sys.argv[2], sys.argv[2:])
"""


def launch_command(command: Sequence[str]) -> list[str]:
    """``command`` wrapped so that it dies with this process (on Linux; elsewhere unchanged)."""
    if not sys.platform.startswith("linux"):
        return list(command)
    return [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *command]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
