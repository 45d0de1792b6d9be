"""Suite-wide set-up: notebooks run against one shared local server, started once, stopped at the end."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Endpoint records of this run stay in a folder of its own: parallel runs and a learner's own
    # endpoints (~/.cache/tgi-course/endpoints) never see each other.
    if "TGI_COURSE_ENDPOINTS_DIR" not in os.environ:
        os.environ["TGI_COURSE_ENDPOINTS_DIR"] = tempfile.mkdtemp(prefix="tgi-course-endpoints-")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Notebook 03 runs JavaScript with Node.js; a machine without Node runs every other notebook, and says so.
    if shutil.which("node") is not None:
        return
    js_cells = [item for item in items if Path(item.nodeid.split("::")[0]).name.startswith("03_")]
    if js_cells:
        items[:] = [item for item in items if item not in js_cells]
        config.hook.pytest_deselected(items=js_cells)
        warnings.warn(pytest.PytestWarning("Node.js is not installed: notebook 03 (JavaScript) was not run; install Node 20+ to run it."))


def pytest_collection_finish(session: pytest.Session) -> None:
    has_notebooks = any(item.nodeid.split("::")[0].endswith(".ipynb") for item in session.items)
    if not has_notebooks or os.environ.get("TGI_COURSE_URL"):
        return
    from tgi_course.course.connect import API_KEY_ENV, URL_ENV
    from tgi_course.course.local_server import LocalServer

    server = LocalServer().start()
    # Kernels started by nbval inherit this environment, so every notebook's connect() finds the server.
    os.environ[URL_ENV], os.environ[API_KEY_ENV] = server.url, server.api_key
    session.config._tgi_course_server = server  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    server = getattr(config, "_tgi_course_server", None)
    if server is not None:
        server.stop()
