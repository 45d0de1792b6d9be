"""The course's diagrams, drawn with matplotlib into small, reproducible SVG files under notebooks/images/.

Run ``python -m tgi_course.course.diagrams`` after changing a drawing; tests/notebooks/test_diagrams.py
checks that the committed files are exactly what this code draws. Reproducible means: text kept as SVG
text (``svg.fonttype: none``, also what keeps the files small), a fixed ``svg.hashsalt`` for the ids
matplotlib generates, and no date in the metadata.

Each diagram is a function that returns a :class:`~matplotlib.figure.Figure`, registered in
:data:`DIAGRAMS` under the file name it is written to.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure  # no pyplot: a Figure saves itself, and no GUI backend is touched
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

IMAGES = Path(__file__).resolve().parents[2] / "notebooks" / "images"

# What makes two runs write the same bytes (matplotlib 3.11: see the module docstring).
SVG_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "tgi-course",
    "svg.id": None,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 9,
}
SVG_METADATA = {"Date": None, "Creator": "tgi_course.course.diagrams (matplotlib)"}

# Colours shared by the course's pictures: the client's side, the server's side, and the model.
CLIENT = "#dbe9f6"
SERVER = "#fde9c9"
MODEL = "#e4d7f0"
EDGE = "#3b3b3b"


def _box(ax, x: float, y: float, w: float, h: float, title: str, body: str, colour: str) -> None:
    ax.add_patch(
        FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", facecolor=colour, edgecolor=EDGE, linewidth=1)
    )
    ax.text(x + w / 2, y + h - 0.17, title, ha="center", va="top", fontsize=10, fontweight="bold")
    ax.text(x + w / 2, y + h - 0.45, body, ha="center", va="top", fontsize=8, linespacing=1.35)


def _arrow(ax, start: tuple[float, float], end: tuple[float, float], colour: str = EDGE, style: str = "-|>", rad: float = 0.0) -> None:
    ax.add_patch(
        FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12, color=colour, linewidth=1.3, connectionstyle=f"arc3,rad={rad}")
    )


def request_path() -> Figure:
    """A chat request's way from the learner's code to the model, and the tokens' way back as SSE."""
    fig = Figure(figsize=(9.2, 3.0))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 9.2)
    ax.set_ylim(0.2, 3.2)
    ax.axis("off")

    # The server's part, framed: what TGI (or vLLM, or this course's server) does behind the route.
    ax.add_patch(
        FancyBboxPatch((3.55, 0.95), 5.5, 2.2, boxstyle="round,pad=0.02,rounding_size=0.1", facecolor="none", edgecolor="#9a9a9a", linestyle="--")
    )
    ax.text(3.65, 3.05, "the server: TGI, vLLM or this course's server", fontsize=8, color="#6a6a6a", va="top")
    ax.text(0.15, 3.05, "your code", fontsize=8, color="#6a6a6a", va="top")

    y, h, w = 1.2, 1.45, 1.6
    boxes = [
        (0.15, "OpenAI client", "client.chat.completions\n.create(messages=...,\nstream=True)", CLIENT),
        (1.85, "base_url", "http://host:port/v1/\n+ api_key\n(what changes)", CLIENT),
        (3.7, "Messages API", "POST /v1/chat/\ncompletions\nchecks the JSON (422)", SERVER),
        (5.5, "chat template", "messages → one\nprompt in the model's\nown layout → tokens", SERVER),
        (7.3, "model", "batched steps:\none new token per\nrequest per step", MODEL),
    ]
    for x, title, body, colour in boxes:
        _box(ax, x, y, w, h, title, body, colour)
    for (x, *_), (next_x, *_) in zip(boxes, boxes[1:]):
        _arrow(ax, (x + w + 0.01, y + h / 2), (next_x - 0.01, y + h / 2))

    # The way back: every token becomes one server-sent event, until [DONE].
    _arrow(ax, (8.1, y - 0.02), (0.95, y - 0.02), colour="#b35900", rad=-0.1)
    ax.text(
        4.55, 0.42,
        'back to the client as server-sent events, one per token:  data: {"choices": [{"delta": {"content": "Hel"}}]}  …  data: [DONE]',
        ha="center", va="center", fontsize=7.5, color="#b35900",
    )
    return fig


def rag_pipeline() -> Figure:
    """Notebook 05's RAG pipeline (drawn in :mod:`tgi_course.course.rag_diagram`)."""
    from .rag_diagram import figure

    return figure()


DIAGRAMS: dict[str, Callable[[], Figure]] = {
    "request_path.svg": request_path,
    "rag_pipeline.svg": rag_pipeline,
}


def render(name: str) -> bytes:
    """The SVG bytes of one registered diagram, the same on every run."""
    with matplotlib.rc_context(SVG_RC):
        fig = DIAGRAMS[name]()
        out = io.BytesIO()
        fig.savefig(out, format="svg", metadata=SVG_METADATA)
    return out.getvalue()


def write_all(folder: Path = IMAGES) -> list[Path]:
    """Write every registered diagram into ``folder``; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in DIAGRAMS:
        path = folder / name
        path.write_bytes(render(name))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else IMAGES):
        print(f"{path} ({path.stat().st_size} bytes)")
