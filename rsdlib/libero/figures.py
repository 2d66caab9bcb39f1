"""Figures of demonstrations and evaluations, each drawn from saved data (tidy rows or arrays)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from rsdlib.actions import ACTION_NAMES
from rsdlib.decoding.spec import MethodSpec


def plot_success_per_task(rows: Sequence[Mapping[str, Any]], title: str = "") -> plt.Figure:
    """Success rate per task with 95% Wilson intervals, one panel per suite.

    Args:
        rows: per-task summaries (``suite``, ``task_id``, ``rate``, ``ci_low``, ``ci_high``, ``n``),
            as in ``evaluate(...).summary["tasks"]``.
    """
    from rsdlib.libero.protocol import SUITES

    # The benchmark's own order (spatial, object, goal, 10, 90), not the alphabet's.
    suites = sorted(
        {r["suite"] for r in rows}, key=lambda s: (SUITES.index(s) if s in SUITES else len(SUITES), s)
    )
    fig, axes = plt.subplots(
        1, len(suites), figsize=(3.2 * len(suites), 2.6), squeeze=False, sharey=True, layout="constrained"
    )
    for ax, suite in zip(axes[0], suites, strict=True):
        mine = sorted((r for r in rows if r["suite"] == suite), key=lambda r: r["task_id"])
        x = np.array([r["task_id"] for r in mine])
        rate = np.array([r["rate"] for r in mine], dtype=float)
        err = np.array([[r["rate"] - r["ci_low"] for r in mine], [r["ci_high"] - r["rate"] for r in mine]])
        ax.bar(x, rate, color="#4C72B0", width=0.7)
        ax.errorbar(x, rate, yerr=err, fmt="none", ecolor="black", capsize=2, linewidth=0.8)
        n = sorted({r["n"] for r in mine})
        ax.set_title(f"{suite} (n = {', '.join(map(str, n))} per task)", fontsize=8)
        ax.set_xticks(x)
        ax.set_xlabel("task")
        ax.set_ylim(0, 1.05)
    axes[0, 0].set_ylabel("success rate (95% Wilson CI)")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def plot_action_histograms(actions: np.ndarray, title: str = "") -> plt.Figure:
    """Histogram of each action dimension over all steps (actions: (N, 7) env units)."""
    fig, axes = plt.subplots(1, actions.shape[1], figsize=(1.6 * actions.shape[1], 1.9))
    for d, ax in enumerate(axes):
        ax.hist(actions[:, d], bins=41, color="#4C72B0")
        ax.set_title(ACTION_NAMES[d] if d < len(ACTION_NAMES) else f"a{d}", fontsize=8)
        ax.set_yticks([])
        ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def plot_example_trajectories(episodes: Sequence[np.ndarray], labels: Sequence[str]) -> plt.Figure:
    """Action dimensions against time for a few episodes (each (T, 7) env units)."""
    dims = episodes[0].shape[1]
    fig, axes = plt.subplots(dims, 1, figsize=(6, 1.0 * dims), sharex=True)
    for actions, label in zip(episodes, labels, strict=True):
        for d, ax in enumerate(axes):
            ax.plot(actions[:, d], linewidth=0.8, label=label if d == 0 else None)
    for d, ax in enumerate(axes):
        ax.set_ylabel(ACTION_NAMES[d] if d < len(ACTION_NAMES) else f"a{d}", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[-1].set_xlabel("step")
    axes[0].legend(fontsize=6, ncol=len(labels), loc="upper right")
    return fig


def plot_frames(frames: Sequence[np.ndarray], titles: Sequence[str]) -> plt.Figure:
    """A row of upright camera frames."""
    fig, axes = plt.subplots(1, len(frames), figsize=(1.8 * len(frames), 2.0), squeeze=False)
    for ax, frame, title in zip(axes[0], frames, titles, strict=True):
        ax.imshow(frame)
        ax.set_title(title, fontsize=7)
        ax.set_xticks([]), ax.set_yticks([])
        ax.grid(False)
    return fig


def plot_method_success(rows: Sequence[Mapping[str, Any]], title: str = "") -> plt.Figure:
    """Success rate per method with 95% Wilson intervals (rows: ``method``, ``rate``, ``ci_low``,
    ``ci_high``, ``n``)."""
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(rows), 2.6), layout="constrained")
    x = np.arange(len(rows))
    rate = np.array([r["rate"] for r in rows], dtype=float)
    err = np.array([[r["rate"] - r["ci_low"] for r in rows], [r["ci_high"] - r["rate"] for r in rows]])
    colours = ["#C44E52" if r["method"].startswith("rsd") else "#4C72B0" for r in rows]
    ax.bar(x, rate, color=colours, width=0.7)
    ax.errorbar(x, rate, yerr=err, fmt="none", ecolor="black", capsize=2, linewidth=0.8)
    for i, r in enumerate(rows):
        ax.text(i, 0.02, f"n={r['n']}", ha="center", fontsize=6, color="white")
    ax.set_xticks(x, [r["method"] for r in rows], rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate")
    if title:
        ax.set_title(title, fontsize=8)
    return fig


#: Where the lossless ``exact`` rule sits on each lossy rule's threshold axis: every token must
#: match (``match_rate`` 1), no decoded change allowed (``action_tolerance`` 0, ``level_distance`` 0).
EXACT_AS = {"match_rate": 1.0, "action_tolerance": 0.0, "level_distance": 0.0}


def threshold_sweeps(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[float, Mapping[str, Any]]]]:
    """RSD comparison rows grouped into threshold sweeps: ``"rsd_head:g3:match_rate"`` -> rows
    sorted by threshold, each family's ``exact`` row (same drafter and gamma) at its end of the
    axis. Only families with at least one lossy setting are returned."""
    lossy: dict[str, list[tuple[float, Mapping[str, Any]]]] = {}
    exact: dict[str, Mapping[str, Any]] = {}
    for r in rows:
        spec = MethodSpec.parse(str(r["method"]))
        if not spec.is_rsd or spec.temperature > 0:  # sampled settings are no point on a threshold axis
            continue
        base, rule, threshold = spec.setting, spec.rule, spec.param
        if rule == "exact":
            exact[base] = r
        elif rule in EXACT_AS and threshold is not None:
            lossy.setdefault(f"{base}:{rule}", []).append((threshold, r))
    out = {}
    for family, points in lossy.items():
        base = exact.get(family.rsplit(":", 1)[0])
        if base is not None:
            points = [*points, (EXACT_AS[family.rsplit(":", 1)[1]], base)]
        out[family] = sorted(points, key=lambda p: p[0])
    return out


def plot_threshold_sweep(rows: Sequence[Mapping[str, Any]], rule: str) -> plt.Figure:
    """A lossy rule's trade-off: LIBERO success (95% Wilson interval) and in-episode chunk
    latency against its threshold, and acceptance per RFSQ layer at each threshold (comparison
    rows with ``acceptance_per_layer``, as :func:`rsdlib.libero.comparison.chunk_stats` gives).

    Raises:
        ValueError: no RSD setting of ``rule`` with a threshold among the rows.
    """
    sweeps = {f: p for f, p in threshold_sweeps(rows).items() if f.rsplit(":", 1)[1] == rule}
    if not sweeps:
        raise ValueError(f"no RSD setting with {rule} (e.g. rsd_head:g3:{rule}:0.5) among the rows to sweep")
    fig, (ok, lat, acc) = plt.subplots(1, 3, figsize=(9.0, 2.7), layout="constrained")
    for family, points in sweeps.items():
        x = np.array([t for t, _ in points])
        rate = np.array([100 * r["rate"] for _, r in points])
        err = 100 * np.array(
            [[r["rate"] - r["ci_low"] for _, r in points], [r["ci_high"] - r["rate"] for _, r in points]]
        )
        ok.errorbar(x, rate, yerr=err, marker="o", ms=4, lw=0.9, capsize=2, label=family)
        lat.plot(x, [r["latency_median_ms"] for _, r in points], marker="o", ms=4, lw=0.9, label=family)
    first = next(iter(sweeps.values()))
    cmap = plt.get_cmap("viridis")
    for i, (threshold, r) in enumerate(first):
        values = [np.nan if a is None else a for a in r.get("acceptance_per_layer") or []]
        acc.plot(range(len(values)), values, marker="o", ms=3, lw=0.9, color=cmap(i / max(1, len(first) - 1)),
                 label=f"{threshold:g}")  # fmt: skip
    n = sorted({r["n"] for points in sweeps.values() for _, r in points})
    ok.set(
        xlabel="threshold (exact at its end)",
        ylabel=f"success, % (n = {', '.join(map(str, n))})",
        ylim=(-3, 103),
    )
    lat.set(xlabel=f"{rule} threshold", ylabel="chunk latency in episodes, ms (median)")
    slowest = max((r["latency_median_ms"] for points in sweeps.values() for _, r in points), default=0.0)
    lat.set_ylim(0, 1.08 * slowest or 1.0)  # from zero: a ratio of latencies reads as the ratio it is
    acc.set(xlabel="RFSQ layer (coarse to fine)", ylabel="accepted / drafted", ylim=(-0.02, 1.02))
    acc.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    acc.legend(fontsize=6, title=f"{next(iter(sweeps)).removeprefix('rsd_')}", title_fontsize=6)
    ok.legend(fontsize=6)
    if rule == "match_rate":  # lower tau accepts more: read the axis from strict to loose
        for ax in (ok, lat):
            ax.invert_xaxis()
    return fig
