"""What a request asks the engine for, and the events the engine answers with.

Plain dataclasses: the HTTP layer builds them from wire models, in-process users build them directly.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Union

import torch

# A per-request logits processor: sees the tokens generated so far and the row of logits for the next
# token (float32, shape [vocab]) and returns the row to sample from. Grammar-constrained decoding
# plugs in here; it runs inside the batched step, only for the requests that carry one.
LogitsProcessor = Callable[[Sequence[int], torch.Tensor], torch.Tensor]

FinishReason = Literal["length", "eos_token", "stop_sequence"]


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings of one sequence. ``temperature == 0`` means greedy, as in the OpenAI API."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    seed: int | None = None
    repetition_penalty: float = 1.0  # TGI/transformers style, over prompt and generated tokens
    frequency_penalty: float = 0.0  # OpenAI style, over generated tokens only
    presence_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0
    ignore_eos: bool = False
    logits_processors: tuple[LogitsProcessor, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def needs_penalties(self) -> bool:
        return self.repetition_penalty != 1.0 or self.frequency_penalty != 0.0 or self.presence_penalty != 0.0


_request_counter = itertools.count()


@dataclass
class GenerationRequest:
    """One sequence to generate: token ids of the prompt and how to decode."""

    prompt_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = field(default_factory=lambda: f"req-{next(_request_counter)}")


@dataclass(frozen=True)
class TopLogprob:
    token_id: int
    text: str
    logprob: float


@dataclass(frozen=True)
class TokenEvent:
    """One generated token. ``text`` is the display text released by this token: it can be empty while
    the decoder waits for the rest of a multi-byte character or for a possible stop sequence."""

    index: int  # position among generated tokens, from 0
    token_id: int
    token_text: str
    special: bool
    text: str
    logprob: float | None = None
    top_logprobs: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class FinishEvent:
    """The last event of a successful sequence."""

    reason: FinishReason
    text: str  # the whole generated text, stop sequence excluded
    prompt_tokens: int
    generated_tokens: int
    seed: int | None
    queue_seconds: float
    inference_seconds: float
    stop: str | None = None  # the stop sequence that ended it, when reason == "stop_sequence"

    @property
    def text_with_stop(self) -> str:
        """The text with the matched stop sequence kept, as TGI's own routes return it (OpenAI's drop it)."""
        return self.text + (self.stop or "")


# Why a sequence ended without finishing: its own generation failed (TGI's 424), the server is stopping
# (503), or the caller cancelled it (nobody is listening any more).
ErrorKind = Literal["generation", "shutdown", "cancelled"]


@dataclass(frozen=True)
class ErrorEvent:
    """The last event of a sequence that ended without finishing."""

    message: str
    kind: ErrorKind = "generation"


Event = Union[TokenEvent, FinishEvent, ErrorEvent]
