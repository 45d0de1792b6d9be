"""A real browser for the course's tests: Debian's chromium driven by playwright, and `make course` in the
background.

playwright's own browser download cannot work offline, so the tests hand it the system's chromium through
``executable_path``. JupyterLab runs exactly as a learner starts it, through ``make course``, on a copy of the
notebooks (the browser autosaves, and the stored outputs in ``notebooks/`` must stay as they are).

Every process ``make course`` starts, and every process those start (kernels, the servers notebooks start, an
endpoint's server, node), inherits one marker variable: the tests find what a notebook left running by it, and
never mistake another run's server on the same machine for one of theirs.
"""

from __future__ import annotations

import os
import re
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
import psutil
import pytest

from tgi_course.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
# What each notebook's run took, for the table conftest.py prints at the end: (name, cells run, code cells,
# seconds of Run All, seconds from opening to a shut-down kernel, problems).
COURSE_RUNS = pytest.StashKey[list]()


def format_course_run(line: tuple) -> str:
    name, executed, count, run_s, wall_s, problems = line
    return f"{name:36} {executed:3}/{count:<3} cells ran   Run All {run_s:6.1f} s   open to shut down {wall_s:6.1f} s   {problems} problem(s)"


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


# Set in the environment of `make course`; everything below it inherits it (LocalServer and the endpoints'
# servers drop server settings from the environment they pass on, not other variables).
MARKER_ENV = "TGI_COURSE_BROWSER_TEST"


@dataclass
class Lab:
    url: str
    token: str
    folder: Path
    log: Path
    marker: str

    def notebook_url(self, name: str, workspace: str | None = None) -> str:
        """``workspace``: a JupyterLab workspace of its own, so the page opens this notebook alone (the default
        workspace would reopen every notebook opened before, each with a new kernel)."""
        where = f"workspaces/{workspace}/tree" if workspace else "tree"
        return f"{self.url}/lab/{where}/{name}?token={self.token}"

    def api(self, route: str) -> list | dict:
        """JupyterLab's REST API, e.g. ``api("kernels")``: the kernels running now."""
        response = httpx.get(f"{self.url}/api/{route}", params={"token": self.token}, timeout=10)
        response.raise_for_status()
        return response.json()

    def shut_down_kernels(self) -> None:
        """Through the REST API: the fallback when the page could not do it."""
        for kernel in self.api("kernels"):
            httpx.delete(f"{self.url}/api/kernels/{kernel['id']}", params={"token": self.token}, timeout=30)

    def processes(self) -> list[psutil.Process]:
        """Every live process started under this ``make course``, found by the marker in its environment."""
        return marked_processes(self.marker)


