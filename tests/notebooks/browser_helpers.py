"""A real browser for the course's tests: Debian's chromium driven by playwright, and `make course` in the
background.

playwright's own browser download cannot work offline, so the tests hand it the system's chromium through
``executable_path``. JupyterLab runs exactly as a learner starts it, through ``make course``, on a copy of the
notebooks (the browser autosaves, and the stored outputs in ``notebooks/`` must stay as they are).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tgi_course.processes import free_port

ROOT = Path(__file__).resolve().parents[2]


def chromium_path() -> str:
    """The system's chromium; under CI a missing browser fails the test (make test installs it), elsewhere it skips."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    message = "no chromium on PATH: `make test` installs Debian's chromium when run as root; else `sudo apt install chromium`"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Lab:
    url: str
    token: str
    folder: Path
    log: Path

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={self.token}"


@contextmanager
def make_course(notebooks: list[Path], tmp_path: Path, startup_timeout: float = 300.0) -> Iterator[Lab]:
    """``make course`` on a copy of ``notebooks``, JupyterLab headless on a free port; stopped on exit."""
    folder = tmp_path / "course"
    folder.mkdir()
    for path in notebooks:
        _copy_without_outputs(path, folder / path.name)
    token, lab_port, server_port = secrets.token_hex(12), free_port(), free_port()
    log = tmp_path / "make-course.log"
    settings = _lab_settings(tmp_path / "lab-settings")
    lab_args = (
        f"--no-browser --port={lab_port} --ServerApp.ip=127.0.0.1 --IdentityProvider.token={token} "
        f"--LabApp.user_settings_dir={settings} --LabApp.workspaces_dir={tmp_path / 'lab-workspaces'}"
    )
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "course", f"PORT={server_port}", f"COURSE_DIR={folder}", f"LAB_ARGS={lab_args}"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group: make, the lab command, JupyterLab, kernels, the server
        )
    lab = Lab(url=f"http://127.0.0.1:{lab_port}", token=token, folder=folder, log=log)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                pytest.fail(f"make course exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(f"{lab.url}/api/status", params={"token": token}, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within {startup_timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield lab
    finally:
        _stop_group(process)


def _copy_without_outputs(source: Path, target: Path) -> None:
    """The notebook with its stored outputs and counts cleared, so every number and output seen is this run's."""
    import nbformat

    nb = nbformat.read(source, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, target)


def _lab_settings(folder: Path) -> Path:
    """JupyterLab user settings for a test: every cell in the page (no virtual scrolling, which leaves cells
    out of the DOM until they are scrolled to) and no news pop-up over the notebook."""
    import json

    for plugin, values in {
        "notebook-extension/tracker": {"windowingMode": "none"},
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }.items():
        path = folder / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    return folder


def _stop_group(process: subprocess.Popen) -> None:
    # SIGINT is what Ctrl-C sends to `make course`: the lab command stops its server, JupyterLab its kernels.
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            # Children of the group may outlive make by a moment; the next signal reaches them too.
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def browser_page() -> Iterator[object]:
    """A playwright page in headless chromium (``--no-sandbox``: CI and containers run as root)."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            yield page
        finally:
            browser.close()


@dataclass
class NotebookRun:
    code_cells: int
    executed: int
    errors: list[str]


def run_all_cells_in_jupyterlab(page, lab: Lab, name: str, timeout: float = 600.0) -> NotebookRun:
    """Open ``name`` in JupyterLab, run every cell from the Run menu, wait until the kernel is done, and
    collect the error and stderr outputs the learner would see."""
    import nbformat

    count = sum(1 for cell in nbformat.read(lab.folder / name, as_version=4).cells if cell.cell_type == "code")
    page.goto(lab.notebook_url(name))
    prompts_locator = page.locator(".jp-Notebook .jp-CodeCell .jp-InputPrompt")
    # The page renders cells in batches after the first one appears: wait for all of them and an idle kernel.
    deadline = time.monotonic() + 180
    while prompts_locator.count() < count and time.monotonic() < deadline:
        time.sleep(0.5)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=180_000)
    # The Run menu acts on the current notebook: until the page has made it current, "Run All Cells" does
    # nothing. Click into the notebook, run all, and try again if no cell has started a few seconds later.
    for _ in range(5):
        page.locator(".jp-Notebook .jp-Cell").first.click()
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        started = time.monotonic() + 10
        while time.monotonic() < started and not any(t.strip() not in ("", "[ ]:") for t in prompts_locator.all_inner_texts()):
            time.sleep(0.5)
        if any(t.strip() not in ("", "[ ]:") for t in prompts_locator.all_inner_texts()):
            break
        page.keyboard.press("Escape")
    deadline = time.monotonic() + timeout
    executed = 0
    while time.monotonic() < deadline:
        prompts = [text.strip() for text in prompts_locator.all_inner_texts()]
        executed = sum(1 for text in prompts if text.startswith("[") and text[1:-2].strip().isdigit())
        if executed == count and not any("*" in text for text in prompts):
            break
        time.sleep(0.5)
    errors = page.locator(
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'], .jp-OutputArea-output .jp-RenderedText[data-mime-type='application/vnd.jupyter.error']"
    ).all_inner_texts()
    return NotebookRun(code_cells=count, executed=executed, errors=errors)
