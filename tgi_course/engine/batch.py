"""The running batch's tensors: a left-padded KV cache that rows join and leave between steps.

Rows have different lengths, so the cache is left-padded to a common length and an attention mask
hides the padding; each row keeps its own position ids. Joining pads the shorter side on the left and
concatenates along the batch axis; leaving selects the remaining rows and trims padding columns that no
row needs any more. The model sees one ordinary ``forward`` per step for the whole batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from ..models.quantize import prompt_pass


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
        self.next_tokens: torch.Tensor | None = None  # [rows], token each row feeds next

    @property
    def rows(self) -> int:
        return 0 if self.mask is None else int(self.mask.shape[0])

    @property
    def columns(self) -> int:
        return 0 if self.mask is None else int(self.mask.shape[1])

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]]) -> tuple[torch.Tensor, PaddedBatch]:
        """Run the prompts as one left-padded forward; return last-position logits and a batch of them."""
        device = self._model.device
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
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
    def step(self) -> torch.Tensor:
        """One decode step for every row; returns logits [rows, vocab]."""
        assert self.mask is not None and self.next_tokens is not None and self.positions is not None
        ones = torch.ones((self.rows, 1), dtype=self.mask.dtype, device=self.mask.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        out = self._model(
            input_ids=self.next_tokens[:, None],
            attention_mask=self.mask,
            position_ids=self.positions[:, None],
            past_key_values=self.cache,
            use_cache=True,
        )
        self.cache = out.past_key_values
        self.positions = self.positions + 1
        return out.logits[:, -1, :]

    def set_next_tokens(self, tokens: list[int]) -> None:
        device = self.mask.device if self.mask is not None else "cpu"
        self.next_tokens = torch.tensor(tokens, dtype=torch.long, device=device)

    def extend(self, other: PaddedBatch) -> None:
        """Append ``other``'s rows after ours (both already hold their next tokens)."""
        if other.rows == 0:
            return
        if self.rows == 0:
            self.cache, self.mask, self.positions, self.next_tokens = other.cache, other.mask, other.positions, other.next_tokens
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
        self.next_tokens = torch.cat([self.next_tokens, other.next_tokens])  # type: ignore[list-item]

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in that order) and drop padding columns no remaining row uses."""
        if len(rows) == self.rows:
            return
        if not rows:
            self.cache = self.mask = self.positions = self.next_tokens = None
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
        self.next_tokens = self.next_tokens.index_select(0, index)  # type: ignore[union-attr]
