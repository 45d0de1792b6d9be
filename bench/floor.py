"""What bounds a CPU decode step and a warm start, measured on this machine: the floors under issue 5's targets.

    .venv/bin/python -m bench.floor [--threads 2]

1. Weight bandwidth. A batch-1 decode step reads every weight once. The script times the model's own
   largest matrix (the LM head, 49152 x 576) as a batch-1 ``linear`` in bf16, fp32 and int8 (dynamic
   quantisation), turns that into GB/s, and divides the model's bf16 weight bytes by it: no bf16 engine on
   this machine can decode one stream faster than that floor, whatever its Python overhead.
2. Per-call cost. A small projection (576 -> 192) moves 0.2 MB; its time is mostly per-call overhead.
3. Import time of a warm start, in the order the server pays it: ``torch``, ``transformers``, and the
   modules transformers pulls in lazily when the Llama model class is first used (torch._dynamo among them).

Prints a table and writes bench/results/floor-<UTC time>.json. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from .report import RESULTS, write_record
from .stats import load_avg_1m

_IMPORT_PROBE = r"""
import json, time
t0 = time.perf_counter(); import torch
t1 = time.perf_counter(); import transformers
t2 = time.perf_counter(); from transformers import LlamaForCausalLM, AutoTokenizer; LlamaForCausalLM.__mro__
t3 = time.perf_counter(); import tgi_course.server.app
t4 = time.perf_counter()
print(json.dumps({"torch": t1 - t0, "transformers": t2 - t1, "transformers Llama + lazy modules": t3 - t2,
                  "tgi_course server modules": t4 - t3}))
"""


def _median_us(fn: Any, repeats: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1e6 * statistics.median(times)


def linear_costs(threads: int) -> list[dict[str, Any]]:
    import warnings

    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    rows = []
    for name, (k, n) in {"lm_head 576x49152": (576, 49152), "mlp up 576x1536": (576, 1536), "k_proj 576x192": (576, 192)}.items():
        for dtype in (torch.bfloat16, torch.float32):
            weight = torch.randn(n, k, dtype=dtype)
            x = torch.randn(1, k, dtype=dtype)
            us = _median_us(lambda: F.linear(x, weight), 50 if n > 10000 else 400)
            rows.append({"matrix": name, "dtype": str(dtype).removeprefix("torch."), "us": us, "GB_s": weight.numel() * weight.element_size() / us / 1e3})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's deprecation notice: this is a measurement, not a dependency
            quantised = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(k, n, bias=False)), {torch.nn.Linear}, dtype=torch.qint8)
        x = torch.randn(1, k)
        us = _median_us(lambda: quantised(x), 50 if n > 10000 else 400)
        rows.append({"matrix": name, "dtype": "int8 (dynamic)", "us": us, "GB_s": k * n / us / 1e3})
    return rows


def import_costs() -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True, check=True, env={**os.environ, "TRANSFORMERS_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--weight-bytes", type=float, default=269e6, help="bf16 weight bytes read per decode step (SmolLM2-135M: 134.5 M params)")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)

    load_before = load_avg_1m()
    imports = import_costs()
    linears = linear_costs(args.threads)
    head = {r["dtype"]: r for r in linears if r["matrix"].startswith("lm_head")}
    bandwidth = head["bfloat16"]["GB_s"]  # a 57 MB matrix does not fit in cache: this is the DRAM rate
    floor_ms = args.weight_bytes / bandwidth / 1e6
    result = {
        "schema": "tgi-course-floor/1",
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "threads": args.threads,
        "load_avg_1m_before": load_before,
        "linear_batch1": linears,
        "bf16_stream_floor_ms_per_token": floor_ms,
        "bf16_stream_ceiling_tok_s": 1000 / floor_ms,
        "imports_s": imports,
    }
    print("| matrix | dtype | us per batch-1 call | GB/s |\n|---|---|--:|--:|")
    for r in linears:
        print(f"| {r['matrix']} | {r['dtype']} | {r['us']:.0f} | {r['GB_s']:.1f} |")
    print(f"\nbf16 weights {args.weight_bytes / 1e6:.0f} MB at {bandwidth:.1f} GB/s: >= {floor_ms:.1f} ms per token, "
          f"<= {1000 / floor_ms:.0f} tok/s for one stream, before any other work")
    print("\n| import | s |\n|---|--:|")
    for name, seconds in imports.items():
        print(f"| {name} | {seconds:.2f} |")
    print(f"| total | {sum(imports.values()):.2f} |")
    print("wrote", write_record(args.out, "floor", result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
