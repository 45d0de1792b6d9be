"""The course's pictures: the committed SVGs are exactly what tgi_course.course.diagrams draws, and every
image a notebook's markdown shows is a small file in the repository (the course runs offline)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from tgi_course.course import diagrams

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MAX_IMAGE_BYTES = 30_000
# ![alt](path "title") in markdown, and <img src="path"> in HTML.
IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|<img\b[^>]*\bsrc=[\"']([^\"']+)[\"']", re.I)


def _images(path: Path) -> list[str]:
    cells = nbformat.read(path, as_version=4).cells
    return [m.group(1) or m.group(2) for cell in cells if cell.cell_type == "markdown" for m in IMAGE.finditer(cell.source)]


@pytest.mark.parametrize("name", sorted(diagrams.DIAGRAMS))
def test_committed_diagram_is_what_the_code_draws(name: str) -> None:
    committed = diagrams.IMAGES / name
    assert committed.is_file(), f"{committed} is missing: run `python -m tgi_course.course.diagrams`"
    assert diagrams.render(name) == committed.read_bytes(), f"{name} differs from its code: run `python -m tgi_course.course.diagrams`"


@pytest.mark.parametrize("name", sorted(diagrams.DIAGRAMS))
def test_diagram_is_drawn_the_same_twice_and_shown_somewhere(name: str) -> None:
    first, second = diagrams.render(name), diagrams.render(name)
    assert first == second, f"{name}: two renders differ (a date, an id or a hash that is not fixed)"
    assert b"<dc:date>" not in first and len(first) < MAX_IMAGE_BYTES, (name, len(first))
    shown = [path.name for path in NOTEBOOKS if f"images/{name}" in _images(path)]
    assert shown, f"no notebook shows images/{name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_images_in_markdown_are_small_files_in_the_repo(path: Path) -> None:
    for ref in _images(path):
        assert not re.match(r"^[a-z]+:", ref, re.I), f"{path.name}: {ref} is not a file in the repo (the course runs offline)"
        image = (path.parent / ref).resolve()
        assert image.is_file(), f"{path.name} shows {ref}, which does not exist"
        assert image.is_relative_to(ROOT), f"{path.name}: {ref} lies outside the repository"
        assert image.stat().st_size < MAX_IMAGE_BYTES, f"{path.name}: {ref} is {image.stat().st_size} bytes (at most {MAX_IMAGE_BYTES})"
