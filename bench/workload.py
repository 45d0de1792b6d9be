"""The one workload every target runs: fixed prompts, greedy decoding, a fixed number of new tokens.

Standard library only (the llama.cpp worker imports it from the peers' environment).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Sixteen distinct prompts, so that 16 concurrent streams never share a prompt (a server with a prefix
# cache would otherwise get free prefills). They ask for long answers: peers that cannot be told to
# ignore EOS should still run to max_tokens, so every target decodes the same number of tokens.
PROMPTS: tuple[str, ...] = (
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works, part by part, in detail.",
    "Describe a busy market in the morning.",
    "Give advice to someone learning to cook.",
    "Tell me about the history of maps.",
    "Describe the water cycle to a child.",
    "Write a letter to a future astronaut.",
    "Explain why the sky changes colour at sunset.",
    "Describe how bread is made, step by step.",
    "Write a short story about a lost dog finding its way home.",
    "Explain how a library organises its books.",
    "Describe a walk through a forest in autumn.",
    "Give tips for a student starting university.",
    "Explain how trains changed the way people travel.",
    "Write a poem about the sea and describe what it means.",
    "Describe the life of a honeybee.",
)


@dataclass(frozen=True)
class Workload:
    """What is measured. Every target gets exactly this; only the concurrency levels differ per target."""

    prompts: tuple[str, ...] = PROMPTS
    max_tokens: int = 64
    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    rounds: int = 2  # bursts of `concurrency` simultaneous requests measured per level, at least
    min_streams: int = 8  # low levels get more rounds: 2 single streams are too few to trust a median
    warmup_requests: int = 4  # sent together before a target's first level, not measured
    warmup_max_tokens: int = 8
    temperature: float = 0.0  # greedy: identical work on every target and every run
    labels: dict[str, Any] = field(default_factory=dict)  # free-form notes carried into the JSON

    def rounds_for(self, concurrency: int) -> int:
        return max(self.rounds, -(-self.min_streams // concurrency))

    def prompt(self, index: int) -> str:
        return self.prompts[index % len(self.prompts)]

    def messages(self, index: int) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.prompt(index)}]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["prompts"] = list(self.prompts)
        data["concurrency"] = list(self.concurrency)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Workload:
        data = dict(data)
        data["prompts"] = tuple(data.get("prompts", PROMPTS))
        data["concurrency"] = tuple(data.get("concurrency", (1,)))
        return cls(**data)


def tiny(concurrency: tuple[int, ...] = (1, 2)) -> Workload:
    """A workload that finishes in seconds: for tests and the notebook's live cell. Not a measurement."""
    return Workload(max_tokens=4, concurrency=concurrency, rounds=1, min_streams=0, warmup_requests=1, warmup_max_tokens=2)
