"""The ``browser_course`` marker: tests that run only when asked for (``-m browser_course``, as ``make test-browser`` does).

The whole course in a browser takes minutes and repeats what nbval already checks cell by cell, so ``make
test`` (which collects every file under tests/) deselects it; CI runs it as a step of its own (``.ci/run``).
"""

from __future__ import annotations

import pytest
from browser_helpers import COURSE_RUNS, format_course_run

BROWSER_COURSE = "browser_course"


def pytest_configure(config: pytest.Config) -> None:
    config.stash[COURSE_RUNS] = []
    config.addinivalue_line("markers", f"{BROWSER_COURSE}: the whole course through make course's JupyterLab in chromium (make test-browser)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Deselected, not skipped: they are not left undone, they run as a step of their own (make test-browser, which
    # .ci/run calls after make test), and pytest's summary then says "deselected" rather than "skipped".
    if BROWSER_COURSE in (config.option.markexpr or ""):
        return
    browser_course = [item for item in items if item.get_closest_marker(BROWSER_COURSE)]
    if browser_course:
        config.hook.pytest_deselected(items=browser_course)
        items[:] = [item for item in items if not item.get_closest_marker(BROWSER_COURSE)]


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """The course's timings in one table: how long a learner's Run All takes, notebook by notebook."""
    runs = config.stash.get(COURSE_RUNS, [])
    if not runs:
        return
    terminalreporter.section("the course in JupyterLab (Run All Cells, per notebook)")
    for line in runs:
        terminalreporter.write_line(format_course_run(line))
    run_s, wall_s = sum(line[3] for line in runs), sum(line[4] for line in runs)
    terminalreporter.write_line(f"{'total':36} {'':13}   Run All {run_s:6.1f} s   open to shut down {wall_s:6.1f} s")
