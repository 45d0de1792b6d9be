"""What to run next: admission of waiting sequences into the running batch, by token budgets.

Pure policy over sequence ids and token counts: no tensors, no threads, no model. The loop asks
:meth:`Scheduler.admit` which waiting sequences join before each step and tells the scheduler when a
sequence leaves. What a batch of sequences costs in memory and in one prefill depends on how the model
runner lays out its KV cache, so the runner supplies a :class:`CostModel` (a left-padded cache holds
``rows x longest row`` slots; a paged one holds the sum of the rows).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class BatchLimits:
    """Token budgets of the running batch (TGI's MAX_BATCH_* settings)."""

    max_batch_prefill_tokens: int = 4096
    max_batch_total_tokens: int = 16384
    max_batch_size: int = 64


class CostModel(Protocol):
    """How many KV-cache slots and prefill positions a set of sequences costs on one runner."""

    def kv_slots(self, reserved: Sequence[int]) -> int:
        """Slots held at the peak by sequences that each may grow to ``reserved[i]`` tokens."""

    def prefill_positions(self, prompt_lengths: Sequence[int]) -> int:
        """Positions computed by one prefill of prompts of these lengths."""


class SumCost:
    """A cache that holds exactly each row's tokens (paged or per-sequence)."""

    def kv_slots(self, reserved: Sequence[int]) -> int:
        return sum(reserved)

    def prefill_positions(self, prompt_lengths: Sequence[int]) -> int:
        return sum(prompt_lengths)


class PaddedCost:
    """A left-padded cache: every row is as wide as the widest one."""

    def kv_slots(self, reserved: Sequence[int]) -> int:
        return len(reserved) * max(reserved, default=0)

    def prefill_positions(self, prompt_lengths: Sequence[int]) -> int:
        return len(prompt_lengths) * max(prompt_lengths, default=0)


@dataclass(frozen=True)
class _Budget:
    prompt_tokens: int
    max_new_tokens: int

    @property
    def reserved(self) -> int:
        return self.prompt_tokens + self.max_new_tokens


class Scheduler:
    """First come, first served admission under three budgets: rows, KV slots and prefill positions.

    A sequence is in exactly one of two places, ``waiting`` or ``running``, from :meth:`add` until
    :meth:`remove`. An idle batch always takes the head of the queue, so a request larger than a budget
    (which validation normally prevents) runs alone instead of waiting for ever.
    """

    def __init__(self, limits: BatchLimits, cost: CostModel) -> None:
        self.limits = limits
        self.cost = cost
        self._waiting: OrderedDict[int, _Budget] = OrderedDict()
        self._running: dict[int, _Budget] = {}

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    def add(self, seq_id: int, prompt_tokens: int, max_new_tokens: int) -> None:
        if seq_id in self._waiting or seq_id in self._running:
            raise ValueError(f"sequence {seq_id} is already scheduled")
        self._waiting[seq_id] = _Budget(prompt_tokens, max_new_tokens)

    def remove(self, seq_id: int) -> str | None:
        """Forget a sequence wherever it is; returns ``"waiting"``, ``"running"`` or None if unknown."""
        if self._waiting.pop(seq_id, None) is not None:
            return "waiting"
        if self._running.pop(seq_id, None) is not None:
            return "running"
        return None

    def kv_slots_in_use(self) -> int:
        return self.cost.kv_slots([b.reserved for b in self._running.values()])

    def admit(self) -> list[int]:
        """Move waiting sequences that fit into ``running``, in arrival order; returns their ids."""
        limits = self.limits
        reserved = [b.reserved for b in self._running.values()]
        prompts: list[int] = []
        admitted: list[int] = []
        for seq_id, budget in list(self._waiting.items()):
            rows_ok = len(reserved) + 1 <= limits.max_batch_size
            kv_ok = self.cost.kv_slots([*reserved, budget.reserved]) <= limits.max_batch_total_tokens
            prefill_ok = self.cost.prefill_positions([*prompts, budget.prompt_tokens]) <= limits.max_batch_prefill_tokens
            if not (rows_ok and kv_ok and prefill_ok) and reserved:
                break  # strict arrival order: a large request at the head is not overtaken for ever
            del self._waiting[seq_id]
            self._running[seq_id] = budget
            reserved.append(budget.reserved)
            prompts.append(budget.prompt_tokens)
            admitted.append(seq_id)
        return admitted
