"""Notebook 05's RAG pipeline picture names every stage. That it is what the code draws, reproducible, small
and shown in a notebook is checked with the course's other diagrams (test_diagrams.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tgi_course.course import diagrams


def test_the_rag_diagram_has_its_stages_as_text() -> None:
    data = (diagrams.IMAGES / "rag_pipeline.svg").read_bytes()
    root = ET.fromstring(data)
    assert root.tag.endswith("svg")
    text = " ".join("".join(node.itertext()) for node in root.iter() if node.tag.endswith("text"))
    for label in ("Split", "Embed", "Chroma", "Prompt", "Answer"):
        assert label in text, label
