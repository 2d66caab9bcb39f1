"""Figures of decoding benchmarks, drawn from saved rows (``rsdlib.decoding.benchmark``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np


def plot_latency(rows: Sequence[Mapping[str, Any]], *, device: str = "") -> plt.Figure:
    """Median chunk latency per method (bar) with its p90 (whisker) and the floor (dashed line)."""
    rows = sorted(rows, key=lambda r: r["latency_median_ms"])
    fig, ax = plt.subplots(figsize=(6.0, 0.6 + 0.22 * len(rows)), layout="constrained")
    y = np.arange(len(rows))
    median = np.array([r["latency_median_ms"] for r in rows])
    p90 = np.array([r["latency_p90_ms"] for r in rows])
    colours = ["#C44E52" if r["method"].startswith("rsd") else "#4C72B0" for r in rows]
    ax.barh(y, median, color=colours, height=0.7)
    ax.errorbar(
        median, y, xerr=[np.zeros_like(median), p90 - median], fmt="none", ecolor="black", capsize=2, lw=0.7
    )
    ax.axvline(rows[0]["floor_ms"], color="black", ls="--", lw=0.8, label="floor: prefix + one block pass")
    ax.set_yticks(y, [r["method"] for r in rows], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("chunk latency, ms (bar: median, whisker: p90)" + (f" on {device}" if device else ""))
    ax.legend(fontsize=7, loc="lower right")
    return fig


def plot_acceptance_rows(rows: Sequence[Mapping[str, Any]]) -> plt.Figure:
    """Acceptance per RFSQ layer (columns) for each RSD setting (rows), values written in."""
    rsd = [r for r in rows if r.get("acceptance_per_layer") is not None]
    matrix = np.array(
        [[np.nan if a is None else a for a in r["acceptance_per_layer"]] for r in rsd], dtype=float
    )
    R, L = matrix.shape
    fig, ax = plt.subplots(figsize=(2.5 + 0.8 * L, 0.8 + 0.22 * R), layout="constrained")
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(L), [f"layer {i}" for i in range(L)])
    ax.set_yticks(range(R), [r["method"].removeprefix("rsd ") for r in rsd], fontsize=6)
    ax.grid(False)
    for i in range(R):
        for j in range(L):
            ax.text(
                j,
                i,
                "n/a" if np.isnan(matrix[i, j]) else f"{matrix[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=6,
            )
    fig.colorbar(image, ax=ax, label="accepted / drafted")
    return fig
