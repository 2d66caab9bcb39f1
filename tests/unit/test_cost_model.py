"""The cost model (rsdlib.decoding.cost_model): RSD speedup from pass costs and acceptance."""

from __future__ import annotations

import numpy as np
import pytest

from rsdlib.decoding import expected_main_passes
from rsdlib.decoding.cost_model import predicted_speedup

FIRST, BLOCK = 5.0, 2.0
PASS_MS = {1: BLOCK, 2: 2.5, 3: 3.0, 4: 3.5}  # a verify pass costs more than a block pass, less than k


def test_perfect_acceptance_without_drafting_cost_is_the_ratio_of_pass_costs() -> None:
    # L = 4, layer 0 in the first pass: one round drafts layers 1-2, verifies blocks 1-3, takes the bonus.
    speedup = predicted_speedup([None, 1.0, 1.0, 1.0], gamma=2, first_pass_ms=FIRST, pass_ms=PASS_MS)
    assert speedup == pytest.approx((FIRST + 3 * BLOCK) / (FIRST + PASS_MS[3]))


def test_zero_acceptance_slows_down_by_the_verify_overhead() -> None:
    # Every round commits one layer: verify passes over min(g + 1, L - c) = 2, 2, 1 blocks.
    speedup = predicted_speedup([None, 0.0, 0.0, 0.0], gamma=1, first_pass_ms=0.0, pass_ms=PASS_MS)
    assert speedup == pytest.approx(3 * BLOCK / (PASS_MS[2] + PASS_MS[2] + PASS_MS[1]))
    assert speedup < 1
    # With verify passes as cheap as block passes, rejecting everything costs nothing extra.
    flat = {k: BLOCK for k in PASS_MS}
    assert predicted_speedup([None, 0, 0, 0], gamma=2, first_pass_ms=FIRST, pass_ms=flat) == pytest.approx(
        1.0
    )


def test_drafting_cost_is_paid_every_round() -> None:
    free = predicted_speedup([None, 0.0, 0.0, 0.0], gamma=1, first_pass_ms=FIRST, pass_ms=PASS_MS)
    paid = predicted_speedup(
        [None, 0.0, 0.0, 0.0], gamma=1, first_pass_ms=FIRST, pass_ms=PASS_MS, draft_ms=1.0
    )
    assert paid == pytest.approx((FIRST + 3 * BLOCK) / (FIRST + 2 * PASS_MS[2] + PASS_MS[1] + 3 * 1.0))
    assert paid < free


def test_monotone_in_acceptance() -> None:
    rng = np.random.default_rng(0)
    for gamma in (1, 2, 3):
        rates = np.zeros(3)
        last = predicted_speedup([None, *rates], gamma=gamma, first_pass_ms=FIRST, pass_ms=PASS_MS)
        for _ in range(30):
            rates = np.minimum(1.0, rates + rng.uniform(0, 0.1, size=3) * (rng.random(3) < 0.5))
            now = predicted_speedup([None, *rates], gamma=gamma, first_pass_ms=FIRST, pass_ms=PASS_MS)
            assert now >= last - 1e-12
            last = now


@pytest.mark.parametrize("gamma", [1, 2, 3])
def test_equal_pass_costs_count_the_expected_main_passes(gamma: int) -> None:
    alpha = [None, 0.7, 0.4, 0.9]
    flat = {k: BLOCK for k in PASS_MS}
    speedup = predicted_speedup(alpha, gamma=gamma, first_pass_ms=0.0, pass_ms=flat)
    assert speedup == pytest.approx(3 / expected_main_passes(alpha, gamma, start=1))


def test_bad_inputs_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        predicted_speedup([None, 1.5, 0.5, 0.5], gamma=2, first_pass_ms=FIRST, pass_ms=PASS_MS)
    with pytest.raises(ValueError, match="lacks the cost of a pass over"):
        predicted_speedup([None, 0.5, 0.5, 0.5], gamma=2, first_pass_ms=FIRST, pass_ms={1: BLOCK, 2: 2.5})
    with pytest.raises(ValueError, match="gamma"):
        predicted_speedup([None, 0.5, 0.5, 0.5], gamma=0, first_pass_ms=FIRST, pass_ms=PASS_MS)
