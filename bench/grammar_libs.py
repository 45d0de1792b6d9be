"""Per-token cost of grammar-constrained decoding in the kept grammar libraries, on the default model's
tokenizer (49,152 tokens): what chose xgrammar for ``tgi_course.engine.constraints``.

    .venv/bin/python -m bench.grammar_libs [--repeats 20]

Only xgrammar is a project dependency. To compare, install the others outside the venv and put them on the
path (they need nothing beyond what the venv has):

    .venv/bin/pip install --target /tmp/gramlibs --no-deps llguidance==1.9.1 outlines-core==0.2.14
    PYTHONPATH=/tmp/gramlibs .venv/bin/python -m bench.grammar_libs

For each library and two grammars (the benchmark's three-field JSON schema, and a tool call: ``anyOf`` of two
``{"name", "arguments"}`` objects), compact JSON (one space after ',' and ':', no free whitespace): the first
compile, then, over the tokens of a valid output, one decode step's grammar work: fill the next-token mask,
apply it to a float32 logits row (each library's own CPU routine; "+engine mask": the numpy routine the engine
uses), accept the chosen token. Libraries that are not importable are skipped. Single-threaded, as in the
engine. Prints a table; writes bench/results/grammar-libs-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from .report import RESULTS, write_record

NOTE = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "summary": {"type": "string"}, "keywords": {"type": "array", "items": {"type": "string"}}},
    "required": ["title", "summary", "keywords"],
}
# The engine's compact JSON: one space after ',' and ':' (xgrammar's default without free whitespace).
NOTE_TEXT = '{"title": "Tides", "summary": "Tides rise and fall twice a day, pulled by the moon and the sun.", "keywords": ["moon", "sea", "gravity"]}'


def _call(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"name": {"const": name}, "arguments": parameters}, "required": ["name", "arguments"], "additionalProperties": False}


TOOL = {
    "anyOf": [
        _call("get_weather", {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"]}),
        _call("multiply", {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}),
    ]
}
TOOL_TEXT = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'
CASES = {"note schema": (NOTE, NOTE_TEXT), "tool call": (TOOL, TOOL_TEXT)}

# A library: (tokenizer, vocab width, eos ids) -> (compile(schema) -> grammar, run(grammar, tokens, logits) -> step seconds)
Library = Callable[[Any, int, list[int]], tuple[Callable[[dict[str, Any]], Any], Callable[[Any, list[int], Any], list[float]]]]


def _xgrammar(tokenizer: Any, width: int, eos: list[int], engine_mask: bool = False) -> tuple[Callable[..., Any], Callable[..., list[float]]]:
    import xgrammar as xgr

    from tgi_course.engine.constraints import _mask_cpu_row

    def apply(row: Any, mask: Any) -> None:
        if engine_mask:
            _mask_cpu_row(row, mask, width)
        else:
            xgr.apply_token_bitmask_inplace(row.view(1, -1), mask)

    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=width, stop_token_ids=eos), max_threads=1)

    def compile_(schema: dict[str, Any]) -> Any:
        return compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)

    def run(compiled: Any, tokens: list[int], row: Any) -> list[float]:
        matcher, mask, times = xgr.GrammarMatcher(compiled), xgr.allocate_token_bitmask(1, width), []
        for token in tokens:
            t0 = time.perf_counter()
            matcher.fill_next_token_bitmask(mask)
            apply(row, mask)
            ok = matcher.accept_token(token)
            times.append(time.perf_counter() - t0)
            assert ok, token
        return times

    return compile_, run


def _llguidance(tokenizer: Any, width: int, eos: list[int], engine_mask: bool = False) -> tuple[Callable[..., Any], Callable[..., list[float]]]:
    import llguidance
    import llguidance.hf
    import llguidance.torch as llt

    from tgi_course.engine.constraints import _mask_cpu_row

    def apply(row: Any, mask: Any) -> None:
        if engine_mask:
            _mask_cpu_row(row, mask, width)  # same bitmask layout as xgrammar's
        else:
            llt.apply_token_bitmask_inplace(row.view(1, -1), mask)

    lltok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=width, eos_token=eos[0])

    def compile_(schema: dict[str, Any]) -> Any:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "})
        matcher = llguidance.LLMatcher(lltok, grammar)  # llguidance compiles lazily: the first matcher pays
        assert not matcher.is_error(), matcher.get_error()
        return grammar

    def run(grammar: Any, tokens: list[int], row: Any) -> list[float]:
        matcher, mask, times = llguidance.LLMatcher(lltok, grammar), llt.allocate_token_bitmask(1, width), []
        for token in tokens:
            t0 = time.perf_counter()
            llt.fill_next_token_bitmask(matcher, mask, 0)
            apply(row, mask)
            ok = matcher.consume_token(token)
            times.append(time.perf_counter() - t0)
            assert ok, (token, matcher.get_error())
        return times

    return compile_, run


def _outlines_core(tokenizer: Any, width: int, eos: list[int]) -> tuple[Callable[..., Any], Callable[..., list[float]]]:
    import torch
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    # outlines-core wants each token's bytes; byte-level BPE spells them with GPT-2's byte alphabet.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    to_byte = {chr(b if b in printable else next(extra)): b for b in range(256)}
    special = set(tokenizer.all_special_ids)
    mapping: dict[bytes, list[int]] = {}
    for text, token_id in tokenizer.get_vocab().items():
        if token_id in special or token_id in eos:
            continue
        mapping.setdefault(bytes(to_byte[c] for c in text), []).append(token_id)
    vocabulary = Vocabulary(eos[0], mapping)

    def compile_(schema: dict[str, Any]) -> Any:
        # outlines puts the whitespace pattern around separators; " ?" accepts the one space the others emit.
        return Index(build_regex_from_schema(json.dumps(schema), whitespace_pattern=" ?"), vocabulary)

    def run(index: Any, tokens: list[int], row: Any) -> list[float]:
        guide, times = Guide(index), []
        mask = torch.zeros((1, (width + 31) // 32), dtype=torch.int32)
        bits = torch.arange(32, dtype=torch.int32)
        for token in tokens:
            t0 = time.perf_counter()
            guide.write_mask_into(mask.data_ptr(), mask.numel(), mask.element_size())
            # outlines-core's own torch kernel is torch.compile'd; the eager equivalent is measured here.
            allowed = ((mask.unsqueeze(-1) >> bits) & 1).bool().view(-1)[: row.shape[-1]]
            row.masked_fill_(~allowed, float("-inf"))
            if not guide.is_finished():  # outlines-core has no transition on EOS: a finished guide is done
                guide.advance(token)
            times.append(time.perf_counter() - t0)
        return times

    return compile_, run


LIBRARIES: dict[str, tuple[str, Library]] = {
    "xgrammar": ("xgrammar", _xgrammar),
    # What the engine runs: xgrammar's matcher, the mask applied with numpy (tgi_course.engine.constraints).
    "xgrammar+engine mask": ("xgrammar", lambda t, w, e: _xgrammar(t, w, e, engine_mask=True)),
    "llguidance": ("llguidance", _llguidance),
    "llguidance+engine mask": ("llguidance", lambda t, w, e: _llguidance(t, w, e, engine_mask=True)),
    "outlines-core": ("outlines_core", _outlines_core),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.grammar_libs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20, help="passes over each output's tokens")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)

    import importlib.metadata
    import importlib.util

    import torch

    from tgi_course.models import load, resolve

    torch.set_num_threads(1)
    loaded = load(resolve("default"), device="cpu", dtype="float32")
    tokenizer, eos = loaded.tokenizer, sorted(loaded.eos_token_ids)
    width = int(loaded.logits_width)
    rows: list[dict[str, Any]] = []
    for name, (module, factory) in LIBRARIES.items():
        if importlib.util.find_spec(module) is None:
            print(f"{name}: not importable, skipped")
            continue
        t0 = time.perf_counter()
        compile_, run = factory(tokenizer, width, eos)
        setup = time.perf_counter() - t0
        for case, (schema, text) in CASES.items():
            tokens = tokenizer.encode(text, add_special_tokens=False) + [eos[0]]
            t0 = time.perf_counter()
            grammar = compile_(schema)
            compile_s = time.perf_counter() - t0
            row = torch.zeros(width)
            steps: list[float] = []
            run(grammar, tokens, row)  # warm-up
            for _ in range(args.repeats):
                steps += run(grammar, tokens, row)
            rows.append({
                "library": name, "version": importlib.metadata.version(name.split("+")[0]), "grammar": case, "tokens": len(tokens),
                "setup_s": setup, "compile_ms": compile_s * 1e3,
                "step_us_median": statistics.median(steps) * 1e6, "step_us_p95": statistics.quantiles(steps, n=20)[-1] * 1e6,
                "step_us_mean": statistics.fmean(steps) * 1e6,
            })  # fmt: skip
    print(f"vocabulary: {width} tokens; per decode step: fill mask + apply to float32 logits + accept token, 1 thread\n")
    print("| library | grammar | tokenizer setup (s) | first compile (ms) | step median (us) | step p95 (us) | step mean (us) |")
    print("|---|---|--:|--:|--:|--:|--:|")
    for r in rows:
        print(f"| {r['library']} {r['version']} | {r['grammar']} | {r['setup_s']:.2f} | {r['compile_ms']:.1f} | {r['step_us_median']:.0f} | {r['step_us_p95']:.0f} | {r['step_us_mean']:.0f} |")
    created = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    record = {"schema": "tgi-course-grammar-libs/1", "created": created, "vocab": width, "repeats": args.repeats, "rows": rows}
    print("\nwrote", write_record(args.out, "grammar-libs", record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
