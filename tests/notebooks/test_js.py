"""The `%%node` runner behind notebook 03: Node.js code from a Python notebook, with the pinned npm `openai`."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest

from tgi_course.course import js

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")


def test_package_json_pins_an_openai_version_for_node_20() -> None:
    project = js.node_project_dir()
    manifest = json.loads((project / "package.json").read_text())
    assert manifest["dependencies"]["openai"].startswith("^6.")  # openai 7 needs Node 22
    lock = json.loads((project / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/openai"]["version"].startswith("6.")


def test_runs_an_es_module_with_top_level_await(capfd) -> None:
    js.run_node('const x = await Promise.resolve(41);\nconsole.log("answer", x + 1, { plain: true });')
    out = capfd.readouterr().out
    assert "answer 42 { plain: true }" in out
    assert "\x1b[" not in out  # no ANSI colours in notebook output


def test_imports_the_pinned_openai_package(capfd) -> None:
    if not (js.node_project_dir() / "node_modules" / "openai").is_dir():
        pytest.fail("npm packages are missing: run `npm ci` (make setup does)")
    js.run_node('import OpenAI from "openai";\nimport { VERSION } from "openai/version";\nconsole.log(typeof OpenAI, VERSION);')
    assert capfd.readouterr().out.startswith("function 6.")


def test_failures_raise(capfd) -> None:
    with pytest.raises(js.NodeError, match="status 1"):
        js.run_node('console.error("boom"); process.exit(1);')
    assert "boom" in capfd.readouterr().err


def test_use_connection_exports_the_server(monkeypatch, capfd) -> None:
    monkeypatch.setattr(js, "NODE_ENV", {})
    conn = SimpleNamespace(base_url="http://127.0.0.1:1/v1/", api_key="-", model="m")
    js.use_connection(conn)
    js.run_node("console.log(process.env.TGI_BASE_URL, process.env.TGI_API_KEY, process.env.TGI_MODEL);")
    assert capfd.readouterr().out.strip() == "http://127.0.0.1:1/v1/ - m"


def test_without_node_the_notebook_says_how_to_get_it(monkeypatch) -> None:
    monkeypatch.setattr(js.shutil, "which", lambda name: None)
    ready, message = js.node_status()
    assert not ready and message == js.HOW_TO_GET_NODE and "Node.js 20" in message and "make setup" in message
    with pytest.raises(js.NodeError, match="Every other notebook of the course works without Node"):
        js.run_node("console.log(1);")


def test_with_node_the_status_line_is_the_same_on_every_machine() -> None:
    assert js.node_status() == (True, "Node.js 20 or newer, with the npm packages installed: the %%node cells can run")
