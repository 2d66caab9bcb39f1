"""Figures of demonstrations and evaluations, each drawn from saved data (tidy rows or arrays)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

ACTION_NAMES = ("dx", "dy", "dz", "dax", "day", "daz", "gripper")


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
