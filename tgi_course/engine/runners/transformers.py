"""The transformers (torch) runner: a left-padded KV cache that rows join and leave between steps.

Rows have different lengths, so the cache is left-padded to a common length and an attention mask
hides the padding; each row keeps its own position ids. Joining pads the shorter side on the left and
concatenates along the batch axis; leaving selects the remaining rows and trims padding columns that no
row needs any more. The model sees one ordinary ``forward`` per step for the whole batch.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from ...models.quantize import prompt_pass
from ..scheduler import PaddedCost
from .base import ModelRunner


def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


class PaddedBatch:
    """KV cache, attention mask and positions of the rows currently being decoded."""

    def __init__(self, model: Any, pad_token_id: int) -> None:
        self._model = model
        self._pad = pad_token_id
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # [rows, columns], 1 where a real token sits
        self.positions: torch.Tensor | None = None  # [rows], position id of the next input token

    @property
    def rows(self) -> int:
        return 0 if self.mask is None else int(self.mask.shape[0])

    @property
    def columns(self) -> int:
        return 0 if self.mask is None else int(self.mask.shape[1])

    @torch.inference_mode()
    def prefill(self, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, PaddedBatch]:
        """Run the prompts as one left-padded forward; return last-position logits and a batch of them."""
        device = self._model.device
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        with prompt_pass():  # int4 layers read prompts with their dense weights: faster for many rows
            out = self._model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=DynamicCache(config=self._model.config),
                use_cache=True,
                logits_to_keep=1,
            )
        fresh = PaddedBatch(self._model, self._pad)
        fresh.cache, fresh.mask = out.past_key_values, mask
        fresh.positions = mask.sum(dim=1)
        return out.logits[:, -1, :], fresh

    @torch.inference_mode()
    def step(self, next_tokens: list[int]) -> torch.Tensor:
        """One decode step, row ``i`` fed ``next_tokens[i]``; returns logits [rows, vocab]."""
        assert self.mask is not None and self.positions is not None
        tokens = torch.tensor(next_tokens, dtype=torch.long, device=self.mask.device)
        ones = torch.ones((self.rows, 1), dtype=self.mask.dtype, device=self.mask.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        out = self._model(
            input_ids=tokens[:, None],
            attention_mask=self.mask,
            position_ids=self.positions[:, None],
            past_key_values=self.cache,
            use_cache=True,
        )
        self.cache = out.past_key_values
        self.positions = self.positions + 1
        return out.logits[:, -1, :]

    def extend(self, other: PaddedBatch) -> None:
        """Append ``other``'s rows after ours."""
        if other.rows == 0:
            return
        if self.rows == 0:
            self.cache, self.mask, self.positions = other.cache, other.mask, other.positions
            return
        assert self.cache is not None and other.cache is not None
        width = max(self.columns, other.columns)

        def pad(t: torch.Tensor, columns: int, dim: int) -> torch.Tensor:
            missing = width - columns
            if missing == 0:
                return t
            spec = [0, 0] * (t.dim() - 1 - dim) + [missing, 0]
            return F.pad(t, spec)

        layers = [
            (
                torch.cat([pad(k1, self.columns, 2), pad(k2, other.columns, 2)], dim=0),
                torch.cat([pad(v1, self.columns, 2), pad(v2, other.columns, 2)], dim=0),
            )
            for (k1, v1), (k2, v2) in zip(_layers(self.cache), _layers(other.cache))
        ]
        self.mask = torch.cat([pad(self.mask, self.columns, 1), pad(other.mask, other.columns, 1)], dim=0)
        self.cache = DynamicCache(ddp_cache_data=layers, config=self._model.config)
        self.positions = torch.cat([self.positions, other.positions])  # type: ignore[list-item]

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in that order) and drop padding columns no remaining row uses."""
        if len(rows) == self.rows:
            return
        if not rows:
            self.cache = self.mask = self.positions = None
            return
        assert self.cache is not None and self.mask is not None
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        first = int(mask.any(dim=0).nonzero()[0].item())
        layers = [
            (k.index_select(0, index)[:, :, first:], v.index_select(0, index)[:, :, first:])
            for k, v in _layers(self.cache)
        ]
        self.cache = DynamicCache(ddp_cache_data=layers, config=self._model.config)
        self.mask = mask[:, first:]
        self.positions = self.positions.index_select(0, index)  # type: ignore[union-attr]


class TransformersRunner(ModelRunner):
    """Runs a transformers causal LM with one :class:`PaddedBatch` for all rows.

    Admission counts padded slots (:class:`PaddedCost`): one long prompt widens every row of the
    batch, so the budget must charge the batch for its widest row, not for the sum of the rows.
    """

    cost = PaddedCost()

    def __init__(self, model: Any, pad_token_id: int) -> None:
        self.model = model
        self.batch = PaddedBatch(model, pad_token_id)
        self._ids: list[int] = []

    @classmethod
    def for_model(cls, model: Any, tokenizer: Any, eos_token_ids: Collection[int]) -> TransformersRunner:
        """Pads with the tokenizer's pad token, else the smallest end-of-sequence id (padding is masked anyway)."""
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_token_ids or {0})
        return cls(model, pad)

    @property
    def seq_ids(self) -> list[int]:
        return list(self._ids)

    def prefill(self, seq_ids: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        logits, fresh = self.batch.prefill(prompts)
        self.batch.extend(fresh)
        self._ids.extend(seq_ids)
        return logits

    def decode(self, next_tokens: dict[int, int]) -> torch.Tensor:
        return self.batch.step([next_tokens[i] for i in self._ids])

    def drop(self, seq_ids: Collection[int]) -> None:
        gone = set(seq_ids)
        if not gone.intersection(self._ids):
            return
        keep = [row for row, seq_id in enumerate(self._ids) if seq_id not in gone]
        self.batch.keep(keep)
        self._ids = [self._ids[row] for row in keep]

    def reset(self) -> None:
        self.batch.keep([])
        self._ids = []
