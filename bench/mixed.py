"""Mixed workload (issue 12, item 6): one long prompt arriving with many short chats.

    .venv/bin/python -m bench.mixed                                  # this checkout's server, its defaults
    .venv/bin/python -m bench.mixed --source /tmp/old-checkout       # the same run against another checkout
    .venv/bin/python -m bench.mixed --env BACKEND=llama.cpp          # any server setting, as VAR=value

A left-padded KV cache makes every row as wide as the widest one: a 3,500-token prompt beside 63 chats of
~40 tokens holds 64 x 3,600 cache slots, though the rows' own tokens are about 6,000. This sends exactly that
mix at once (the long request first, so it is in the first batch) and reports what it costs the chats: their
time to first token and latency, the aggregate decode rate, how many rows ran together, and the server's
peak RSS (``VmHWM``), which is where an unaccounted padded cache shows.

The server is started from ``--source`` (a checkout's folder, put first on PYTHONPATH, with this venv), so
two commits can be measured in one sitting. Prints a table and writes bench/results/mixed-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tgi_course.processes import free_port

from . import servers, soak
from .report import RESULTS
from .soak import parse_metrics, proc_status
from .stats import load_avgs, machine, percentile

REPO = Path(__file__).resolve().parent.parent
LONG_FILLER = "The quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun. "


def long_prompt(words: int) -> str:
    text = (LONG_FILLER * (words // 18 + 1)).split()[:words]
    return "Summarise this text in one sentence.\n\n" + " ".join(text)


async def one(client: httpx.AsyncClient, url: str, content: str, max_tokens: int) -> dict[str, Any]:
    body = {"model": "tgi", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "ignore_eos": True, "stream_options": {"include_usage": True}}  # fmt: skip
    sent = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        status = response.status_code
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if first is None and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - sent
    return {"status": status, "ttft": first, "latency": time.perf_counter() - sent, "tokens": tokens}


async def run_mix(url: str, pid: int, long_words: int, chats: int, max_tokens: int) -> dict[str, Any]:
    peak_rows = 0
    done = asyncio.Event()

    async def watch(client: httpx.AsyncClient) -> None:
        nonlocal peak_rows
        while not done.is_set():
            metrics = parse_metrics((await client.get(f"{url}/metrics")).text)
            peak_rows = max(peak_rows, int(metrics.get("tgi_batch_current_size", 0)))
            await asyncio.sleep(0.1)

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=chats + 8)) as client:
        watcher = asyncio.create_task(watch(client))
        started = time.perf_counter()
        long_task = asyncio.create_task(one(client, url, long_prompt(long_words), max_tokens))
        await asyncio.sleep(0.05)
        short = await asyncio.gather(*(one(client, url, f"Say something nice about the number {i}.", max_tokens) for i in range(chats)))
        long_result = await long_task
        wall = time.perf_counter() - started
        done.set()
        await watcher
        usage = (await client.post(f"{url}/tokenize", json={"inputs": long_prompt(long_words)})).json()
    statuses = [r["status"] for r in short] + [long_result["status"]]
    tokens = sum(r["tokens"] for r in short) + long_result["tokens"]
    ttfts = [r["ttft"] for r in short if r["ttft"] is not None]
    return {
        "long_prompt_tokens": len(usage) if isinstance(usage, list) else None,
        "statuses": {str(s): statuses.count(s) for s in set(statuses)},
        "wall_s": wall,
        "aggregate_tok_s": tokens / wall,
        "short_ttft_p50_s": statistics.median(ttfts) if ttfts else None,
        "short_ttft_p99_s": percentile(ttfts, 0.99) if ttfts else None,
        "short_latency_p50_s": statistics.median(r["latency"] for r in short),
        "long_ttft_s": long_result["ttft"],
        "long_latency_s": long_result["latency"],
        "peak_batch_rows": peak_rows,
        "server_peak_rss_mib": (proc_status(pid) or {}).get("VmHWM", 0) / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mixed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(REPO), help="checkout whose tgi_course serves (default: this one)")
    parser.add_argument("--env", action="append", default=[], help="server setting VAR=value (repeatable)")
    parser.add_argument("--long-words", type=int, default=2600, help="words in the long prompt (~3,500 tokens)")
    parser.add_argument("--chats", type=int, default=63)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)

    port = free_port()
    env = {**os.environ, "PYTHONPATH": args.source, "PORT": str(port)}
    env.update(item.split("=", 1) for item in args.env)
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "tgi_course", "serve"]
    log = Path(args.out) / "tmp" / "logs" / f"mixed-{port}.log"
    # In the source's folder: `python -m` puts the working directory first on sys.path, ahead of PYTHONPATH, so
    # started from this checkout it would serve this checkout's tgi_course whatever --source says.
    with servers.child_server(command, f"{url}/health", log, env=env, timeout=180, cwd=args.source) as _:
        pid = soak.pid_listening_on(port)
        served = Path(os.readlink(f"/proc/{pid}/cwd")).resolve() if pid else None
        assert served == Path(args.source).resolve(), f"the server runs in {served}, not in --source {args.source}"
        assert pid is not None, f"no process listens on {port}"
        asyncio.run(run_mix(url, pid, 50, 2, 4))  # warm-up: first steps build kernels
        runs = [asyncio.run(run_mix(url, pid, args.long_words, args.chats, args.max_tokens)) for _ in range(args.repeat)]
        info = httpx.get(f"{url}/info").json()
    git = subprocess.run(["git", "-C", args.source, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"source {args.source} ({git}), {info.get('model_id')}, {info.get('model_dtype')}, max_batch_total_tokens {info.get('max_batch_total_tokens')}")
    print(f"{'run':>3} {'wall s':>7} {'agg tok/s':>9} {'chat TTFT p50':>13} {'p99':>6} {'chat lat p50':>12} {'long lat':>8} {'rows':>4} {'peak RSS MiB':>12}")
    for i, r in enumerate(runs):
        print(f"{i:>3} {r['wall_s']:>7.1f} {r['aggregate_tok_s']:>9.1f} {r['short_ttft_p50_s']:>13.2f} {r['short_ttft_p99_s']:>6.2f} "
              f"{r['short_latency_p50_s']:>12.2f} {r['long_latency_s']:>8.1f} {r['peak_batch_rows']:>4} {r['server_peak_rss_mib']:>12.0f}")  # fmt: skip
    created = dt.datetime.now(dt.timezone.utc)
    path = Path(args.out) / f"mixed-{created:%Y%m%dT%H%M%SZ}.json"
    record = {"created": f"{created:%Y-%m-%dT%H:%M:%SZ}", "source": args.source, "git": git, "env": args.env, "info": info,
              "machine": machine(), "load_avgs": load_avgs(), "runs": runs}  # fmt: skip
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
