"""The llama.cpp runner behind the ModelRunner seam, with the real default model, and the backend choice.

Runner tests call prefill/decode/drop directly and compare one runner with another built so that the row in
question never existed (or was never chunked): a row's logits must not depend on its neighbours, on slot
reuse or on how its prompt was cut into llama_decode calls. llama.cpp's float sums depend on how a batch is
split, so the comparison is the greedy token (argmax) plus a loose allclose, never bit equality.

The backend truth table and the config checks are pure and run without llama-cpp-python; everything that
needs the model is skipped, with the reason, when llama-cpp-python does not import.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import torch

from tgi_course.config import ConfigError, ServerConfig
from tgi_course.models.backend import BACKENDS, BackendChoice, choose_backend

LLAMA_CPP_MISSING = "llama-cpp-python is not installed here (make setup builds it when a C/C++ compiler is present)"
# The same row computed in differently shaped batches (alone, beside others, chunked) differs by up to ~0.045
# on logits of 10-35 (measured; F16 weights, llama.cpp picks kernels by batch shape). A row that read another
# row's cache, or stale cells, is off by whole units. The greedy token is checked first.
ATOL = 0.1


# -- fixtures and helpers ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llama():
    """The default model under llama.cpp (GGUF_WEIGHTS=f16, the default), loaded once for the module."""
    pytest.importorskip("llama_cpp", reason=LLAMA_CPP_MISSING)
    from tgi_course.models import load, resolve

    loaded = load(resolve("default"), device="cpu", backend="llama.cpp")
    assert loaded.backend == "llama.cpp"
    return loaded


@pytest.fixture
def runners(llama):
    """Factory of LlamaCppRunners over the shared model; every runner made is closed after the test.

    One thread: llama.cpp's threads wait for each other at every op, spinning; with two threads on a 2-core
    machine where another process holds a core, a decode step took 3 s instead of 40 ms.
    """
    from tgi_course.engine.runners.llama_cpp import LlamaCppRunner

    made: list[LlamaCppRunner] = []

    def make(kv_tokens: int = 2048, max_rows: int = 4, max_prefill_tokens: int = 512) -> LlamaCppRunner:
        runner = LlamaCppRunner(llama.model, kv_tokens=kv_tokens, max_rows=max_rows, max_prefill_tokens=max_prefill_tokens, threads=1)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.close()


def chat_ids(loaded, text: str) -> list[int]:
    from tgi_course.engine import encode, render_chat

    tok = loaded.tokenizer
    return encode(tok, render_chat(tok, [{"role": "user", "content": text}]))


@pytest.fixture(scope="module")
def prompts(llama) -> list[list[int]]:
    """Four chat prompts of different lengths (different lengths exercise positions per row)."""
    return [
        chat_ids(llama, "Name three colors."),
        chat_ids(llama, "What is the capital of France?"),
        chat_ids(llama, "Write one sentence about the sea and the wind."),
        chat_ids(llama, "Count from one to five."),
    ]


@pytest.fixture(scope="module")
def long_prompt(llama) -> list[int]:
    """About 200 tokens of chat prompt."""
    story = " ".join(f"Sentence {i}: the little robot walked to the market and bought an apple." for i in range(12))
    ids = chat_ids(llama, f"Summarise this story: {story}")
    assert 180 <= len(ids) <= 260, len(ids)
    return ids


def same_row(a: torch.Tensor, b: torch.Tensor) -> None:
    """Two logits rows of the same sequence: same greedy token, close values."""
    assert int(a.argmax()) == int(b.argmax())
    assert torch.allclose(a, b, atol=ATOL, rtol=0), float((a - b).abs().max())


def greedy(logits: torch.Tensor, seq_ids: list[int]) -> dict[int, int]:
    return {seq_id: int(row.argmax()) for seq_id, row in zip(seq_ids, logits)}


# -- prefill, decode, drop -----------------------------------------------------------------------------
def test_prefill_gives_finite_float32_logits_one_row_per_prompt(llama, runners, prompts):
    runner = runners()
    assert runner.seq_ids == []
    logits = runner.prefill([5, 9], prompts[:2])
    assert logits.shape == (2, llama.model.n_vocab) and logits.dtype == torch.float32
    assert llama.logits_width == llama.model.n_vocab
    assert torch.isfinite(logits).all()
    assert runner.seq_ids == [5, 9]
    # Each row is its own prompt's last position: the same as that prompt prefilled alone.
    for row, prompt in enumerate(prompts[:2]):
        same_row(logits[row], runners(max_rows=1).prefill([0], [prompt])[0])


def test_decode_returns_rows_in_seq_ids_order(llama, runners, prompts):
    runner = runners()
    ids = [30, 10, 20]
    first = runner.prefill(ids, prompts[:3])
    assert runner.seq_ids == ids
    tokens = greedy(first, ids)
    # The dict's order must not matter: the rows come back in seq_ids order.
    shuffled = {i: tokens[i] for i in sorted(ids)}
    logits = runner.decode(shuffled)
    assert logits.shape == (3, llama.model.n_vocab) and torch.isfinite(logits).all()
    for row, (seq_id, prompt) in enumerate(zip(ids, prompts[:3])):
        alone = runners(max_rows=1)
        alone.prefill([seq_id], [prompt])
        same_row(logits[row], alone.decode({seq_id: tokens[seq_id]})[0])


def test_dropping_a_row_leaves_the_others_as_if_it_never_existed(runners, prompts):
    three, two = runners(), runners()
    l3 = three.prefill([0, 1, 2], prompts[:3])
    l2 = two.prefill([0, 2], [prompts[0], prompts[2]])
    fed = greedy(l3, [0, 1, 2])
    for _ in range(3):  # a few steps together, then row 1 leaves
        d3 = three.decode(fed)
        d2 = two.decode({0: fed[0], 2: fed[2]})
        same_row(d3[0], d2[0])
        same_row(d3[2], d2[1])
        fed = greedy(d3, [0, 1, 2])
    three.drop([1])
    three.drop([1, 99])  # twice, and with an unknown id: ignored
    assert three.seq_ids == [0, 2]
    for _ in range(3):
        d3 = three.decode({0: fed[0], 2: fed[2]})
        d2 = two.decode({0: fed[0], 2: fed[2]})
        assert d3.shape[0] == 2
        same_row(d3[0], d2[0])
        same_row(d3[1], d2[1])
        fed = greedy(d3, [0, 2])


def test_a_new_row_in_a_reused_slot_starts_clean_and_leaves_the_others_alone(runners, prompts):
    runner, reference = runners(max_rows=2), runners(max_rows=2)
    fed = greedy(runner.prefill([0, 1], prompts[:2]), [0, 1])
    reference.prefill([0], [prompts[0]])
    runner.decode(fed)
    step = reference.decode({0: fed[0]})
    runner.drop([1])  # its slot is free again; row 7 gets it
    new = runner.prefill([7], [prompts[3]])
    same_row(new[0], runners(max_rows=1).prefill([0], [prompts[3]])[0])
    after = runner.decode({0: int(step[0].argmax()), 7: int(new[0].argmax())})
    same_row(after[0], reference.decode({0: int(step[0].argmax())})[0])


def test_slots_are_reused_over_many_prefill_and_drop_cycles(runners, prompts):
    runner = runners(max_rows=2)
    for cycle in range(12):  # 24 rows through 2 slots
        ids = [2 * cycle, 2 * cycle + 1]
        logits = runner.prefill(ids, [prompts[cycle % 4], prompts[(cycle + 1) % 4]])
        runner.decode(greedy(logits, ids))
        runner.drop(ids)
        assert runner.seq_ids == []
    with pytest.raises(RuntimeError, match="only 2 llama.cpp sequences free"):
        runner.prefill([100, 101, 102], prompts[:3])
    assert runner.seq_ids == []
    runner.prefill([100, 101], prompts[:2])  # the refused prefill took no slot
    assert runner.seq_ids == [100, 101]


def test_reset_forgets_every_row_and_frees_their_cache(runners, prompts):
    runner = runners(max_rows=2)
    fed = greedy(runner.prefill([0, 1], prompts[:2]), [0, 1])
    runner.decode(fed)
    runner.reset()
    assert runner.seq_ids == []
    # Both slots are free and their cells empty: a prompt starts at position 0 as in a fresh runner.
    logits = runner.prefill([2, 3], [prompts[2], prompts[3]])
    fresh = runners(max_rows=2).prefill([0, 1], [prompts[2], prompts[3]])
    same_row(logits[0], fresh[0])
    same_row(logits[1], fresh[1])


def test_a_prefill_larger_than_one_llama_decode_is_chunked_with_the_same_result(runners, prompts, long_prompt):
    chunked, whole = runners(max_prefill_tokens=64), runners(max_prefill_tokens=1024)
    assert chunked.capacity == 64 and len(long_prompt) > 3 * chunked.capacity
    batch = [long_prompt, prompts[0], long_prompt[:130]]  # chunk boundaries fall inside and between rows
    lc = chunked.prefill([0, 1, 2], batch)
    lw = whole.prefill([0, 1, 2], batch)
    assert lc.shape == lw.shape == (3, lc.shape[1])
    for row in range(3):
        same_row(lc[row], lw[row])
    fed = greedy(lw, [0, 1, 2])
    dc, dw = chunked.decode(fed), whole.decode(fed)  # the cache the chunks left is the same cache
    for row in range(3):
        same_row(dc[row], dw[row])


# -- lazy context, idle release -------------------------------------------------------------------------
def test_the_context_is_made_on_first_prefill_and_freed_only_when_idle_long_enough(runners, prompts):
    from tgi_course.engine.runners.llama_cpp import RELEASE_AFTER_IDLE_SECONDS

    runner = runners()
    assert not runner.allocated
    runner.idle(RELEASE_AFTER_IDLE_SECONDS * 10)  # nothing to free yet: harmless
    assert not runner.allocated
    first = runner.prefill([0], [prompts[0]])
    assert runner.allocated
    runner.idle(RELEASE_AFTER_IDLE_SECONDS * 10)  # a row runs: kept
    assert runner.allocated and runner.seq_ids == [0]
    runner.drop([0])
    runner.idle(RELEASE_AFTER_IDLE_SECONDS - 1)  # not idle long enough: kept
    assert runner.allocated
    runner.idle(RELEASE_AFTER_IDLE_SECONDS)
    assert not runner.allocated
    again = runner.prefill([1], [prompts[0]])  # a fresh context, every slot free
    assert runner.allocated and runner.seq_ids == [1]
    same_row(again[0], first[0])
    runner.decode({1: int(again[0].argmax())})


# -- a KV cache that is too small -----------------------------------------------------------------------
def test_a_prompt_that_does_not_fit_the_kv_cache_raises_and_leaves_the_runner_usable(runners, prompts, long_prompt):
    # llama.cpp pads the cache to 256 cells: ~690 tokens cannot fit. Prefill runs in chunks of 64, so the
    # first chunks land in the cache before one finds no room: their cells must be removed again.
    runner = runners(kv_tokens=64, max_rows=2, max_prefill_tokens=64)
    too_long = long_prompt * 3
    with pytest.raises(RuntimeError, match=r"llama_decode returned 1 \(no free KV cells\)"):
        runner.prefill([0], [too_long])
    assert runner.seq_ids == []
    # The slot came back (two rows prefill at once in a 2-slot runner), and the cells that the chunks which ran
    # had filled are free: a small prompt gives a fresh runner's logits, twice.
    short = prompts[0]
    logits = runner.prefill([1, 2], [short, short])
    fresh = runners(max_rows=1).prefill([0], [short])
    same_row(logits[0], fresh[0])
    same_row(logits[1], fresh[0])
    runner.decode(greedy(logits, [1, 2]))
    runner.drop([1, 2])
    with pytest.raises(RuntimeError, match="no free KV cells"):  # and the next one that does not fit fails alike
        runner.prefill([3], [too_long])
    same_row(runner.prefill([4], [short])[0], fresh[0])


_SMALL_CACHE_BIG_CHUNKS = """
from tgi_course.engine import encode, render_chat
from tgi_course.engine.runners.llama_cpp import LlamaCppRunner
from tgi_course.models import load, resolve

