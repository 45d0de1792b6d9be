"""Choosing the next token for every row of a batch, each row with its own settings.

Greedy rows with no processors are the common case in the course, so the batch's argmax is taken once
and only rows that need more (penalties, processors, sampling, logprobs) are touched one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .params import SamplingParams


@dataclass
class RowState:
    """What sampling needs to remember about one sequence between steps."""

    params: SamplingParams
    prompt_ids: list[int]
    generated: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None


@dataclass(frozen=True)
class RowChoice:
    token_id: int
    logprob: float | None
    top: tuple[tuple[int, float], ...]


def apply_penalties(row: torch.Tensor, state: RowState) -> torch.Tensor:
    params = state.params
    if params.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(state.prompt_ids) | set(state.generated)), dtype=torch.long, device=row.device)
        if seen.numel():
            values = row[seen]
            row[seen] = torch.where(values > 0, values / params.repetition_penalty, values * params.repetition_penalty)
    if state.generated and (params.frequency_penalty or params.presence_penalty):
        ids = torch.tensor(state.generated, dtype=torch.long, device=row.device)
        counts = torch.bincount(ids, minlength=row.shape[-1]).to(row.dtype)
        row -= params.frequency_penalty * counts + params.presence_penalty * (counts > 0).to(row.dtype)
    return row


def sample_row(row: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """Temperature, then top-k, then top-p (nucleus), then a draw from the seeded generator."""
    row = row / params.temperature
    if params.top_k and params.top_k < row.shape[-1]:
        kth = torch.topk(row, params.top_k).values[-1]
        row = row.masked_fill(row < kth, float("-inf"))
    probs = torch.softmax(row, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        # Keep the smallest set whose mass reaches top_p; the first token is always kept.
        drop = cumulative - sorted_probs > params.top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    # Sampling on the CPU with a CPU generator makes a seed give the same text on any device.
    return int(torch.multinomial(probs.cpu(), 1, generator=generator).item())


def choose_next_tokens(logits: torch.Tensor, states: Sequence[RowState]) -> list[RowChoice]:
    """``logits`` is [batch, vocab] for the last position of each row; returns one choice per row."""
    raw = logits.float()
    greedy_ids = raw.argmax(dim=-1).tolist()
    choices: list[RowChoice] = []
    for i, state in enumerate(states):
        params = state.params
        simple = params.greedy and not params.needs_penalties and not params.logits_processors
        token_id = greedy_ids[i]
        if not simple:
            row = raw[i].clone()
            if params.needs_penalties:
                row = apply_penalties(row, state)
            for processor in params.logits_processors:
                row = processor(state.generated, row)
            token_id = int(row.argmax().item()) if params.greedy else sample_row(row, params, state.generator)
        logprob, top = None, ()
        if params.logprobs:
            # Log-probabilities of the model's own distribution (before penalties and temperature), as vLLM reports.
            log_probs = torch.log_softmax(raw[i], dim=-1)
            logprob = float(log_probs[token_id])
            if params.top_logprobs:
                values, ids = torch.topk(log_probs, params.top_logprobs)
                top = tuple(zip(ids.tolist(), values.tolist()))
        choices.append(RowChoice(token_id, logprob, top))
    return choices
