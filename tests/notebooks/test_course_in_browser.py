"""The whole course as a learner meets it: every notebook opened in `make course`'s JupyterLab, in headless
chromium, in order, each standalone with a kernel of its own, run from the Run menu.

nbval already runs every cell and compares outputs; this checks what nbval cannot: the notebooks in the
learner's JupyterLab and environment (``make course``'s shared server, no nbval settings), one after another
in one lab, with nothing left running between them. It asserts nothing about the notebooks' content, only
that every code cell ran and none shows an error or stderr output, so notebooks can change freely.

One test per notebook, sharing one ``make course`` (module-scoped): a failing notebook is reported on its own
with the cell and the error, the others still run, the summary at the end has each notebook's time, and
``make test-browser BROWSER_ARGS="-k 05_"`` reruns one. ``make test`` deselects these (see conftest.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest
from browser_helpers import (
    COURSE_RUNS,
    browser_page,
    chromium,
    describe,
    format_course_run,
    make_course,
    open_notebook,
    run_all_cells,
    shut_down_kernel,
)

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# One notebook's run on 2 busy cores is 10 s to 2 min under nbval; the first test also pays make course's start.
pytestmark = [pytest.mark.slow, pytest.mark.browser_course, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One `make course` for the whole course, as a learner keeps one open; nothing it started may outlive it."""
    with make_course(NOTEBOOKS, tmp_path_factory.mktemp("browser-course")) as lab:
        yield lab
    left = _wait_gone(lab.processes, 30)
    _kill(left)
    assert not left, f"still running after make course stopped:\n{describe(left)}"


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def lab_processes(lab) -> set[int]:
    """The processes of `make course` itself (make, the lab command, its server, JupyterLab), before any
    notebook ran: any other process under it belongs to a notebook."""
    return {process.pid for process in lab.processes()}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_in_jupyterlab(notebook: Path, lab, browser, lab_processes: set[int], request) -> None:
    name = notebook.name
    began = time.monotonic()
    failures = []
    if lab.api("kernels"):
        failures.append(f"{name}: a kernel from an earlier notebook was still running when it started")
        lab.shut_down_kernels()
    # A fresh page (a browser context of its own) and a JupyterLab workspace of its own: this notebook alone.
    with browser_page(browser) as page:
        try:
            count = open_notebook(page, lab, name, workspace=f"course-{notebook.stem}")
            run = run_all_cells(page, lab, name, count, timeout=900)
            shut_down_kernel(page, lab)
        finally:
            if lab.api("kernels"):  # the UI did not stop it (or the test broke off): the next notebook starts clean all the same
                failures.append(f"{name}: its kernel still ran after Kernel > Shut Down Kernel")
                lab.shut_down_kernels()
    # With the kernel gone, so must be every server, endpoint and node process the notebook started.
    left = _wait_gone(lambda: [p for p in lab.processes() if p.pid not in lab_processes], 60)
    if left:
        failures.append(f"{name}: still running after its kernel was shut down:\n{describe(left)}")
        _kill(left)
    problems = run.problems(name)
    line = (name, run.executed, run.code_cells, run.seconds, time.monotonic() - began, len(problems))
    request.config.stash[COURSE_RUNS].append(line)
    _report_now(request.config, line)
    failures += problems
    assert not failures, "\n\n".join(failures)


def _report_now(config, line: tuple) -> None:
    """The notebook's line at once, not only in the summary: a run cut short still says how far it got."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(format_course_run(line))


def _wait_gone(find, timeout: float) -> list:
    # A stopped server has its shutdown grace, then SIGKILL: give it that long before calling it left over.
    deadline = time.monotonic() + timeout
    while (left := find()) and time.monotonic() < deadline:
        time.sleep(1)
    return left


def _kill(processes: list) -> None:
    """Processes this run started and reported as left over: gone, so that they do not spoil what follows."""
    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            pass
