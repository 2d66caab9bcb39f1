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


def record_key(record: Mapping[str, Any]) -> tuple[str, int, int, int]:
    """Which episode a record is, as :attr:`rsdlib.libero.evaluate.EpisodeSpec.key`: suite, task,
    init state, repeat (records from before repeats lack one: 0)."""
    return (record["suite"], record["task_id"], record["init_index"], record.get("repeat", 0))


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: how surprising ``only_a`` against ``only_b`` discordant
    pairs are if neither method is better (a fair coin over the discordant episodes)."""
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts must be >= 0, got {only_a} and {only_b}")
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_outcomes(a: Iterable[Mapping[str, Any]], b: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Two methods' episode records compared on the episodes both ran (same suite, task, init
    state and repeat, so the same start and seed).

    Same episodes make a sharper test than two intervals: ``only_a`` and ``only_b`` count the
    episodes one method solved and the other did not, and ``p_mcnemar`` is the exact McNemar
    test on them. ``same_steps`` and ``same_chunks`` count episodes that also took as many env
    steps and chunks (a lossless method reproducing another shows ``n`` in all three).
    """
    theirs = {record_key(r): r for r in b}
    pairs = [(r, theirs[record_key(r)]) for r in a if record_key(r) in theirs]
    only_a = sum(bool(x["success"]) and not y["success"] for x, y in pairs)
    only_b = sum(bool(y["success"]) and not x["success"] for x, y in pairs)
    return {
        "n": len(pairs),
        "successes_a": sum(bool(x["success"]) for x, _ in pairs),
        "successes_b": sum(bool(y["success"]) for _, y in pairs),
        "only_a": only_a,
        "only_b": only_b,
        "same_outcome": len(pairs) - only_a - only_b,
        "same_steps": sum(x["success"] == y["success"] and x["steps"] == y["steps"] for x, y in pairs),
        "same_chunks": sum(x.get("chunks") == y.get("chunks") for x, y in pairs),
        "p_mcnemar": mcnemar_exact_p(only_a, only_b),
    }
