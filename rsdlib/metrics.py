"""Success rates with honest uncertainty: Wilson score intervals and per-group summaries."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

#: Two-sided 95% normal quantile.
Z95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion.

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 or n
    successes, which is where scripted experts and good policies live.

    Args:
        successes: number of successes k.
        trials: number of trials n.
        z: normal quantile (1.96 for 95%).

    Returns:
        (low, high). For n = 0 the interval is the whole of [0, 1].

    Raises:
        ValueError: k or n is negative, or k > n.
    """
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got successes={successes}, trials={trials}")
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    center = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    # The interval contains p exactly; rounding alone put the upper end at 0.9999999999999999 for
    # 10 of 10 (and a plot's error bar below the point).
    return min(max(0.0, center - half), p), max(min(1.0, center + half), p)


def success_summary(successes: int, trials: int) -> dict[str, Any]:
    """``{n, successes, rate, ci_low, ci_high}`` with a 95% Wilson interval (rate None when n = 0)."""
    low, high = wilson_interval(successes, trials)
    return {
        "n": trials,
        "successes": successes,
        "rate": successes / trials if trials else None,
        "ci_low": low,
        "ci_high": high,
    }


def summarize_by(records: Iterable[Mapping[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Success summaries of episode records grouped by ``keys`` (records need a bool ``success``).

    Returns one dict per group, sorted by the group's key values, holding the key values and
    :func:`success_summary`'s fields.
    """
    groups: dict[tuple, list[bool]] = {}
    for record in records:
        groups.setdefault(tuple(record[k] for k in keys), []).append(bool(record["success"]))
    return [
        {**dict(zip(keys, group, strict=True)), **success_summary(sum(flags), len(flags))}
        for group, flags in sorted(groups.items())
    ]
