"""The picture of notebook 05's RAG pipeline, drawn with matplotlib: ``notebooks/images/rag_pipeline.svg``.

Two rows. Indexing runs once, when the documents change: pages, split, embed, store. Answering runs for every
question: embed the question with the same model, take the nearest chunks from the store, put them in the
prompt with the question, generate, and return the answer with the chunks' sources.

It is one of the course's diagrams (:data:`tgi_course.course.diagrams.DIAGRAMS`), so it is written, kept
reproducible and tested with them: ``python -m tgi_course.course.diagrams`` rewrites the committed SVG.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["draw", "figure"]

_INDEX, _ANSWER, _STORE = "#dbe9f6", "#fde6cf", "#d9f0d3"  # light blue, light orange, light green
_EDGE = "#4d4d4d"
_W, _H = 1.16, 0.78  # box size, inches (the axes use inches as data units)
_TOP, _BOTTOM = 2.45, 1.05  # row centres


def _x(column: int) -> float:
    return 0.7 + column * 1.3


def _box(ax: Axes, x: float, y: float, title: str, detail: str, colour: str, height: float = _H) -> None:
    """A rounded box whose top part (height ``_H``) is centred on ``y``; taller boxes grow downwards."""
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - _W / 2, y + _H / 2 - height), _W, height, boxstyle="round,pad=0,rounding_size=0.08",
                                facecolor=colour, edgecolor=_EDGE, linewidth=0.8))  # fmt: skip
    ax.text(x, y + 0.17, title, ha="center", va="center", fontsize=9, fontweight="bold")
    ax.text(x, y - 0.12, detail, ha="center", va="center", fontsize=6.5, linespacing=1.25)


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], label: str = "", curve: float = 0.0) -> None:
    ax.annotate("", xy=end, xytext=start,
                arrowprops={"arrowstyle": "-|>", "color": _EDGE, "linewidth": 0.9, "shrinkA": 0, "shrinkB": 0,
                            "connectionstyle": f"arc3,rad={curve}"})  # fmt: skip
    if label:
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        ax.text(mx, my + 0.09, label, ha="center", va="bottom", fontsize=6.5, color="#333333")


def draw(ax: Axes) -> None:
    """Draw the pipeline on ``ax``, whose data units are inches from the figure's lower left corner."""
    ax.set_xlim(0, 9.2)
    ax.set_ylim(0, 3.4)
    ax.axis("off")
    half = _W / 2

    ax.text(0.12, 3.22, "Indexing: once, whenever the documents change", fontsize=8.5, fontstyle="italic", va="center")
    ax.text(0.12, 1.72, "Answering: for every question", fontsize=8.5, fontstyle="italic", va="center")

    top = [
        ("Web pages", "data/corpus over HTTP\nWebBaseLoader"),
        ("Split", "500-character chunks\n50 of overlap"),
        ("Embed", "all-MiniLM-L6-v2\n384 numbers per chunk"),
    ]
    for column, (title, detail) in enumerate(top):
        _box(ax, _x(column), _TOP, title, detail, _INDEX)
        if column:
            _arrow(ax, (_x(column - 1) + half, _TOP), (_x(column) - half, _TOP))

    store_height = _TOP - _BOTTOM + _H
    _box(ax, _x(3), _TOP, "Chroma", "one vector per chunk\nwith its text and\nsource URL", _STORE, store_height)
    # The query half of the store, level with the answering row: what a search returns.
    ax.text(_x(3), _BOTTOM, "search:\nthe k nearest\nchunks", ha="center", va="center", fontsize=6.5, linespacing=1.25)
    _arrow(ax, (_x(2) + half, _TOP), (_x(3) - half, _TOP))

    bottom = {
        0: ("Question", "from the user"),
        2: ("Embed", "the same model\none query vector"),
        4: ("Prompt", "system: instructions\n+ the k chunks\nuser: the question"),
        5: ("Model server", "/v1/chat/completions\ngreedy, a few tokens"),
        6: ("Answer", "with the sources\nof its chunks"),
    }
    for column, (title, detail) in bottom.items():
        _box(ax, _x(column), _BOTTOM, title, detail, _ANSWER)
    _arrow(ax, (_x(0) + half, _BOTTOM), (_x(2) - half, _BOTTOM), "question")
    _arrow(ax, (_x(2) + half, _BOTTOM), (_x(3) - half, _BOTTOM))
    _arrow(ax, (_x(3) + half, _BOTTOM), (_x(4) - half, _BOTTOM))
    _arrow(ax, (_x(4) + half, _BOTTOM), (_x(5) - half, _BOTTOM))
    _arrow(ax, (_x(5) + half, _BOTTOM), (_x(6) - half, _BOTTOM))
    # The question also goes into the prompt itself, as the user turn: an arc under the bottom row.
    _arrow(ax, (_x(0), _BOTTOM - _H / 2), (_x(4), _BOTTOM - _H / 2), curve=0.12)
    ax.text(_x(2), 0.24, "the question itself, as the user turn", ha="center", va="center", fontsize=6.5, color="#333333")


def figure() -> Figure:
    """A new figure (9.2 x 3.4 inches) with the pipeline drawn on it; no pyplot state involved."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.2, 3.4))
    draw(fig.add_axes((0, 0, 1, 1)))
    return fig

