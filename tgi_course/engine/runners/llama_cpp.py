"""The llama.cpp runner: a GGUF computed by llama.cpp's CPU kernels, one llama.cpp sequence per row.

Why: on a CPU without native bf16 the transformers path runs dense float32 matmuls, while the default
model ships as a Q4_1 GGUF for which llama.cpp has hand-written quantized dot products (issue 13: one
stream 86.8 tok/s from ``llama-server`` against 11.4 from the torch path on a 2-core Zen 3).

Only the forward pass is llama.cpp's. Every engine row gets a llama.cpp sequence id (a *slot*) while it
runs, and all rows share one KV cache (``kv_unified``), so the cache holds exactly the rows' tokens, no
padding (:class:`~tgi_course.engine.scheduler.SumCost`). A prefill is one ``llama_decode`` over the new
prompts (in chunks of ``n_batch``) asking for logits at each prompt's last token; a decode step is one
``llama_decode`` with one token per row. A row that leaves has its cells removed and its slot reused.
Logits come back to the engine, which samples, applies penalties, grammars and seeds exactly as for the
transformers runner, so both runners serve the same API.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..scheduler import SumCost
from .base import ModelRunner

log = logging.getLogger(__name__)

# Rows decoded together on this runner: past this the unified cache's attention grows faster than the batch
# pays back (see LlamaCppRunner). More streams queue and join as rows finish.
MAX_ROWS = 16
# An idle runner frees its KV cache after this long (see LlamaCppRunner.idle).
RELEASE_AFTER_IDLE_SECONDS = 300.0

_backend_lock = threading.Lock()
_backend_ready = False
_log_callback: Any = None  # kept alive for as long as llama.cpp may call it


def import_llama_cpp() -> Any:
    """The ctypes bindings of llama-cpp-python (``llama_cpp.llama_cpp``); ImportError when not installed."""
    import llama_cpp.llama_cpp as lib  # noqa: PLC0415 - optional dependency, imported on demand

    return lib


def llama_cpp_available() -> str | None:
    """None when llama.cpp can run here, else why not (one line, for the start-up message)."""
    try:
        import_llama_cpp()
    except (ImportError, OSError) as exc:  # OSError: the shared library is there but does not load
        return f"llama-cpp-python is not installed ({exc.__class__.__name__}: {exc}); `make setup` builds it when a C/C++ compiler is present"
    return None


def _init_backend(lib: Any) -> None:
    """Once per process: route llama.cpp's own logging to Python logging, then initialise its backend.

    llama.cpp prints every tensor of a model load to stderr; a notebook (and nbval, which compares stderr)
    should not see that, so it goes to the ``tgi_course.engine.runners.llama_cpp`` logger at DEBUG.
    """
    global _backend_ready, _log_callback
    with _backend_lock:
        if _backend_ready:
            return

        def forward(level: int, text: bytes | None, _user: Any) -> None:
            if not text:
                return
            message = text.decode("utf-8", "replace").rstrip()
            # ggml_log_level: 1 debug, 2 info, 3 warn, 4 error, 5 continuation. Its warnings are advice for
            # its own CLI ("n_ctx_seq > n_ctx_train" for a unified cache shared by many rows): INFO here.
            if level == 4:
                log.error("llama.cpp: %s", message)
            elif level == 3:
                log.info("llama.cpp: %s", message)
            elif message:
                log.debug("llama.cpp: %s", message)

        _log_callback = lib.llama_log_callback(forward)
        lib.llama_log_set(_log_callback, ctypes.c_void_p(0))
        lib.llama_backend_init()
        _backend_ready = True


# The formats a GGUF can be re-encoded into for the runner (GGUF_WEIGHTS), as llama.cpp's file types.
REENCODINGS = {"f16": 1, "bf16": 32, "f32": 0}


def reencode_gguf(source: Path, target: Path, weights: str, threads: int = 0) -> None:
    """Write ``source``'s tensors to ``target`` as ``weights`` (de-quantized), with llama.cpp's own quantizer.

    Metadata (tokenizer, chat template) is copied as is; 1-D tensors stay float32.
    """
    lib = import_llama_cpp()
    _init_backend(lib)
    params = lib.llama_model_quantize_default_params()
    params.ftype = REENCODINGS[weights]
    params.allow_requantize = True  # the source is quantized: de-quantize it first
    params.nthread = threads or os.cpu_count() or 1
    status = lib.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0:
        raise RuntimeError(f"llama.cpp could not re-encode {source} as {weights} (status {status})")


class LlamaCppModel:
    """A GGUF's weights loaded by llama.cpp (memory-mapped); shared by the contexts made from it."""

    def __init__(self, path: Path) -> None:
        self.lib = import_llama_cpp()
        _init_backend(self.lib)
        lib = self.lib
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0  # the CPU build; a GPU is the transformers runner's (or vLLM's) job
        self.path = path
        self.handle = lib.llama_model_load_from_file(str(path).encode(), params)
        if not self.handle:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self.vocab = lib.llama_model_get_vocab(self.handle)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(lib.llama_model_n_ctx_train(self.handle))
        description = ctypes.create_string_buffer(256)
        lib.llama_model_desc(self.handle, description, len(description))
        self.description = description.value.decode("utf-8", "replace")  # e.g. "llama 135M Q4_1"

    @property
    def weight_type(self) -> str:
        """The file's weight format as llama.cpp names it (the last word of its description), e.g. ``Q4_1``."""
        return self.description.rsplit(" ", 1)[-1] if self.description else "gguf"

    def close(self) -> None:
        if getattr(self, "handle", None):
            self.lib.llama_model_free(self.handle)
            self.handle = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may already be gone
            pass


