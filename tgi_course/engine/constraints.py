"""Grammar-constrained decoding with xgrammar, through the engine's per-request logits-processor hook.

A :class:`Grammars` object belongs to one tokenizer: it compiles JSON schemas and regular expressions into
grammars (cached: a tool list or a schema sent with every request compiles once). A compiled grammar hands
out one :class:`GrammarProcessor` per sequence; the processor masks every token the grammar forbids. Once
the grammar is complete only the end-of-sequence tokens stay allowed, so a constrained sequence ends by
itself with ``eos_token`` instead of running on to ``max_tokens``.

Why xgrammar (``python -m bench.grammar_libs``, 1 thread, 49,152-token vocabulary, noisy 2-core machine):
one decode step's grammar work (fill the mask, apply it to the logits row, accept the token) costs
xgrammar 0.2.8 ~30-55 us with the numpy masking below, llguidance 1.9.1 ~60-130 us, outlines-core 0.2.14
~80-1000 us (and 70-260 ms to build each index, against 1-20 ms for the other two). xgrammar's mask fill alone
is ~7 us; it also has the structural tags that let ``tool_choice: auto`` mix free text and calls.
JSON is generated compact (``{"a": 1, "b": [2, 3]}``), without free whitespace: small models otherwise
loop on spaces and newlines inside an object until ``max_tokens``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


class GrammarError(ValueError):
    """A schema or regular expression that cannot be compiled; the message says what is wrong."""


# Caps that keep one request from occupying the compiler (and the memory of the cache) for everybody.
# A tool list of the course's size is ~1 KB and compiles in ~10 ms; these leave two orders of magnitude.
MAX_GRAMMAR_BYTES = 65_536  # schema, regex or tool-schema text
COMPILE_TIMEOUT_SECONDS = 10.0
CACHE_BYTES = 64 * 2**20  # compiled grammars kept for reuse, by xgrammar's own size of each


class _GrammarCache:
    """Least recently used compiled grammars, bounded by their total size in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[tuple, tuple[CompiledGrammar, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> CompiledGrammar | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: tuple, grammar: CompiledGrammar, size: int) -> None:
        with self._lock:
            if key in self._items or size > self.max_bytes:
                return
            self._items[key] = (grammar, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self.bytes -= dropped

    def __len__(self) -> int:
        return len(self._items)


class GrammarProcessor:
    """Logits processor of one sequence: advances its matcher over newly generated tokens, then masks.

    It keeps to the engine's plain ``(generated, row) -> row`` hook: the tokens generated since the last call
    were chosen under this processor's own mask, so the matcher accepts them before masking the next row.
    Once the grammar is complete only the stop tokens stay allowed, so the sequence ends on the next step.
    """

    def __init__(self, compiled: Any, vocab_size: int, stop_token_ids: Sequence[int] = ()) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        self._matcher = xgr.GrammarMatcher(compiled)
        self._bitmask = xgr.allocate_token_bitmask(1, vocab_size)
        self._vocab_size = vocab_size
        self._stop_token_ids = torch.tensor(sorted(stop_token_ids), dtype=torch.long)
        self._accepted = 0
        self._failed = False

    def __call__(self, generated: Sequence[int], row: torch.Tensor) -> torch.Tensor:
        if not self._failed:
            try:
                self._advance(generated)
            except Exception:
                # The engine fails every request of a step that raises; a matcher that breaks (a library bug,
                # a token it refuses) ends only its own sequence, on a stop token.
                log.exception("grammar matcher failed; ending this constrained sequence")
                self._failed = True
        if self._failed and self._stop_token_ids.numel():
            index = self._stop_token_ids.to(row.device)
            kept = row[index]
            row.fill_(float("-inf"))
            row[index] = kept
        elif row.device.type == "cpu":
            _mask_cpu_row(row, self._bitmask, self._vocab_size)
        else:
            self._xgr.apply_token_bitmask_inplace(row.view(1, -1), self._bitmask.to(row.device, non_blocking=True))
        return row

    def _advance(self, generated: Sequence[int]) -> None:
        for token_id in generated[self._accepted :]:
            if self._matcher.is_terminated():
                break  # a stop token was generated under `ignore_eos`: keep the last mask (stop tokens only)
            if not self._matcher.accept_token(int(token_id)):
                raise ValueError(f"the grammar refused token {int(token_id)}, which its own mask allowed")
        self._accepted = len(generated)
        if not self._matcher.is_terminated():
            self._matcher.fill_next_token_bitmask(self._bitmask)


def _mask_cpu_row(row: torch.Tensor, bitmask: torch.Tensor, vocab_size: int) -> None:
    """Set the logits of forbidden tokens to -inf, in place.

    Unpacking the inverted bitmask with numpy costs ~30 us on 49,152 tokens whatever the grammar allows;
    xgrammar's own CPU kernel costs 25 us when most tokens are allowed but ~200 us when few are (a function
    name, a number), measured with ``python -m bench.grammar_libs`` and a micro-benchmark of both.
    """
    forbidden = np.unpackbits(np.invert(bitmask.numpy().view(np.uint8)), bitorder="little", count=vocab_size).view(np.bool_)
    values = row.numpy()
    width = min(values.shape[-1], vocab_size)
    np.copyto(values[:width], -np.inf, where=forbidden[:width])
    if values.shape[-1] > vocab_size:
        values[vocab_size:] = -np.inf  # padding columns of the logits are never tokens


class CompiledGrammar:
    """A grammar compiled for one tokenizer; ``processor()`` gives each sequence its own matcher."""

    def __init__(self, compiled: Any, vocab_size: int, stop_token_ids: Sequence[int] = ()) -> None:
        self._compiled = compiled
        self._vocab_size = vocab_size
        self._stop_token_ids = tuple(stop_token_ids)

    def processor(self) -> GrammarProcessor:
        return GrammarProcessor(self._compiled, self._vocab_size, self._stop_token_ids)


class Grammars:
    """Compiles JSON schemas and regexes for one tokenizer. Thread-safe; compiled grammars are cached.

    Compilation runs on a worker of its own and is waited for at most ``compile_timeout`` seconds: xgrammar
    cannot be interrupted, so a pathological schema finishes in the background (and is cached) while its
    request gets a clear error instead of holding a validation worker.
    """

    def __init__(
        self,
        tokenizer: Any,
        vocab_size: int,
        stop_token_ids: Sequence[int],
        *,
        max_bytes: int = MAX_GRAMMAR_BYTES,
        compile_timeout: float = COMPILE_TIMEOUT_SECONDS,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._stop_token_ids = sorted(stop_token_ids)
        self._compiler: Any = None
        self._lock = threading.Lock()
        self.max_bytes = max_bytes
        self.compile_timeout = compile_timeout
        self.cache = _GrammarCache(cache_bytes)
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tgi-course-grammar")

    def _get_compiler(self) -> Any:
        # Built on first use: importing xgrammar and reading the vocabulary costs ~0.2 s that servers which
        # never see a constrained request should not pay at start-up.
        with self._lock:
            if self._compiler is None:
                import xgrammar as xgr

                info = xgr.TokenizerInfo.from_huggingface(self._tokenizer, vocab_size=self._vocab_size, stop_token_ids=self._stop_token_ids)
                self._compiler = xgr.GrammarCompiler(info, max_threads=1)
            return self._compiler

    def _compile(self, what: str, text: str, key: tuple, compile_with: Callable[[Any], Any]) -> CompiledGrammar:
        size = len(text.encode("utf-8"))
        if size > self.max_bytes:
            raise GrammarError(f"the {what} is {size} bytes; at most {self.max_bytes} bytes can be compiled")
        cached = self.cache.get(key)
        if cached is not None:
            return cached

        def build() -> CompiledGrammar:
            compiled = compile_with(self._get_compiler())
            grammar = CompiledGrammar(compiled, self._vocab_size, self._stop_token_ids)
            self.cache.put(key, grammar, int(getattr(compiled, "memory_size_bytes", 0)) or size)
            return grammar

        future = self._pool.submit(build)
        try:
            return future.result(timeout=self.compile_timeout)
        except FutureTimeout:
            raise GrammarError(f"compiling the {what} took longer than {self.compile_timeout:g} s; simplify it") from None
        except Exception as exc:  # xgrammar raises RuntimeError/ValueError subclasses with a readable message
            raise GrammarError(f"invalid {what}: {_first_line(exc)}") from None

    def json_schema(self, schema_text: str, strict: bool = True) -> CompiledGrammar:
        """``schema_text`` is the schema as JSON text (the cache key)."""
        return self._compile(
            "JSON schema", schema_text, ("json", schema_text, strict),
            lambda c: c.compile_json_schema(schema_text, any_whitespace=False, strict_mode=strict),
        )

    def regex(self, pattern: str) -> CompiledGrammar:
        return self._compile("regular expression", pattern, ("regex", pattern), lambda c: c.compile_regex(pattern))

    def structural_tag(self, tag_text: str) -> CompiledGrammar:
        """xgrammar's structural tag (free text, with JSON-schema sections after trigger strings)."""
        return self._compile("tool schema", tag_text, ("tag", tag_text), lambda c: c.compile_structural_tag(tag_text))

    def for_structural_tag(self, tag: dict[str, Any]) -> CompiledGrammar:
        return self.structural_tag(json.dumps(tag))

    def for_schema(self, schema: dict[str, Any], strict: bool = True) -> CompiledGrammar:
        if not isinstance(schema, dict):
            raise GrammarError(f"invalid JSON schema: expected an object, got {type(schema).__name__}")
        # Key order is kept, not sorted: properties are generated in the schema's order.
        return self.json_schema(json.dumps(schema), strict)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0][:300]
