"""Figures and tables of the tokenizer comparison, drawn from saved metrics only.

One function per figure: each takes the tidy rows that notebook 02_action_tokenizers saved in
``metrics.json`` and returns a matplotlib Figure; tables come out as markdown and LaTeX text.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from rsdlib.actions import ACTION_NAMES
from rsdlib.plotting import place_labels

_STYLE = {
    "rfsq": ("C0", "o", "RFSQ (k layers)"),
    "fast": ("C1", "s", "FAST (scales)"),
    "binning": ("C2", "^", "binning"),
}
_AXIS = {
    "tokens_per_chunk": "tokens per chunk",
    "bits_per_chunk": "bits per chunk",
    "sequential_steps": "sequential decoding steps per chunk",
}


def plot_error_vs_budget(
    rows: list[dict[str, Any]], *, x: str = "tokens_per_chunk", y: str = "mse_normalised", datasets: list[str]
) -> Figure:
    """Reconstruction MSE against tokens (or bits) per chunk, one panel per data set, log-log.

    Each point is labelled with its setting (``k=2``, ``scale=10``, ``bins=256``) where the label
    covers no other label or marker; the log axes have ticks at 1, 2 and 5 of every decade.

    Args:
        rows: evaluation rows (``tokenizer``, ``setting``, ``data``, ``x`` and ``y``).
        x: ``tokens_per_chunk``, ``bits_per_chunk`` or ``sequential_steps``.
        y: ``mse_normalised`` (against the clamped normalised chunk) or ``mse_env`` (environment
            units, which also counts what the normaliser's clamp lost on out-of-range data).
        datasets: the ``data`` labels to draw, one panel each.
    """
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.2 * len(datasets), 3.0), squeeze=False, sharey=True)
    for ax, data in zip(axes[0], datasets, strict=True):
        for kind, (color, marker, label) in _STYLE.items():
            sel = sorted(
                (r for r in rows if r["tokenizer"] == kind and r["data"] == data), key=lambda r: r[x]
            )
            if not sel:
                continue
            ax.plot(
                [r[x] for r in sel],
                [r[y] for r in sel],
                marker=marker,
                color=color,
                label=label,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_ticks(ax.xaxis)
        ax.set_xlabel(_AXIS.get(x, x))
        ax.set_title(data)
    axes[0][0].set_ylabel(
        "reconstruction MSE (" + ("normalised" if y == "mse_normalised" else "env units") + ")"
    )
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=3, bbox_to_anchor=(0.5, 0.0))  # below, off the data
    for ax, data in zip(axes[0], datasets, strict=True):  # once the limits are final
        mine = [r for kind in _STYLE for r in rows if r["tokenizer"] == kind and r["data"] == data]
        place_labels(ax, [(r[x], r[y]) for r in mine], [r["setting"] for r in mine], fontsize=5.5)
    return fig


def _log_ticks(axis: Any) -> None:
    """Ticks at 1, 2 and 5 of every decade, written plainly (``20``, ``0.5``): a log axis over
    less than two decades then has several labelled ticks, not one."""
    axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=12))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(ticker.LogLocator(base=10, subs=tuple(range(1, 10)), numticks=12))
    axis.set_minor_formatter(ticker.NullFormatter())


def source_name(source: str) -> str:
    """A data source label without file paths, for titles and captions: ``demos
    data/demos/libero_spatial (10 files, 200 episodes)`` becomes ``demos libero_spatial (10 files,
    200 episodes)`` (a path becomes its last folder or file name)."""
    return " ".join(
        word.rstrip("/").rsplit("/", 1)[-1] if "/" in word else word for word in source.split(" ")
    )


def plot_code_usage(usage: list[dict[str, Any]]) -> Figure:
    """Per RFSQ layer: code entropy against its maximum (left), and code frequency by rank (right)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(6.4, 2.8), layout="constrained")
    layers = [u["layer"] for u in usage]
    left.bar(layers, [u["entropy_bits"] for u in usage], color="C0")
    left.axhline(usage[0]["max_entropy_bits"], color="k", ls="--", lw=0.8, label="uniform over the codebook")
    left.set_xlabel("RFSQ layer")
    left.set_ylabel("code entropy (bits)")
    left.set_xticks(layers)
    left.legend(loc="lower right")
    for u in usage:
        counts = np.sort(np.asarray(u["counts"], dtype=float))[::-1]
        counts = counts[counts > 0]
        right.plot(np.arange(1, len(counts) + 1), counts / counts.sum(), label=f"layer {u['layer']}")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("code rank")
    right.set_ylabel("frequency")
    right.legend(fontsize=6)
    return fig


def plot_example_chunk(example: dict[str, Any]) -> Figure:
    """One held-out chunk per action dimension: the original and RFSQ decodes with k layers.

    Args:
        example: ``{"original": (H, A) list, "decoded": {"k": (H, A) list}}`` in environment units.
    """
    original = np.asarray(example["original"])
    horizon, dims = original.shape
    fig, axes = plt.subplots(1, dims, figsize=(1.7 * dims, 2.4), sharex=True, layout="constrained")
    steps = np.arange(horizon)
    for d, ax in enumerate(axes):
        ax.plot(steps, original[:, d], color="k", lw=2.0, label="original")
        for i, (k, chunk) in enumerate(sorted(example["decoded"].items(), key=lambda kv: int(kv[0]))):
            ax.plot(steps, np.asarray(chunk)[:, d], color=plt.cm.viridis(i / max(1, len(example["decoded"]) - 1)),
                    lw=1.0, ls="--", label=f"k={k}")  # fmt: skip
        ax.set_title(ACTION_NAMES[d] if dims == len(ACTION_NAMES) else f"dim {d}")
        ax.set_xlabel("step")
    axes[0].set_ylabel("action (env units)")
    axes[-1].legend(fontsize=6, loc="best")
    return fig


def comparison_table(rows: list[dict[str, Any]], datasets: list[str]) -> list[dict[str, Any]]:
    """One line per tokenizer setting: budget, and error on each data set (the first sets the budget)."""
    table = []
    first = [r for r in rows if r["data"] == datasets[0]]
    for r in first:
        line = {
            "tokenizer": r["tokenizer"], "setting": r["setting"], "tokens/chunk": r["tokens_per_chunk"],
            "bits/chunk": r["bits_per_chunk"], "sequential steps": r["sequential_steps"],
        }  # fmt: skip
        for data in datasets:
            match = [
                o
                for o in rows
                if o["data"] == data and (o["tokenizer"], o["setting"]) == (r["tokenizer"], r["setting"])
            ]
            if match:
                line[f"MSE norm. ({data})"] = match[0]["mse_normalised"]
                line[f"MSE env ({data})"] = match[0]["mse_env"]
                line[f"max abs env ({data})"] = match[0]["max_abs_env"]
        table.append(line)
    return table
