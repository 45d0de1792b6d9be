"""Run JavaScript from a Python notebook with Node.js: the ``%%node`` cell magic.

Notebook 03 teaches the npm ``openai`` package. Rather than a second Jupyter kernel (which would need
its own kernelspec, and could not start the course's local server by itself), each JavaScript cell is
handed to ``node`` as an ES module. The Python kernel keeps the connection, so the notebook still runs
on its own, and nbval checks the JavaScript cells' output like any other.

Usage in a notebook::

    %load_ext tgi_course.course.js
    from tgi_course.course import js
    js.use_connection(conn)       # exports TGI_BASE_URL, TGI_API_KEY and TGI_MODEL to node

    %%node
    import OpenAI from "openai";
    ...

The code runs from the folder holding ``package.json`` (the repository root), so ``import ... from
"openai"`` resolves to the version pinned in ``package-lock.json``. Top-level ``await`` works: the code is
passed with ``--input-type=module``. (``package.json`` has no ``"type": "module"`` on purpose: JupyterLab's
start-up node check, a CommonJS script inside ``.venv/``, finds that file and would fail with it.)
"""

from __future__ import annotations

import codecs
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

__all__ = ["NodeError", "load_ipython_extension", "node_project_dir", "node_status", "run_node", "use_connection"]

#: What a learner without Node.js reads (notebook 03 prints it; ``%%node`` cells raise it).
HOW_TO_GET_NODE = (
    "Node.js 20 or newer runs this notebook's JavaScript cells and is not installed here (no `node` on PATH). "
    "Install it with your system's package manager (Debian/Ubuntu: `sudo apt install nodejs npm`; macOS: "
    "`brew install node@20`; conda: `conda install -c conda-forge nodejs=20`; Windows: the installer from "
    "nodejs.org), run `make setup` again (it runs `npm ci`), then restart this notebook's kernel. "
    "Every other notebook of the course works without Node."
)

#: Extra environment variables for every ``%%node`` cell; :func:`use_connection` fills it.
NODE_ENV: dict[str, str] = {}


class NodeError(RuntimeError):
    """Node.js is missing, the npm packages are not installed, or the script failed."""


def node_project_dir() -> Path:
    """The folder with ``package.json`` and ``node_modules``: the working directory or one of its parents,
    else the repository root of this package."""
    starts = [Path.cwd(), Path(__file__).resolve().parents[2]]
    for start in starts:
        for folder in (start, *start.parents):
            if (folder / "package.json").is_file():
                return folder
    raise NodeError("No package.json found; run the notebook from a checkout of the course.")


def node_status() -> tuple[bool, str]:
    """Whether ``%%node`` cells can run here, and one line saying why (or how to get Node.js)."""
    node = shutil.which("node")
    if node is None:
        return False, HOW_TO_GET_NODE
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    major = int(version.lstrip("v").split(".")[0] or 0)
    if major < 20:
        return False, f"Node.js {version} is too old for the npm `openai` package this course pins: install Node 20 or newer."
    try:
        project = node_project_dir()
    except NodeError as exc:
        return False, str(exc)
    if not (project / "node_modules" / "openai").is_dir():
        return False, f"Node.js {version} is installed, but the npm packages are not: run `make setup` (or `npm ci` in {project})."
    return True, "Node.js 20 or newer, with the npm packages installed: the %%node cells can run"


def use_connection(conn: Any) -> None:
    """Give ``%%node`` cells the server's address, key and model as environment variables."""
    NODE_ENV.update({"TGI_BASE_URL": conn.base_url, "TGI_API_KEY": conn.api_key, "TGI_MODEL": conn.model})


def _pump(fd: int, sink: IO[str]) -> None:
    # Forward node's output as it arrives (whatever bytes are ready), so a streamed answer appears
    # token by token instead of all at once when node exits.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while chunk := os.read(fd, 4096):
        sink.write(decoder.decode(chunk))
        sink.flush()
    sink.write(decoder.decode(b"", final=True))
    sink.flush()


def run_node(code: str, env: Mapping[str, str] | None = None, timeout: float = 300.0) -> None:
    """Run ``code`` as an ES module with Node.js; its stdout and stderr go to this process' streams.

    Raises :class:`NodeError` when node exits with a non-zero status.
    """
    node = shutil.which("node")
    if node is None:
        raise NodeError(HOW_TO_GET_NODE)
    project = node_project_dir()
    if not (project / "node_modules").is_dir():
        raise NodeError(f"npm packages are missing in {project}; run `npm ci` there (or `make setup`).")
    process = subprocess.Popen(
        [node, "--input-type=module", "-"],
        cwd=project,
        # Plain output: ipykernel asks child processes for colours, which would put ANSI codes in the notebook.
        env={**os.environ, "FORCE_COLOR": "0", "NO_COLOR": "1", "NODE_DISABLE_COLORS": "1", **NODE_ENV, **(env or {})},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    pumps = [
        threading.Thread(target=_pump, args=(process.stdout.fileno(), sys.stdout), daemon=True),  # type: ignore[union-attr]
        threading.Thread(target=_pump, args=(process.stderr.fileno(), sys.stderr), daemon=True),  # type: ignore[union-attr]
    ]
    for pump in pumps:
        pump.start()
    assert process.stdin is not None
    process.stdin.write(code.encode("utf-8"))
    process.stdin.close()
    try:
        status = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise NodeError(f"node did not finish within {timeout:.0f} s") from None
    except BaseException:  # an interrupted cell must not leave node running
        process.kill()
        process.wait()
        raise
    finally:
        for pump in pumps:
            pump.join(timeout=5)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    if status != 0:
        raise NodeError(f"node exited with status {status}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext tgi_course.course.js`` registers the ``%%node`` cell magic."""

    def node(line: str, cell: str) -> None:
        run_node(cell)

    ipython.register_magic_function(node, magic_kind="cell", magic_name="node")
