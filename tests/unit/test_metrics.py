"""Paired comparisons of two methods on the same episodes: exact McNemar and the counts behind it."""

from __future__ import annotations

import math

import pytest

from rsdlib.metrics import mcnemar_exact_p, paired_outcomes


def episode(task: int, init: int, success: bool, steps: int = 100, chunks: int = 13) -> dict:
    return {
        "suite": "s",
        "task_id": task,
        "init_index": init,
        "success": success,
        "steps": steps,
        "chunks": chunks,
    }


def test_mcnemar_matches_the_binomial_tail_and_is_symmetric():
    # 25 against 10 discordant episodes: 2 * P(X <= 10), X ~ Bin(35, 1/2)
    expected = 2 * sum(math.comb(35, i) for i in range(11)) / 2**35
    assert mcnemar_exact_p(25, 10) == pytest.approx(expected) == pytest.approx(0.0167, abs=5e-4)
    assert mcnemar_exact_p(10, 25) == mcnemar_exact_p(25, 10)
    assert mcnemar_exact_p(0, 0) == 1.0 and mcnemar_exact_p(3, 3) == 1.0
    assert mcnemar_exact_p(6, 0) == pytest.approx(2 / 64)  # six of six one way: p = 0.031
    with pytest.raises(ValueError):
        mcnemar_exact_p(-1, 2)


def test_paired_outcomes_count_only_the_episodes_both_ran():
    a = [episode(0, 0, True), episode(0, 1, True), episode(1, 0, False), episode(1, 1, True, steps=90)]
    b = [
        episode(0, 0, True),
        episode(0, 1, False),
        episode(1, 0, True),
        episode(1, 1, True),
        episode(2, 0, True),
    ]
    out = paired_outcomes(a, b)
    assert (out["n"], out["successes_a"], out["successes_b"]) == (4, 3, 3)
    assert (out["only_a"], out["only_b"], out["same_outcome"]) == (1, 1, 2)
    assert out["same_steps"] == 1  # (1, 1) succeeded in both, in other numbers of steps
    assert out["p_mcnemar"] == 1.0
    same = paired_outcomes(a, a)
    assert same["same_steps"] == same["same_chunks"] == same["n"] == 4 and same["p_mcnemar"] == 1.0
