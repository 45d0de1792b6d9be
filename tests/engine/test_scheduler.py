"""The scheduler is pure policy: these tests use ids and token counts only, no model and no threads."""

from __future__ import annotations

import pytest

from tgi_course.engine.scheduler import BatchLimits, PaddedCost, Scheduler, SumCost


def scheduler(cost=None, **limits) -> Scheduler:
    return Scheduler(BatchLimits(**{"max_batch_prefill_tokens": 100, "max_batch_total_tokens": 1000, "max_batch_size": 4, **limits}), cost or SumCost())


def test_admits_in_arrival_order_up_to_the_row_limit():
    s = scheduler()
    for i in range(6):
        s.add(i, prompt_tokens=10, max_new_tokens=10)
    assert s.admit() == [0, 1, 2, 3]
    assert (s.running, s.waiting) == (4, 2)
    assert s.admit() == []  # full
    s.remove(1)
    assert s.admit() == [4]


def test_prefill_budget_splits_a_burst_over_several_steps():
    s = scheduler(max_batch_size=64)
    for i in range(5):
        s.add(i, prompt_tokens=40, max_new_tokens=1)
    assert s.admit() == [0, 1]  # 80 of 100 prefill positions; a third would need 120
    assert s.admit() == [2, 3]
    assert s.admit() == [4]


def test_kv_budget_counts_padded_slots_on_a_padded_runner():
    # One long request (prompt 400 + 100 new) beside short chats: a left-padded cache gives every row the
    # long row's width, so the budget must charge rows x widest, not the sum.
    padded = scheduler(PaddedCost(), max_batch_size=64, max_batch_prefill_tokens=10_000, max_batch_total_tokens=1000)
    summed = scheduler(SumCost(), max_batch_size=64, max_batch_prefill_tokens=10_000, max_batch_total_tokens=1000)
    for s in (padded, summed):
        s.add(0, prompt_tokens=400, max_new_tokens=100)
        for i in range(1, 10):
            s.add(i, prompt_tokens=20, max_new_tokens=30)
    assert padded.admit() == [0, 1]  # 2 x 500 = 1000 slots; a third row would make 1500
    assert padded.kv_slots_in_use() == 1000
    assert summed.admit() == list(range(10))  # 500 + 9 x 50 = 950
    assert summed.kv_slots_in_use() == 950


def test_an_idle_batch_takes_an_oversized_head_instead_of_waiting_for_ever():
    s = scheduler(max_batch_total_tokens=100)
    s.add(0, prompt_tokens=90, max_new_tokens=500)
    s.add(1, prompt_tokens=1, max_new_tokens=1)
    assert s.admit() == [0]
    assert s.admit() == []  # the small one waits behind it: arrival order is kept
    s.remove(0)
    assert s.admit() == [1]


def test_remove_says_where_a_sequence_was_and_ids_are_unique():
    s = scheduler()
    s.add(7, 1, 1)
    with pytest.raises(ValueError):
        s.add(7, 1, 1)
    assert s.remove(7) == "waiting"
    s.add(7, 1, 1)
    s.admit()
    assert s.remove(7) == "running"
    assert s.remove(7) is None
    assert (s.running, s.waiting, s.kv_slots_in_use()) == (0, 0, 0)
