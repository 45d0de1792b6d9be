"""Plots of a results file: throughput and TTFT against concurrency, one line per target.

    .venv/bin/python -m bench.plot [bench/results/bench-....json]   # default: the latest
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .report import latest, load

# One colour per target, the same in every plot: ours stand out, peers are muted.
STYLE: dict[str, dict[str, Any]] = {
    "tgi-course": {"color": "#d62728", "marker": "o", "label": "tgi-course server (ours, HTTP)"},
    "engine": {"color": "#ff9896", "marker": "D", "label": "tgi-course engine (ours, in-process)"},
    "tgi-course-int4": {"color": "#9467bd", "marker": "o", "label": "tgi-course server, QUANTIZE=int4 (ours, HTTP)"},
    "engine-int4": {"color": "#c5b0d5", "marker": "D", "label": "tgi-course engine, QUANTIZE=int4 (in-process)"},
    "llama-cpp-server": {"color": "#1f77b4", "marker": "s", "label": "llama-cpp-python server"},
    "llama-cpp": {"color": "#aec7e8", "marker": "P", "label": "llama.cpp in-process (Llama)"},
    "transformers-serve": {"color": "#2ca02c", "marker": "^", "label": "transformers serve"},
    "transformers-serve-cb": {"color": "#98df8a", "marker": "v", "label": "transformers serve --continuous-batching"},
    "url": {"color": "#7f7f7f", "marker": "x", "label": "--url server"},
}


def _series(result: dict[str, Any], field: str) -> list[tuple[str, list[int], list[float]]]:
    out = []
    for target in result["targets"]:
        points = [(lv["concurrency"], lv[field]) for lv in target["levels"] if lv["completed"] and lv.get(field) is not None]
        if points:
            out.append((target["name"], [c for c, _ in points], [v for _, v in points]))
    return out


def _axes_common(ax: Any, levels: list[int], title: str, ylabel: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.minorticks_off()
    ax.set_xlabel("concurrent streams (requests sent at once)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)


def _draw(ax: Any, result: dict[str, Any], field: str) -> list[int]:
    levels: set[int] = set()
    for name, xs, ys in _series(result, field):
        style = STYLE.get(name, {"label": name})
        levels.update(xs)
        # A single point (an in-process target measured single-stream) gets a marker, not a line.
        ax.plot(xs, ys, linestyle="-" if len(xs) > 1 else "none", markersize=8 if len(xs) == 1 else 6, linewidth=2, **style)
    return sorted(levels) or [1]


def _legend(ax: Any) -> None:
    # Below the axes: inside, six entries would hide the low-concurrency points that matter most.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)


def throughput_axes(ax: Any, result: dict[str, Any]) -> None:
    levels = _draw(ax, result, "aggregate_tok_s")
    _axes_common(ax, levels, "Throughput: all streams together", "aggregate tokens/s (higher is better)")
    ax.set_ylim(bottom=0)
    _legend(ax)


def ttft_axes(ax: Any, result: dict[str, Any], goal_s: float = 1.5) -> None:
    levels = _draw(ax, result, "ttft_p50_s")
    _axes_common(ax, levels, "Time to first token (median)", "TTFT p50, seconds (lower is better, log scale)")
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    # 0.1, 0.2, 0.5, 1, 2, 5 s read at a glance; matplotlib's default would print 2x10^-1.
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.axhline(goal_s, color="black", linestyle=":", linewidth=1)
    ax.annotate(f"issue 5 goal at 16 streams: {goal_s} s", (levels[0], goal_s), xytext=(0, 4), textcoords="offset points", fontsize=8)
    _legend(ax)


def subtitle(result: dict[str, Any]) -> str:
    w, m = result["workload"], result.get("machine", {})
    load = m.get("load_avg_before") or [None]
    load_text = f", load {load[0]:.2f} at start" if load[0] is not None else ""
    return f"SmolLM2-135M-Instruct, greedy, {w['max_tokens']} new tokens, {m.get('cpu_count', '?')} CPU cores{load_text} — {result['created']}"


def save_plots(path: Path | str) -> list[Path]:
    """PNG files beside the results file: <stem>-throughput.png and <stem>-ttft.png."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    path = Path(path)
    result = load(path)
    written = []
    for suffix, draw in (("throughput", throughput_axes), ("ttft", ttft_axes)):
        fig, ax = plt.subplots(figsize=(8, 5.6), dpi=110)
        draw(ax, result)
        fig.suptitle(subtitle(result), fontsize=8, y=0.995)
        fig.tight_layout()
        out = path.with_name(f"{path.stem}-{suffix}.png")
        fig.savefig(out)
        plt.close(fig)
        written.append(out)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else latest()
    for out in save_plots(path):
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
