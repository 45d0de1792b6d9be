"""Choosing the next token for every row of a batch, each row with its own settings.

Greedy rows with no processors are the common case in the course, so the batch's argmax is taken once
and only rows that need more (penalties, processors, sampling, logprobs) are touched one by one.

A row whose logits are not numbers, whose processor raises or that leaves no token to choose gets a
:class:`RowFailure` instead of a choice: it ends alone, and the other rows of the step go on.
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


@dataclass(frozen=True)
class RowFailure:
    """Why no token could be chosen for a row (a generation error of that request only)."""

    message: str


def _unusable_rows(raw: torch.Tensor) -> set[int]:
    """Rows holding NaN or +inf. One sum per row finds candidates (a finite row has a finite sum at these
    magnitudes; a -inf from a mask makes the sum -inf too), then only those rows are checked exactly."""
    sums = raw.sum(dim=-1)
    suspects = (~torch.isfinite(sums)).nonzero().flatten().tolist()
    return {i for i in suspects if bool(torch.isnan(raw[i]).any() or torch.isposinf(raw[i]).any())}


def _check_choosable(row: torch.Tensor) -> None:
    if bool(torch.isnan(row).any()):
        raise ValueError("the logits became NaN after penalties and processors")
    if not bool(torch.isfinite(row).any()):
        raise ValueError("no token is allowed: every logit is -inf after penalties and processors")


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


def choose_next_tokens(logits: torch.Tensor, states: Sequence[RowState]) -> list[RowChoice | RowFailure]:
    """``logits`` is [batch, vocab] for the last position of each row; returns one outcome per row."""
    raw = logits.float()
    greedy_ids = raw.argmax(dim=-1).tolist()
    unusable = _unusable_rows(raw)
    outcomes: list[RowChoice | RowFailure] = []
    for i, state in enumerate(states):
        if i in unusable:
            outcomes.append(RowFailure("the model produced non-finite logits (NaN or inf) for this sequence"))
            continue
        try:
            outcomes.append(_choose(raw, i, state, greedy_ids[i]))
        except Exception as exc:  # a processor or sampler that fails ends its own row only
            outcomes.append(RowFailure(f"{exc.__class__.__name__}: {exc}"))
    return outcomes


def _choose(raw: torch.Tensor, i: int, state: RowState, greedy_id: int) -> RowChoice:
    params = state.params
    simple = params.greedy and not params.needs_penalties and not params.logits_processors
    token_id = greedy_id
    if not simple:
        row = raw[i].clone()
        if params.needs_penalties:
            row = apply_penalties(row, state)
        for processor in params.logits_processors:
            row = processor(state.generated, row)
        _check_choosable(row)
        token_id = int(row.argmax().item()) if params.greedy else sample_row(row, params, state.generator)
    logprob, top = None, ()
    if params.logprobs:
        # Log-probabilities of the model's own distribution (before penalties and temperature), as vLLM reports.
        log_probs = torch.log_softmax(raw[i], dim=-1)
        logprob = float(log_probs[token_id])
        if params.top_logprobs:
            values, ids = torch.topk(log_probs, params.top_logprobs)
            top = tuple(zip(ids.tolist(), values.tolist()))
    return RowChoice(token_id, logprob, top)
