"""Figures of trained models, drawn from what training saved (``log.jsonl``, ``card.json``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from rsdlib.actions import ACTION_NAMES


def plot_learning_curves(logs: Mapping[str, Sequence[Mapping[str, Any]]]) -> plt.Figure:
    """Training and validation loss per model (left), validation token accuracy per RFSQ layer of
    the token models (right).

    Args:
        logs: ``{model name: rows of its log.jsonl}`` (``rsdlib.train.read_log``).
    """
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(7.0, 2.8), layout="constrained")
    colors = dict(zip(logs, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3, strict=False))
    for name, rows in logs.items():
        train = [r for r in rows if r["split"] == "train"]
        val = [r for r in rows if r["split"] == "val"]
        ax_loss.plot(
            [r["step"] for r in train], [r["loss"] for r in train], color=colors[name], lw=0.8, alpha=0.6
        )
        if val:
            ax_loss.plot(
                [r["step"] for r in val], [r["loss"] for r in val], "o-", color=colors[name], ms=3, label=name
            )
            layers = sorted(int(k.removeprefix("acc_layer")) for k in val[-1] if k.startswith("acc_layer"))
            if layers:
                ax_acc.plot(
                    layers, [val[-1][f"acc_layer{i}"] for i in layers], "o-", color=colors[name], label=name
                )
    ax_loss.set(xlabel="step", ylabel="loss (line: train, dots: validation)", yscale="log")
    ax_loss.legend(fontsize=7)
    ax_acc.set(xlabel="RFSQ layer (coarse to fine)", ylabel="validation token accuracy", ylim=(0, 1.02))
    ax_acc.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    if ax_acc.lines:
        ax_acc.legend(fontsize=7)
    return fig


def plot_decoded_chunks(chunks: Mapping[str, np.ndarray], target: np.ndarray | None = None) -> plt.Figure:
    """The 7 action dimensions over the chunk, one line per method (and the demonstration's chunk).

    Args:
        chunks: ``{method: (H, 7) chunk}`` in environment units.
        target: the demonstration's ``(H, 7)`` chunk, drawn dashed in black.
    """
    fig, axes = plt.subplots(1, 7, figsize=(10.0, 2.0), sharex=True, layout="constrained")
    for d, ax in enumerate(axes):
        for name, chunk in chunks.items():
            ax.plot(np.asarray(chunk)[:, d], lw=1, label=name)
        if target is not None:
            ax.plot(np.asarray(target)[:, d], "k--", lw=1, label="demonstration")
        ax.set_title(ACTION_NAMES[d], fontsize=8)
        ax.set_xlabel("step")
    axes[-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def plot_layer_accuracy(accuracy: Mapping[str, Sequence[float]]) -> plt.Figure:
    """Accuracy per RFSQ layer, one line per model and measure (``recipe.layer_accuracy``)."""
    fig, ax = plt.subplots(figsize=(4.2, 2.8), layout="constrained")
    for name, values in accuracy.items():
        style = "o-" if "teacher-forced" in name else "s--"
        ax.plot(range(len(values)), values, style, ms=4, label=name)
    ax.set(xlabel="RFSQ layer (coarse to fine)", ylabel="token accuracy", ylim=(0, 1.02))
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.legend(fontsize=6)
    return fig
