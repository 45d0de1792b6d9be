"""Grammar-constrained decoding inside the engine's continuous batching, with the real default model:
constrained rows follow their grammar and end when it is complete; unconstrained rows beside them are
untouched."""

from __future__ import annotations

import json
import re
import threading

import jsonschema
import pytest
import torch

from tgi_course.engine import Engine, GenerationRequest, SamplingParams, TokenEvent, encode, render_chat
from tgi_course.engine.constraints import GrammarError, Grammars, _mask_cpu_row

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
    "required": ["name", "age", "tags"],
}


@pytest.fixture(scope="module")
def fp32():
    """fp32: a greedy row's tokens do not depend on the batch around it (bf16 sums do, by the last bit)."""
    from tgi_course.models import load, resolve

    loaded = load(resolve("default"), device="cpu", dtype="float32", backend="transformers")
    engine = loaded.engine().start()
    grammars = Grammars(loaded.tokenizer, int(loaded.logits_width), sorted(loaded.eos_token_ids))
    yield loaded, engine, grammars
    engine.stop()


def _ids(tokenizer, text: str) -> list[int]:
    return encode(tokenizer, render_chat(tokenizer, [{"role": "user", "content": text}]))


def test_engine_masking_equals_xgrammar_kernel():
    import xgrammar as xgr

    width = 1000  # not a multiple of 32: the last word is partly padding
    for density in (0.001, 0.5, 0.99):
        generator = torch.Generator().manual_seed(0)
        allowed = torch.rand(width, generator=generator) < density
        bits = torch.zeros(((width + 31) // 32) * 32, dtype=torch.int64)
        bits[:width] = allowed.to(torch.int64)
        words = (bits.view(-1, 32) << torch.arange(32)).sum(-1)
        bitmask = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32).view(1, -1)
        row = torch.randn(width, generator=generator)
        expected = row.clone()
        xgr.apply_token_bitmask_inplace(expected.view(1, -1), bitmask)
        _mask_cpu_row(row, bitmask, width)
        assert torch.equal(row, expected)


def test_constrained_and_plain_rows_share_a_batch(fp32):
    loaded, engine, grammars = fp32
    tokenizer = loaded.tokenizer
    plain = SamplingParams(temperature=0, max_new_tokens=40)
    plain_prompts = [_ids(tokenizer, "Write one sentence about the sea."), _ids(tokenizer, "Name three colors.")]
    alone = [engine.generate(GenerationRequest(p, plain)).text for p in plain_prompts]

    grammar = grammars.for_schema(SCHEMA)
    constrained = [
        SamplingParams(temperature=0, max_new_tokens=80, logits_processors=(grammar.processor(),)),
        SamplingParams(temperature=0.8, seed=3, max_new_tokens=80, logits_processors=(grammar.processor(),)),
    ]
    json_prompt = _ids(tokenizer, "Describe a sailor called Ana, 34 years old, as JSON.")
    results: dict[str, object] = {}

    def run(key: str, request: GenerationRequest) -> None:
        results[key] = engine.generate(request)

    jobs = [(f"plain{i}", GenerationRequest(p, plain)) for i, p in enumerate(plain_prompts)]
    jobs += [(f"json{i}", GenerationRequest(json_prompt, c)) for i, c in enumerate(constrained)]
    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results["plain0"].text, results["plain1"].text] == alone  # type: ignore[attr-defined]
    for key in ("json0", "json1"):
        finish = results[key]
        assert finish.reason == "eos_token", "a complete grammar ends the sequence"  # type: ignore[attr-defined]
        jsonschema.validate(json.loads(finish.text), SCHEMA)  # type: ignore[attr-defined]


def test_regex_grammar_and_ignore_eos(fp32):
    loaded, engine, grammars = fp32
    grammar = grammars.regex(r"[0-9]{4}")
    prompt = _ids(loaded.tokenizer, "In which year did the lab open?")
    finish = engine.generate(GenerationRequest(prompt, SamplingParams(temperature=0, max_new_tokens=20, logits_processors=(grammar.processor(),))))
    assert re.fullmatch(r"[0-9]{4}", finish.text) and finish.reason == "eos_token"
    # ignore_eos (vLLM's benchmarking switch): past the grammar's end only stop tokens remain allowed.
    params = SamplingParams(temperature=0, max_new_tokens=8, ignore_eos=True, logits_processors=(grammar.processor(),))
    events = [e for e in engine.iterate(GenerationRequest(prompt, params)) if isinstance(e, TokenEvent)]
    assert len(events) == 8 and "".join(e.text for e in events) == finish.text
    assert all(e.token_id in loaded.eos_token_ids for e in events[-4:])


def test_bad_grammars_say_what_is_wrong(fp32):
    _, _, grammars = fp32
    with pytest.raises(GrammarError, match="invalid regular expression"):
        grammars.regex("([a-z")
    with pytest.raises(GrammarError, match="invalid JSON schema"):
        grammars.for_schema({"type": "object", "properties": {"a": {"type": "nonsense"}}})


class _BrokenMatcher:
    def is_terminated(self) -> bool:
        raise RuntimeError("matcher bug")


def test_a_failing_matcher_ends_its_own_sequence_only(fp32):
    loaded, engine, grammars = fp32
    broken = grammars.regex(r"[a-z]+").processor()
    broken._matcher = _BrokenMatcher()  # stands in for a library bug mid-generation
    plain = SamplingParams(temperature=0, max_new_tokens=12)
    prompt = _ids(loaded.tokenizer, "Name three colors.")
    alone = engine.generate(GenerationRequest(prompt, plain)).text
    results: dict[str, object] = {}
    jobs = {"plain": SamplingParams(temperature=0, max_new_tokens=12), "broken": SamplingParams(temperature=0, max_new_tokens=12, logits_processors=(broken,))}
    threads = [threading.Thread(target=lambda k=k, p=p: results.__setitem__(k, engine.generate(GenerationRequest(prompt, p)))) for k, p in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["plain"].text == alone  # type: ignore[attr-defined]
    assert results["broken"].reason == "eos_token" and results["broken"].generated_tokens == 1  # type: ignore[attr-defined]
