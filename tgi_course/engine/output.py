"""What the tokens mean to a client: sampled token ids in, token and finish events out.

Detokenizing, stop matching and finish reasons live here, apart from the loop, so the same assembly
serves every runner.
"""

from __future__ import annotations

from typing import Any

from .params import FinishReason, SamplingParams, TokenEvent, TopLogprob
from .text import IncrementalDecoder, StopMatcher


class SequenceOutput:
    """Turns one sequence's tokens into :class:`TokenEvent` s and decides when it has finished."""

    def __init__(self, params: SamplingParams, tokenizer: Any, eos: frozenset[int], special: frozenset[int]) -> None:
        self.params = params
        self._tokenizer = tokenizer
        self._eos = eos
        self._special = special
        self._decoder = IncrementalDecoder(tokenizer)
        self._stops = StopMatcher(params.stop)
        self._parts: list[str] = []
        self.generated = 0

    @property
    def matched_stop(self) -> str | None:
        return self._stops.matched

    @property
    def text(self) -> str:
        """Everything released so far (stop sequence excluded)."""
        return "".join(self._parts)

    def accept(self, token_id: int, logprob: float | None, top: tuple[tuple[int, float], ...]) -> tuple[TokenEvent, FinishReason | None]:
        """The event of one sampled token and, if it ends the sequence, why."""
        params = self.params
        index = self.generated
        self.generated += 1
        is_eos = token_id in self._eos and not params.ignore_eos
        delta = "" if is_eos else self._stops.feed(self._decoder.push(token_id))
        reason: FinishReason | None = None
        if is_eos:
            reason = "eos_token"
        elif self._stops.matched is not None:
            reason = "stop_sequence"
        elif self.generated >= params.max_new_tokens:
            reason = "length"
        if reason is not None and reason != "stop_sequence":
            delta += self._stops.flush()
        self._parts.append(delta)
        decode = self._tokenizer.decode
        event = TokenEvent(
            index=index,
            token_id=token_id,
            token_text=decode([token_id], skip_special_tokens=False),
            special=token_id in self._special,
            text=delta,
            logprob=logprob,
            top_logprobs=tuple(TopLogprob(i, decode([i]), lp) for i, lp in top),
        )
        return event, reason
