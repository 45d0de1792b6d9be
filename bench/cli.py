"""``python -m bench``: run the workload against the chosen targets, in one run, and write one JSON file.

    .venv/bin/python -m bench                                   # our server @1,4,16 + our engine @1
    .venv/bin/python -m bench --all                             # issue 5: ours and every peer (make bench-peers first)
    .venv/bin/python -m bench --url http://host:8000 --concurrency 1 4 16 64   # any OpenAI-compatible server
    .venv/bin/python -m bench --targets tgi-course@1,4,16,64 engine@1 llama-cpp-server@1,4,16

Targets: tgi-course, engine, tgi-course-int4, engine-int4 (ours with QUANTIZE=int4), llama-cpp-server, llama-cpp,
transformers-serve, transformers-serve-cb, url;
``name@1,4,16`` sets its concurrency levels. Results: bench/results/bench-<UTC time>.json and two PNG plots
beside it. Speed is never asserted: figures are for people to read, side by side.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import report
from .stats import cpu_model, load_avg_1m, load_avgs, machine
from .targets import TARGETS, Options, iter_specs, run_target
from .workload import Workload, tiny

# Issue 5's run: ours at every level, each peer where it makes sense (in-process ones single-stream).
# Issue 13's table: ours (auto = llama.cpp on a CPU in float32), ours on torch, llama.cpp's own server, vLLM CPU.
ALL = ["tgi-course@1,4,16,64", "tgi-course-transformers@1,4,16,64", "llama-server@1,4,16,64", "vllm-cpu@1,4,16,64"]
# Issue 5's wider set, kept for comparison runs: python -m bench --targets ... (see README).
ISSUE5 = [
    "tgi-course@1,4,16,64", "engine@1", "tgi-course-int4@1,4,16,64", "llama-cpp-server@1,4,16", "llama-cpp@1",
    "transformers-serve@1,4,16", "transformers-serve-cb@1,4,16",
]


def deadline_from(hh_mm: str | None) -> dt.datetime | None:
    """The next HH:MM UTC from now (today, or tomorrow if already past)."""
    if not hh_mm:
        return None
    hour, minute = map(int, hh_mm.split(":"))
    now = dt.datetime.now(dt.timezone.utc)
    deadline = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return deadline if deadline >= now else deadline + dt.timedelta(days=1)


def wait_for_quiet(threshold: float, deadline: dt.datetime | None, poll_s: float) -> str:
    """Block until the 1-minute load average drops below ``threshold``, or until ``deadline``.

    Returns a sentence for the results file: the figures only mean something on a quiet machine, so the
    reader must know whether it was.
    """
    started = time.monotonic()
    while True:
        load = load_avg_1m()
        waited = (time.monotonic() - started) / 60
        if load is None or load < threshold:
            return f"waited {waited:.1f} min for 1-min load < {threshold} (it was {load:.2f})" if load is not None else "no load average here"
        if deadline is not None and dt.datetime.now(dt.timezone.utc) >= deadline:
            return f"NOT QUIET: stopped waiting at {deadline:%H:%M} UTC after {waited:.1f} min, 1-min load {load:.2f} >= {threshold}"
        print(f"[bench] {time.strftime('%H:%M:%S')} load {load:.2f} >= {threshold}; waiting", file=sys.stderr, flush=True)
        time.sleep(poll_s)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", nargs="+", metavar="NAME[@C,C]", help=f"default: tgi-course engine@1 (or url with --url); known: {', '.join(TARGETS)}")
    p.add_argument("--all", action="store_true", help=f"issue 13's set: {' '.join(ALL)}")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16], help="levels for targets given without @")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2, help="bursts per level, at least")
    p.add_argument("--min-streams", type=int, default=8, help="more rounds at low levels until this many streams are measured")
    p.add_argument("--repeat", type=int, default=1, help="run the whole target list this many times, alternating; ratios use each figure's median (process-to-process step times vary by 10-20%%)")
    p.add_argument("--warmup", type=int, default=4, help="warm-up requests per target (not measured)")
    p.add_argument("--tiny", action="store_true", help="max_tokens 4, 1 round, levels 1 2: checks the plumbing, measures nothing")
    p.add_argument("--url", help="an OpenAI-compatible server root (adds the url target)")
    p.add_argument("--model", help="model name for --url (default: the first of its /v1/models)")
    p.add_argument("--api-key", default=os.environ.get("TGI_COURSE_API_KEY", "-"))
    p.add_argument("--ignore-eos", action="store_true", help="send ignore_eos to the --url server (vLLM, TGI course server)")
    p.add_argument("--peers-venv", default=".venv-peers")
    p.add_argument("--peers-dir", default=".peers", help="where make bench-peers put llama-server")
    p.add_argument("--vllm-venv", default=".venv-vllm")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for llama.cpp peers")
    p.add_argument("--ready-repeats", type=int, default=3, help="extra LocalServer().start() timings (with tgi-course)")
    p.add_argument("--wait-quiet", type=float, metavar="LOAD", help="first wait until the 1-minute load average is below LOAD")
    p.add_argument("--wait-until", metavar="HH:MM", help="with --wait-quiet: stop waiting at this UTC time and measure anyway")
    p.add_argument("--quiet-between", action="store_true", help="with --wait-quiet: wait again before each target (the load of the previous one decays in about a minute)")
    p.add_argument("--poll", type=float, default=60.0, help="seconds between load checks")
    p.add_argument("--out", default=str(report.RESULTS), help="folder for the JSON and PNG files")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--note", default="", help="free text stored in the results")
    return p


def workload_from(args: argparse.Namespace) -> tuple[Workload, tuple[int, ...]]:
    if args.tiny:
        w = tiny()
        return w, w.concurrency
    levels = tuple(args.concurrency)
    return Workload(max_tokens=args.max_tokens, concurrency=levels, rounds=args.rounds, min_streams=args.min_streams, warmup_requests=args.warmup), levels


def run(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    workload, levels = workload_from(args)
    specs = args.targets or (ALL if args.all else (["url"] if args.url else ["tgi-course", "engine@1"]))
    if args.url and not any(s.partition("@")[0] == "url" for s in specs):
        specs = [*specs, "url"]
    # Alternating whole passes (A B A B ...) rather than A A B B: slow drifts of the machine hit both sides.
    plan = list(iter_specs(specs, levels)) * max(1, args.repeat)  # fails early on an unknown name
    out = Path(args.out)
    options = Options(logs=out / "tmp" / "logs", peers_venv=args.peers_venv, peers_dir=args.peers_dir, vllm_venv=args.vllm_venv, threads=args.threads, url=args.url,
                      model=args.model, api_key=args.api_key, ignore_eos=args.ignore_eos)  # fmt: skip

    deadline = deadline_from(args.wait_until)
    quiet = wait_for_quiet(args.wait_quiet, deadline, args.poll) if args.wait_quiet else "no wait for a quiet machine was asked"
    created = dt.datetime.now(dt.timezone.utc)
    result: dict[str, Any] = {
        "schema": "tgi-course-bench/1",
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "argv": sys.argv,
        "note": args.note,
        "machine": machine(load_avg_before=load_avgs(), quiet_wait=quiet),
        "accelerator": "none (CPU only)",
        "workload": workload.to_dict(),
        "targets": [],
        "ready_seconds_warm_cache": [],
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{created.strftime('%Y%m%dT%H%M%SZ')}.json"
    for index, (name, target_levels) in enumerate(plan):
        between = None
        if index and args.wait_quiet and args.quiet_between:
            # Others may have started work since: each target starts on a quiet machine, or says it did not.
            between = wait_for_quiet(args.wait_quiet, deadline, 15.0)
        print(f"[bench] {time.strftime('%H:%M:%S')} {name} @ {','.join(map(str, target_levels))} ...", file=sys.stderr, flush=True)
        outcome = run_target(name, target_levels, workload, options)
        if outcome.error:
            print(f"[bench] {name} failed: {outcome.error.splitlines()[0]}", file=sys.stderr, flush=True)
        if between is not None:
            outcome.info["quiet_wait"] = between
        result["targets"].append(asdict(outcome))
        if name == "tgi-course" and outcome.ready_seconds is not None and not result["ready_seconds_warm_cache"]:
            from .servers import time_local_server_starts

            result["ready_seconds_warm_cache"] = [outcome.ready_seconds, *time_local_server_starts(args.ready_repeats)]
        _write(path, result, complete=False)  # an interrupted run keeps the targets it measured
    result["machine"]["load_avg_after"] = load_avgs()
    _write(path, result, complete=True)
    return path, result


def _write(path: Path, result: dict[str, Any], complete: bool) -> None:
    result["complete"] = complete
    result["ratios"] = [{**asdict(r), "met": r.met} for r in report.ratios(result)]
    path.write_text(json.dumps(result, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path, result = run(args)
    print(report.markdown(result))
    print(f"wrote {path}")
    if not args.no_plots:
        from .plot import save_plots

        for png in save_plots(path):
            print(f"wrote {png}")
    failed = [t["name"] for t in result["targets"] if t["error"]]
    return 1 if failed and len(failed) == len(result["targets"]) else 0
