"""The seam between the engine loop and whatever runs the model.

A runner holds the KV cache of the running rows and computes logits; it knows nothing of sampling,
text or clients. Rows are named by the engine's sequence ids, so a runner may keep them in any
layout (a left-padded tensor, llama.cpp sequence ids, pages) and the engine never indexes into it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence

import torch

from ..scheduler import CostModel


class ModelRunner(ABC):
    """Prefill new rows, decode one token for every row, drop rows. Called from the loop thread only."""

    #: How this runner's cache fills up, for the scheduler's admission budgets.
    cost: CostModel
    #: Most rows it decodes together, when that is below MAX_BATCH_SIZE (the engine admits no more); None: no cap.
    max_rows: int | None = None

    @property
    @abstractmethod
    def seq_ids(self) -> list[int]:
        """The rows in the order of the logits :meth:`decode` returns."""

    @abstractmethod
    def prefill(self, seq_ids: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Read the prompts; the rows join the batch. Returns last-position logits [len(prompts), vocab]."""

    @abstractmethod
    def decode(self, next_tokens: dict[int, int]) -> torch.Tensor:
        """Feed each row its next token; returns logits [rows, vocab] in :attr:`seq_ids` order."""

    @abstractmethod
    def drop(self, seq_ids: Collection[int]) -> None:
        """Forget these rows and free their cache (unknown ids are ignored)."""

    def reset(self) -> None:
        """Forget every row (after a failed step, whose cache state cannot be trusted)."""
        self.drop(list(self.seq_ids))

    def idle(self, seconds: float) -> None:
        """Told by the loop, every few seconds while nothing runs, how long it has been idle (a runner may free memory)."""

    def close(self) -> None:
        """Free what the runner holds outside Python's heap (llama.cpp's context); the runner is unusable after."""
