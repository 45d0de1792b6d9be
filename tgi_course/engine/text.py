"""Token ids to display text, one token at a time, with stop sequences held back.

Byte-level BPE splits characters across tokens, so a token's text may be incomplete on its own; and a
stop sequence may arrive over several tokens and must never reach the client. Both are solved by
holding text back until it is known to be final.
"""

from __future__ import annotations

from typing import Any


class IncrementalDecoder:
    """Decodes a growing list of ids, returning only the newly completed text each time.

    Decoding a small window (``prefix_offset`` onwards) rather than everything keeps the cost per token
    constant; decoding the window twice gives the delta while letting the tokenizer apply its
    whitespace rules with context.
    """

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self.ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        decode = self._tokenizer.decode
        before = decode(self.ids[self._prefix_offset : self._read_offset], skip_special_tokens=self._skip)
        after = decode(self.ids[self._prefix_offset :], skip_special_tokens=self._skip)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self.ids)
            return after[len(before) :]
        return ""


class StopMatcher:
    """Releases text as it becomes safe: never part of a stop sequence, cut at the first match."""

    def __init__(self, stop: tuple[str, ...]) -> None:
        self._stop = tuple(s for s in stop if s)
        self._pending = ""
        self.matched: str | None = None

    def feed(self, delta: str) -> str:
        """Return the text that may be shown now; sets :attr:`matched` when a stop sequence appears."""
        if not self._stop:
            return delta
        buffer = self._pending + delta
        first = min(((buffer.find(s), s) for s in self._stop if s in buffer), default=None)
        if first is not None:
            self.matched = first[1]
            self._pending = ""
            return buffer[: first[0]]
        hold = 0
        for s in self._stop:
            for k in range(min(len(s) - 1, len(buffer)), hold, -1):
                if buffer.endswith(s[:k]):
                    hold = k
                    break
        self._pending = buffer[len(buffer) - hold :] if hold else ""
        return buffer[: len(buffer) - hold]

    def flush(self) -> str:
        """At the end of generation, held-back text turned out not to be a stop sequence."""
        rest, self._pending = self._pending, ""
        return rest
