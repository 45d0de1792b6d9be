"""Where the weights are loaded changes how fast another thread decodes: the measurement behind ``load()``'s thread.

    .venv/bin/python -m bench.loader_thread [--quantize int4] [--rounds 3]

The engine decodes on its own loop thread. Each configuration runs in a fresh process: the model is loaded
either on the main thread (as ``load()`` did before) or on a thread that exits (as it does now), then a
separate thread times decode steps of ``PaddedBatch`` at batch 1 and 16, as the engine runs them. Rounds
alternate the two ways; medians are printed and written to bench/results/loader-thread-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
from typing import Any

from .report import RESULTS, write_record
from .stats import load_avg_1m

_PROBE = r"""
import json, statistics, sys, threading, time
import torch
from tgi_course.engine.runners import PaddedBatch
from tgi_course.models import loading, resolve

where, quantize = sys.argv[1], (sys.argv[2] or None)
source = resolve("default")
if where == "main":
    loaded = loading._load(source, "cpu", "auto", None, quantize)
else:
    loaded = loading.load(source, device="cpu", quantize=quantize, backend="transformers")
steps = {}

def decode():
    for rows in (1, 16):
        logits, batch = PaddedBatch(loaded.model, 0).prefill([[1, 9690, 198, 2683, 359, 253, 5356, 1123, 1] * 3] * rows)
        tokens = logits.argmax(-1).tolist()
        times = []
        for _ in range(40):
            started = time.perf_counter()
            tokens = batch.step(tokens).argmax(-1).tolist()
            times.append(time.perf_counter() - started)
        steps[rows] = statistics.median(times[5:]) * 1000

worker = threading.Thread(target=decode)
worker.start()
worker.join()
print(json.dumps(steps))
"""


def measure(where: str, quantize: str | None) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", _PROBE, where, quantize or ""], capture_output=True, text=True, check=True)
    return {f"batch {k}": v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loader_thread", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quantize", choices=["int4"], default=None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    load_before = load_avg_1m()
    runs: dict[str, list[dict[str, float]]] = {"main thread": [], "thread that exits": []}
    for _ in range(args.rounds):
        runs["main thread"].append(measure("main", args.quantize))
        runs["thread that exits"].append(measure("thread", args.quantize))
    medians: dict[str, Any] = {
        where: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]} for where, rounds in runs.items()
    }
    print(f"decode step ms (median of {args.rounds}), weights {args.quantize or 'dense'}, loaded on:")
    print("| loaded on | batch 1 | batch 16 |\n|---|--:|--:|")
    for where, m in medians.items():
        print(f"| {where} | {m['batch 1']:.1f} | {m['batch 16']:.1f} |")
    record = {"schema": "tgi-course-loader-thread/1", "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "quantize": args.quantize, "load_avg_1m_before": load_before, "runs": runs, "median_step_ms": medians}  # fmt: skip
    print(f"wrote {write_record(args.out, 'loader-thread', record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
