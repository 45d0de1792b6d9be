"""`make course` as a learner meets it: JupyterLab in a real (headless) browser, notebook 00 run from the menu."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from browser_helpers import browser_page, make_course, run_all_cells_in_jupyterlab

ROOT = Path(__file__).resolve().parents[2]

# Set-up of `make course` (stamps already fresh), JupyterLab, a kernel, the model server: minutes on 2 busy cores.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def test_make_course_opens_notebook_00_and_runs_every_cell(tmp_path):
    with make_course([ROOT / "notebooks" / "00_welcome.ipynb"], tmp_path) as lab, browser_page() as page:
        run = run_all_cells_in_jupyterlab(page, lab, "00_welcome.ipynb", timeout=600)
        log = lab.log.read_text(errors="replace")
    assert run.code_cells >= 5
    assert run.executed == run.code_cells, f"{run.executed} of {run.code_cells} cells ran; make course's log:\n{log[-3000:]}"
    assert run.errors == [], f"error output in the browser: {run.errors}"
    if os.geteuid() == 0:
        # As root (CI, Docker, Codespaces) JupyterLab refuses to start without --allow-root: make course adds it and says why.
        assert "starting JupyterLab with --allow-root" in log