class LlamaCppRunner(ModelRunner):
    """Rows are llama.cpp sequences in one unified KV cache of ``kv_tokens`` cells.

    Unified (one pool of cells for every row) so that the cache holds exactly the rows' tokens and any row may
    grow to MAX_TOTAL_TOKENS. Its price: each row's attention scans every used cell of the pool, masked, so a
    decode step costs about rows x (all rows' tokens) on top of the weights. Measured on 2 cores with the F16
    weights and ~100-token rows: 16 rows 83-88 ms a step (181-192 tok/s), 48 rows 231 ms, 64 rows 554 ms
    (115 tok/s). Hence :data:`MAX_ROWS`. (llama.cpp's per-sequence streams, ``kv_unified`` off, keep attention
    per row but give every row a fixed n_ctx / rows cells, and were slower here once slots were reused.)
    """

    cost = SumCost()

    def __init__(self, model: LlamaCppModel, kv_tokens: int, max_rows: int, max_prefill_tokens: int, threads: int = 0) -> None:
        self.model = model
        self.lib = model.lib
        self.kv_tokens = kv_tokens
        self.max_rows = max_rows
        # One llama_decode takes up to n_batch tokens: a decode step holds at most max_rows, a prefill is cut
        # into chunks of this size.
        self.capacity = max(max_prefill_tokens, max_rows)
        self.threads = threads or os.cpu_count() or 1
        self.ctx: Any = None
        self.memory: Any = None
        self.batch: Any = None
        self._free_slots = list(range(max_rows - 1, -1, -1))  # pop() hands out 0 first
        self._slot: dict[int, int] = {}  # engine sequence id -> llama.cpp sequence id
        self._length: dict[int, int] = {}  # engine sequence id -> tokens in its cache (next position)
        self._ids: list[int] = []  # row order of decode's logits

    @property
    def allocated(self) -> bool:
        """Whether the context (and its KV cache) exists now."""
        return self.ctx is not None

    def _ensure_context(self) -> None:
        """Make the context on first use: llama.cpp allocates and zeroes every KV cell up front (about 23 KB a
        token for the default model, 1.5 GB at the default 65,536), so a server that nobody uses holds none."""
        if self.ctx is not None:
            return
        lib = self.lib
        params = lib.llama_context_default_params()
        params.n_ctx = self.kv_tokens
        params.n_seq_max = self.max_rows
        params.n_batch = self.capacity
        params.n_threads = self.threads
        params.n_threads_batch = self.threads
        params.kv_unified = True  # one pool of cells for all rows: the budget is the sum of their tokens
        params.no_perf = True
        ctx = lib.llama_init_from_model(self.model.handle, params)
        if not ctx:
            raise RuntimeError(f"llama.cpp could not make a context of {self.kv_tokens} KV cells for {self.max_rows} rows")
        self.ctx = ctx
        self.memory = lib.llama_get_memory(ctx)
        # llama.cpp caps n_batch at n_ctx, and a llama_decode over n_batch tokens aborts the process (a
        # GGML_ASSERT, not an error code): chunks follow what the context really took.
        self.capacity = min(self.capacity, int(lib.llama_n_batch(ctx)))
        self.batch = lib.llama_batch_init(self.capacity, 0, 1)

    def idle(self, seconds: float) -> None:
        # A laptop keeps the course server up all day: give the KV cache back after a while without work. The
        # next request makes it again (about 1 s at 65,536 cells on 2 cores, mostly zeroing it).
        if seconds >= RELEASE_AFTER_IDLE_SECONDS and not self._ids:
            self.close()

    # -- the interface -----------------------------------------------------------------------------
    @property
    def seq_ids(self) -> list[int]:
        return list(self._ids)

    def prefill(self, seq_ids: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        self._ensure_context()
        if len(self._free_slots) < len(seq_ids):
            raise RuntimeError(f"{len(seq_ids)} new rows but only {len(self._free_slots)} llama.cpp sequences free")
        slots = [self._free_slots.pop() for _ in seq_ids]
        # (slot, token, position, wants logits) for every prompt token, rows one after another.
        tokens = [
            (slot, int(token), position, position == len(prompt) - 1)
            for slot, prompt in zip(slots, prompts)
            for position, token in enumerate(prompt)
        ]
        try:
            logits = [self._run(tokens[start : start + self.capacity]) for start in range(0, len(tokens), self.capacity)]
        except BaseException:
            for slot in slots:  # chunks that ran left cells behind
                self.lib.llama_memory_seq_rm(self.memory, slot, -1, -1)
            self._free_slots.extend(slots)
            raise
        for seq_id, slot, prompt in zip(seq_ids, slots, prompts):
            self._slot[seq_id] = slot
            self._length[seq_id] = len(prompt)
            self._ids.append(seq_id)
        return torch.cat([chunk for chunk in logits if chunk.shape[0]])

    def decode(self, next_tokens: dict[int, int]) -> torch.Tensor:
        tokens = [(self._slot[i], int(next_tokens[i]), self._length[i], True) for i in self._ids]
        logits = self._run(tokens)
        for i in self._ids:
            self._length[i] += 1
        return logits

    def drop(self, seq_ids: Collection[int]) -> None:
        gone = [i for i in seq_ids if i in self._slot]
        if not gone:
            return
        for seq_id in gone:
            slot = self._slot.pop(seq_id)
            del self._length[seq_id]
            self.lib.llama_memory_seq_rm(self.memory, slot, -1, -1)
            self._free_slots.append(slot)
        dropped = set(gone)
        self._ids = [i for i in self._ids if i not in dropped]

    def reset(self) -> None:
        if self.memory is not None:
            self.lib.llama_memory_clear(self.memory, True)
        self._free_slots.extend(self._slot.values())
        self._slot.clear()
        self._length.clear()
        self._ids = []

    def close(self) -> None:
        """Free the context; rows are forgotten (the engine only closes an idle or stopped runner)."""
        if getattr(self, "ctx", None):
            self.lib.llama_batch_free(self.batch)
            self.lib.llama_free(self.ctx)
            self.ctx = self.memory = self.batch = None
            self._free_slots.extend(self._slot.values())
            self._slot.clear()
            self._length.clear()
            self._ids = []

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- one llama_decode ------------------------------------------------------------------------
    def _run(self, tokens: Sequence[tuple[int, int, int, bool]]) -> torch.Tensor:
        """Decode ``(slot, token, position, wants_logits)`` entries as one batch; logits of the wanted ones."""
        if len(tokens) > self.capacity:  # the batch's arrays hold capacity entries: never write past them
            raise RuntimeError(f"{len(tokens)} tokens in one llama_decode, but the context takes at most {self.capacity}")
        batch = self.batch
        outputs = 0
        for i, (slot, token, position, wanted) in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = slot
            batch.logits[i] = wanted
            outputs += wanted
        batch.n_tokens = len(tokens)
        status = self.lib.llama_decode(self.ctx, batch)
        if status != 0:
            # 1: no room in the KV cache for this batch (the state is left as before the call).
            reason = "no free KV cells" if status == 1 else "aborted" if status == 2 else "error"
            raise RuntimeError(f"llama_decode returned {status} ({reason}) for {len(tokens)} tokens")
        if outputs == 0:
            return torch.empty((0, self.model.n_vocab), dtype=torch.float32)
        pointer = self.lib.llama_get_logits(self.ctx)
        # Copied: llama.cpp overwrites this buffer at the next llama_decode.
        return torch.from_numpy(np.ctypeslib.as_array(pointer, shape=(outputs, self.model.n_vocab)).copy())