loaded = load(resolve("default"), device="cpu", backend="llama.cpp")
runner = LlamaCppRunner(loaded.model, kv_tokens=64, max_rows=2, max_prefill_tokens=512, threads=1)
tok = loaded.tokenizer
prompt = (encode(tok, render_chat(tok, [{"role": "user", "content": "Tell me about the sea."}])) * 40)[:400]
try:
    runner.prefill([0], [prompt])
except RuntimeError as exc:
    print("RuntimeError:", exc)
"""


def test_a_kv_cache_smaller_than_a_prefill_chunk_raises_instead_of_aborting(llama):
    """kv_tokens=64 with the default chunk of 512: a 400-token prompt must raise, as with small chunks.

    Run in a child process, because it once aborted the interpreter: llama.cpp clamps the context's n_batch to
    its n_ctx (64 here), and llama_decode of more tokens than n_batch fails GGML_ASSERT (SIGABRT). The runner now
    chunks by the context's own n_batch.
    """
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", _SMALL_CACHE_BIG_CHUNKS], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, f"exit {child.returncode}: {child.stderr[-2000:]}"
    assert "RuntimeError: llama_decode returned" in child.stdout, child.stdout


# -- the engine over this runner -------------------------------------------------------------------------
def _answer(loaded, question: str, **params):
    from tgi_course.engine import GenerationRequest, SamplingParams
    from tgi_course.engine.runners.llama_cpp import LlamaCppRunner

    engine = loaded.engine(threads=1).start()
    try:
        assert isinstance(engine.runner, LlamaCppRunner)
        return engine.generate(GenerationRequest(chat_ids(loaded, question), SamplingParams(temperature=0, max_new_tokens=24, **params)))
    finally:
        engine.stop()
        engine.runner.close()


def test_an_engine_over_the_llama_cpp_runner_answers_paris(llama):
    assert llama.weight_format == "F16"
    finish = _answer(llama, "What is the capital of France?")
    assert "Paris" in finish.text, finish.text
    assert 0 < finish.generated_tokens <= 24


def test_the_gguf_s_own_q4_1_weights_generate_too(llama):
    from tgi_course.models import load, resolve

    q4 = load(resolve("default"), device="cpu", backend="llama.cpp", gguf_weights="file")
    try:
        assert q4.backend == "llama.cpp" and q4.weight_format == "Q4_1"
        assert q4.model.path == resolve("default").path
        finish = _answer(q4, "What is the capital of France?", ignore_eos=True)
        assert finish.generated_tokens == 24 and finish.reason == "length"
        assert finish.text.strip()
    finally:
        q4.model.close()


# -- the backend choice -------------------------------------------------------------------------------
NO_OBSTACLE = dict(source_kind="default-gguf", device="cpu", dtype="auto", quantize=None, cuda_available=False, llama_cpp_missing=None)
MISSING = "llama-cpp-python is not installed (ImportError: No module named 'llama_cpp')"
OBSTACLES = {
    "folder": (dict(source_kind="folder"), "MODEL_ID is not a .gguf file"),
    "hub": (dict(source_kind="hub"), "MODEL_ID is not a .gguf file"),
    "cuda": (dict(device="cuda"), "CUDA GPU"),
    "cuda:1": (dict(device="cuda:1"), "CUDA GPU"),
    "auto-device-with-cuda": (dict(device="auto", cuda_available=True), "CUDA GPU"),
    "int4": (dict(quantize="int4"), "QUANTIZE=int4"),
    "bfloat16": (dict(dtype="bfloat16"), "DTYPE=bfloat16"),
    "float16": (dict(dtype="float16"), "DTYPE=float16"),
    "llama-cpp-missing": (dict(llama_cpp_missing=MISSING), MISSING),
}


@pytest.mark.parametrize("name", list(OBSTACLES))
def test_auto_takes_transformers_and_says_why_for_each_obstacle(name):
    change, needle = OBSTACLES[name]
    choice = choose_backend("auto", **{**NO_OBSTACLE, **change})
    assert choice.name == "transformers"
    assert choice.reason.startswith("BACKEND=auto chose transformers") and needle in choice.reason, choice.reason


@pytest.mark.parametrize("name", list(OBSTACLES))
def test_llama_cpp_asked_for_with_an_obstacle_is_an_error_naming_it(name):
    change, needle = OBSTACLES[name]
    with pytest.raises(ValueError, match=re.escape(needle)):
        choose_backend("llama.cpp", **{**NO_OBSTACLE, **change})


def test_several_obstacles_are_all_named():
    settings = {**NO_OBSTACLE, "source_kind": "hub", "dtype": "bfloat16", "quantize": "int4"}
    reason = choose_backend("auto", **settings).reason
    assert all(needle in reason for needle in ("MODEL_ID is not a .gguf file", "QUANTIZE=int4", "DTYPE=bfloat16")), reason
    with pytest.raises(ValueError, match="MODEL_ID.*QUANTIZE=int4.*DTYPE=bfloat16"):
        choose_backend("llama.cpp", **settings)


@pytest.mark.parametrize("name", [None, *OBSTACLES])
def test_transformers_asked_for_is_always_transformers(name):
    change = OBSTACLES[name][0] if name else {}
    assert choose_backend("transformers", **{**NO_OBSTACLE, **change}) == BackendChoice("transformers", "BACKEND=transformers")


@pytest.mark.parametrize(
    "change",
    [{}, {"source_kind": "gguf"}, {"dtype": "float32"}, {"device": "auto"}, {"device": "auto", "source_kind": "gguf", "dtype": "float32"}],
    ids=["default", "gguf-file", "float32", "auto-device-no-cuda", "all"],
)
def test_auto_without_obstacle_takes_llama_cpp(change):
    settings = {**NO_OBSTACLE, **change}
    choice = choose_backend("auto", **settings)
    assert choice.name == "llama.cpp" and choice.reason.startswith("BACKEND=auto chose llama.cpp")
    assert choose_backend("llama.cpp", **settings) == BackendChoice("llama.cpp", "BACKEND=llama.cpp")


def test_an_unknown_backend_is_an_error():
    with pytest.raises(ValueError, match="BACKEND must be one of auto, transformers, llama.cpp, got 'vllm'"):
        choose_backend("vllm", **NO_OBSTACLE)


def test_backend_for_and_load_refuse_llama_cpp_they_cannot_serve_before_loading_anything():
    from tgi_course.models import ModelNotAvailable, resolve
    from tgi_course.models.loading import backend_for, load

    source = resolve("default")
    with pytest.raises(ModelNotAvailable, match="BACKEND=llama.cpp cannot serve this model: .*DTYPE=bfloat16"):
        load(source, device="cpu", dtype="bfloat16", backend="llama.cpp")
    with pytest.raises(ModelNotAvailable, match="QUANTIZE=int4"):
        backend_for(source, device="cpu", quantize="int4", backend="llama.cpp")
    assert backend_for(source, device="cpu", dtype="bfloat16").name == "transformers"


# -- config ------------------------------------------------------------------------------------------------
def test_config_backends_match_the_loader_s():
    import tgi_course.config as config
    from tgi_course.engine.runners.llama_cpp import REENCODINGS

    assert config.BACKENDS == BACKENDS
    assert set(config.GGUF_WEIGHTS) == {"file", *REENCODINGS}


@pytest.mark.parametrize(("field", "env"), [("backend", "BACKEND"), ("gguf_weights", "GGUF_WEIGHTS")])
def test_config_rejects_an_unknown_backend_or_gguf_weights_naming_the_setting(field, env):
    with pytest.raises(ConfigError, match=rf"^{env} must be one of .*got 'x'"):
        ServerConfig(**{field: "x"}).check()


def test_backend_and_gguf_weights_come_from_the_environment():
    from tgi_course.config import RUN_WIDE_SETTINGS, run_backend, run_gguf_weights

    env = {"BACKEND": "llama.cpp", "GGUF_WEIGHTS": "file"}
    config = ServerConfig.from_sources(env=env)
    assert (config.backend, config.gguf_weights) == ("llama.cpp", "file")
    config.check()
    assert (run_backend(env), run_gguf_weights(env)) == ("llama.cpp", "file")
    assert (run_backend({}), run_gguf_weights({})) == ("auto", "f16")
    assert {"backend", "gguf_weights"} <= set(RUN_WIDE_SETTINGS)
    assert ServerConfig().backend == "auto" and ServerConfig().gguf_weights == "f16"


# -- the re-encoded GGUF cache ----------------------------------------------------------------------------
def test_the_f16_gguf_is_made_once_into_the_cache(llama, tmp_path, monkeypatch):
    """Re-encoding needs only the source GGUF (not the safetensors folder), so a fresh cache is cheap."""
    from tgi_course.engine.runners.llama_cpp import LlamaCppModel
    from tgi_course.models import ModelNotAvailable, resolve
    from tgi_course.models.loading import reencoded_gguf

    monkeypatch.setenv("TGI_COURSE_CACHE", str(tmp_path))
    source = resolve("default")
    made = reencoded_gguf(source, "f16")
    assert made.parent == tmp_path / "gguf" and made.is_file()
    assert made.name.endswith("-F16.gguf") and source.sha256[:16] in made.name
    assert [p.name for p in made.parent.iterdir()] == [made.name]  # no .partial- file left behind
    stamp = made.stat().st_mtime_ns
    started = time.perf_counter()
    assert reencoded_gguf(source, "f16") == made
    assert time.perf_counter() - started < 0.5 and made.stat().st_mtime_ns == stamp  # reused, not re-encoded
    model = LlamaCppModel(made)
    try:
        assert model.weight_type == "F16" and model.n_vocab == llama.model.n_vocab
    finally:
        model.close()
    with pytest.raises(ModelNotAvailable, match="GGUF_WEIGHTS must be one of file, f16, bf16, f32, got 'q8'"):
        reencoded_gguf(source, "q8")
    # The shared model of this module reads the real cache's copy.
    assert Path(llama.model.path).name == made.name