def marked_processes(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() != psutil.STATUS_ZOMBIE and process.environ().get(MARKER_ENV) == marker:
                found.append(process)
        except (psutil.Error, OSError):  # gone meanwhile, or another user's
            continue
    return found


def describe(processes: list[psutil.Process]) -> str:
    lines = []
    for process in processes:
        try:
            lines.append(f"pid {process.pid}: {' '.join(process.cmdline())[:200]}")
        except psutil.Error:
            lines.append(f"pid {process.pid}: (gone)")
    return "\n".join(lines)


@contextmanager
def make_course(notebooks: list[Path], tmp_path: Path, startup_timeout: float = 300.0) -> Iterator[Lab]:
    """``make course`` on a copy of ``notebooks``, JupyterLab headless on a free port; stopped on exit.

    Its local endpoints (notebook 01) keep their records in ``tmp_path``: the default folder belongs to the
    learner, and one control plane at a time may own a folder, so a run beside this one would collide.
    """
    folder = tmp_path / "course"
    folder.mkdir()
    for path in notebooks:
        _copy_without_outputs(path, folder / path.name)
    token, lab_port, server_port = secrets.token_hex(12), free_port(), free_port()
    log = tmp_path / "make-course.log"
    marker = secrets.token_hex(8)
    env = {**os.environ, MARKER_ENV: marker, "TGI_COURSE_ENDPOINTS_DIR": str(tmp_path / "endpoints")}
    settings = _lab_settings(tmp_path / "lab-settings")
    lab_args = (
        f"--no-browser --port={lab_port} --ServerApp.ip=127.0.0.1 --IdentityProvider.token={token} "
        f"--LabApp.user_settings_dir={settings} --LabApp.workspaces_dir={tmp_path / 'lab-workspaces'}"
    )
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "course", f"PORT={server_port}", f"COURSE_DIR={folder}", f"LAB_ARGS={lab_args}"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group: make, the lab command, JupyterLab, kernels, the server
        )
    lab = Lab(url=f"http://127.0.0.1:{lab_port}", token=token, folder=folder, log=log, marker=marker)
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
def chromium() -> Iterator[object]:
    """Headless chromium (``--no-sandbox``: CI and containers run as root); each page a test opens in it is fresh."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def browser_page(browser: object | None = None) -> Iterator[object]:
    """A playwright page in headless chromium: in ``browser`` (see :func:`chromium`) or in one of its own."""
    if browser is None:
        with chromium() as own, browser_page(own) as page:
            yield page
        return
    # A context of its own: no cookies, storage or open tabs from an earlier page.
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield context.new_page()
    finally:
        context.close()


@dataclass
class CellResult:
    """One code cell after the run: whether it ran, and its error and stderr outputs."""

    number: int  # 1-based among the notebook's code cells
    source: str  # the first line, to tell the learner which cell
    prompt: str  # as the page shows it: "[7]:" ran, "[ ]:" never did, "[*]:" never finished; "" when the input is collapsed
    executed: bool  # the saved execution count is set (the page's prompt when the save did not arrive)
    errors: list[str]  # "Name: message", then the traceback
    stderr: list[str]


@dataclass
class NotebookRun:
    code_cells: int
    executed: int
    errors: list[str]  # every error and stderr output's text, in cell order
    cells: list[CellResult]
    seconds: float  # from Run All Cells to an idle kernel with no cell left queued
    saved: bool = True  # False: the page's save did not arrive, and the cells are read off the page alone

    def problems(self, name: str, limit: int = 1500) -> list[str]:
        """What a learner would see go wrong, one entry per cell: error output, stderr, not run."""
        found = []
        for cell in self.cells:
            where = f"{name} code cell {cell.number} ({cell.source!r})"
            for text in cell.errors:  # "Name: message", then the traceback's end, where the failing line is
                head, _, traceback = text.partition("\n")
                found.append(f"{where}: error output: {head}\n{_tail(traceback, limit)}")
            for text in cell.stderr:
                found.append(f"{where}: stderr output:\n{_tail(text, limit)}")
            if not cell.executed:
                found.append(f"{where}: did not run (prompt {cell.prompt!r})")
        if not self.saved:
            found.append(f"{name}: File > Save Notebook did not reach the disk within a minute (cells read off the page)")
        if len(self.cells) != self.code_cells:
            found.append(f"{name}: the page shows {len(self.cells)} code cells, the file has {self.code_cells}")
        return found


def _tail(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


# Per code cell, in page order: the input prompt and each output's mime type and text. textContent, not
# innerText: a collapsed solution cell hides its input, and innerText of a hidden element says nothing.
_CELLS_JS = """() => Array.from(document.querySelectorAll('.jp-Notebook .jp-Cell.jp-CodeCell')).map(cell => ({
  prompt: (cell.querySelector('.jp-InputPrompt')?.textContent || '').trim(),
  outputs: Array.from(cell.querySelectorAll('.jp-OutputArea-child')).map(child => ({
    mimes: Array.from(child.querySelectorAll('[data-mime-type]')).map(node => node.getAttribute('data-mime-type')),
    text: child.querySelector('.jp-OutputArea-output')?.textContent || '',
  })),
}))"""


ERROR_MIME = "application/vnd.jupyter.error"
STDERR_MIME = "application/vnd.jupyter.stderr"


def _page_cells(page) -> list[dict]:
    return page.evaluate(_CELLS_JS)


def _menu(page, menu: str, item: str) -> None:
    import re

    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(rf"^{re.escape(menu)}$")).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(rf"^{re.escape(item)}$")).first.click()


def open_notebook(page, lab: Lab, name: str, workspace: str | None = None, kernel_timeout: float = 180.0) -> int:
    """Open ``name`` and wait for every code cell on the page and an idle kernel; the number of code cells."""
    import nbformat

    count = sum(1 for cell in nbformat.read(lab.folder / name, as_version=4).cells if cell.cell_type == "code")
    page.goto(lab.notebook_url(name, workspace))
    prompts = page.locator(".jp-Notebook .jp-CodeCell .jp-InputPrompt")
    idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    select_kernel = page.locator(".jp-Dialog", has_text="Select Kernel")
    # The page renders cells in batches after the first one appears: wait for all of them, this notebook's
    # session with a kernel, and the kernel idle. On a busy machine the page can ask which kernel to start
    # (it did not have the kernel list yet when it opened the notebook): the preselected one is the
    # notebook's own, and a learner would click Select, so the test does.
    deadline = time.monotonic() + kernel_timeout
    while time.monotonic() < deadline:
        if select_kernel.count():
            select_kernel.locator(".jp-Dialog-button.jp-mod-accept").click()
        sessions = [s for s in lab.api("sessions") if s.get("path", "").endswith(name) and s.get("kernel")]
        if prompts.count() >= count and sessions and idle.count():
            return count
        time.sleep(0.5)
    dialogs = page.locator(".jp-Dialog").all_inner_texts()
    raise AssertionError(f"{name}: no idle kernel within {kernel_timeout:.0f} s" + (f"; the page shows a dialog: {dialogs}" if dialogs else ""))


def run_all_cells(page, lab: Lab, name: str, count: int, timeout: float = 600.0) -> NotebookRun:
    """Run > Run All Cells on the open notebook; wait until no cell is queued or running and the kernel is
    idle (all cells done, or the run stopped at an error), then read every code cell's prompt off the page
    and its outputs from the notebook as the page saves it."""

    def started() -> bool:
        return any(cell["prompt"] not in ("", "[ ]:") for cell in _page_cells(page))

    # The Run menu acts on the current notebook: until the page has made it current, "Run All Cells" does
    # nothing. Click into the notebook, run all, and try again if no cell has started a few seconds later.
    begun = time.monotonic()
    for _ in range(5):
        page.locator(".jp-Notebook .jp-Cell").first.click()
        _menu(page, "Run", "Run All Cells")
        begun = time.monotonic()
        while time.monotonic() < begun + 10 and not started():
            time.sleep(0.5)
        if started():
            break
        page.keyboard.press("Escape")
    deadline = begun + timeout
    idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    settled = 0
    while time.monotonic() < deadline:
        # Run All queues every cell at once ("[*]:"); a cell that raises dequeues the rest ("[ ]:").
        busy = any("*" in cell["prompt"] for cell in _page_cells(page))
        settled = 0 if busy or idle.count() == 0 else settled + 1
        if settled >= 3:  # idle on three looks in a row: not the gap between two cells
            break
        time.sleep(0.5)
    seconds = time.monotonic() - begun
    shown = _page_cells(page)
    saved = _save_and_read(page, lab, name)
    cells = []
    for number, cell in enumerate(shown, start=1):
        if saved is not None and number <= len(saved):
            source, execution_count, errors, stderr = saved[number - 1]
            executed = execution_count is not None
        else:  # not saved: the page's text, where an error's traceback is rendered as stderr too
            source, executed, errors = "", _ran(cell["prompt"]), []
            stderr = [o["text"] for o in cell["outputs"] if STDERR_MIME in o["mimes"] or ERROR_MIME in o["mimes"]]
        cells.append(CellResult(number, source, cell["prompt"], executed, errors, stderr))
    return NotebookRun(
        code_cells=count,
        executed=sum(cell.executed for cell in cells),
        errors=[text for cell in cells for text in cell.errors + cell.stderr],
        cells=cells,
        seconds=seconds,
        saved=saved is not None,
    )


def _ran(prompt: str) -> bool:
    return prompt.startswith("[") and prompt.rstrip(":").strip("[]").strip().isdigit()


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _save_and_read(page, lab: Lab, name: str, timeout: float = 60.0) -> list[tuple[str, int | None, list[str], list[str]]] | None:
    """File > Save Notebook, then each code cell as saved: first line, execution count, errors, stderr; None
    if the save did not reach the disk. The saved notebook is what the page holds, and it tells what the page
    cannot: the page renders an error's traceback as stderr text (only the saved ``output_type`` "error" has
    the exception's name), and shows no prompt for a cell whose input is collapsed (the exercises' solutions)."""
    import nbformat

    path = lab.folder / name
    before = path.stat().st_mtime_ns
    _menu(page, "File", "Save Notebook")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.stat().st_mtime_ns != before:
            try:
                code = [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
                break
            except Exception:  # read while being written
                pass
        time.sleep(0.5)
    else:
        return None
    found = []
    for cell in code:
        errors = [
            f"{output.ename}: {output.evalue}\n" + _ANSI.sub("", "\n".join(output.traceback))
            for output in cell.outputs
            if output.output_type == "error"
        ]
        stderr = [output.text for output in cell.outputs if output.output_type == "stream" and output.name == "stderr"]
        found.append(((cell.source.strip().splitlines() or [""])[0][:80], cell.execution_count, errors, stderr))
    return found


def shut_down_kernel(page, lab: Lab, timeout: float = 60.0) -> None:
    """Kernel > Shut Down Kernel, as a learner ends a notebook; wait until JupyterLab lists no kernel."""
    _menu(page, "Kernel", "Shut Down Kernel")
    deadline = time.monotonic() + timeout
    while lab.api("kernels") and time.monotonic() < deadline:
        time.sleep(0.5)


def run_all_cells_in_jupyterlab(page, lab: Lab, name: str, timeout: float = 600.0) -> NotebookRun:
    """Open ``name`` in JupyterLab, run every cell from the Run menu, wait until the kernel is done, and
    collect the error and stderr outputs the learner would see."""
    count = open_notebook(page, lab, name)
    return run_all_cells(page, lab, name, count, timeout=timeout)
