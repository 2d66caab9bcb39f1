"""The adaptive-depth experiment: how many RFSQ layers each moment gets, and what it costs in success.

Rows and figures from saved episode records (``evaluate(...).records`` of adaptive method specs,
such as ``rfsq_ar+entropy:0.2``) and from the decoding benchmark's quality rows:

- :func:`depth_rows`: per method, success (95% Wilson interval, n), mean layers decoded per chunk,
  the share of chunks that went to full depth, main passes and in-episode chunk latency;
- :func:`plot_depth_timeline`: one episode, layers decoded per chunk over the env steps, with the
  gripper's open/close events (the moments the original plan expected to need fine layers);
- :func:`plot_depth_frontier`: success against chunk latency for the adaptive settings beside plain
  decoding and RSD, per monitor;
- :func:`plot_depth_tradeoff`: offline, on validation chunks, action error against mean layers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from rsdlib.decoding.spec import MethodSpec
from rsdlib.experiments.comparison import chunk_stats
from rsdlib.metrics import success_summary

#: Colours per monitor (plain decoding and RSD without a monitor in grey and red).
MONITOR_COLOURS = {
    "fixed": "#8172B3",
    "entropy": "#4C72B0",
    "action_variance": "#55A868",
    "jerk": "#DD8452",
    "plan_instability": "#937860",
    "learned": "#DA8BC3",
    "never": "#999999",
}


def depth_rows(records: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One row per method spec: success with its interval and n, and what its chunks cost.

    Returns:
        ``method``, ``monitor``, ``threshold``, ``successes``, ``n``, ``rate``, ``ci_low``,
        ``ci_high``, ``layers`` (mean per chunk; L without a monitor), ``full_depth_share``,
        ``main_passes``, ``latency_median_ms``, ``latency_p90_ms``, ``chunks``.
    """
    rows = []
    for method, recs in records.items():
        spec = MethodSpec.parse(method)
        stats = chunk_stats(recs)
        rows.append(
            {
                "method": method,
                "monitor": spec.monitor,
                "threshold": spec.depth_threshold,
                **success_summary(sum(bool(r["success"]) for r in recs), len(recs)),
                "layers": stats.get("layers", _full_depth(recs)),
                "full_depth_share": stats.get("full_depth_share", 1.0),
                "main_passes": stats.get("main_passes"),
                "latency_median_ms": stats.get("latency_median_ms"),
                "latency_p90_ms": stats.get("latency_p90_ms"),
                "chunks": stats.get("chunks", 0),
            }
        )
    return rows


def _full_depth(records: Sequence[Mapping[str, Any]]) -> float | None:
    chunks = [c for r in records for c in r.get("diagnostics") or []]
    kinds = [len(c["layer_kinds"]) for c in chunks if "layer_kinds" in c]
    return float(np.mean(kinds)) if kinds else None


#: What the frontier's x axis may be, and its label.
FRONTIER_X = {
    "latency_median_ms": "chunk latency in episodes, ms (median{device})",
    "main_passes": "main passes per chunk after the prefix (mean)",
}


def plot_depth_timeline(record: Mapping[str, Any], *, open_loop_steps: int, title: str = "") -> plt.Figure:
    """Layers decoded per chunk over one episode, with the gripper's close and open events.

    Args:
        record: an episode record of an adaptive method (its ``diagnostics`` per chunk hold
            ``depth``, ``num_layers`` and ``gripper``).
        open_loop_steps: env steps executed per chunk (the protocol's).
    """
    chunks = record.get("diagnostics") or []
    if not chunks or "depth" not in chunks[0]:
        raise ValueError(
            "the record holds no depth per chunk: evaluate an adaptive spec such as rfsq_ar+entropy:0.2"
        )
    L = chunks[0]["num_layers"]
    depth = np.array([c["depth"] for c in chunks])
    start = np.arange(len(chunks)) * open_loop_steps
    fig, ax = plt.subplots(figsize=(6.4, 2.4), layout="constrained")
    full = depth >= L
    ax.bar(
        start[~full],
        depth[~full],
        width=open_loop_steps * 0.9,
        align="edge",
        color="#4C72B0",
        label="stopped early",
    )
    ax.bar(
        start[full],
        depth[full],
        width=open_loop_steps * 0.9,
        align="edge",
        color="#C44E52",
        label="full depth",
    )
    grip = [np.sign(np.mean(c.get("gripper") or [0])) for c in chunks]
    events = [
        (start[i], "close" if grip[i] > 0 else "open") for i in range(1, len(grip)) if grip[i] != grip[i - 1]
    ]
    for x, kind in events:
        ax.axvline(x, color="black", lw=0.8, ls="-" if kind == "close" else "--")
    if events:
        ax.plot([], [], color="black", lw=0.8, label="gripper closes")
        ax.plot([], [], color="black", lw=0.8, ls="--", label="gripper opens")
    ax.set(xlabel="env step", ylabel="RFSQ layers decoded", ylim=(0, L + 0.6), yticks=range(L + 1))
    outcome = "success" if record.get("success") else "failure"
    ax.set_title(
        title or f"task {record.get('task_id')}, init {record.get('init_index')}: {outcome}", fontsize=8
    )
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=4, frameon=False)
    return fig


def plot_depth_frontier(
    rows: Sequence[Mapping[str, Any]], *, device: str = "", x: str = "latency_median_ms"
) -> plt.Figure:
    """LIBERO success (95% Wilson interval) against median in-episode chunk latency, or with
    ``x="main_passes"`` against main passes per chunk (which no other load on the machine changes:
    for runs made at different times).

    Rows as :func:`depth_rows` gives them (any method: plain and RSD rows are drawn as references;
    adaptive rows are coloured by monitor and joined from low to high threshold).
    """
    if x not in FRONTIER_X:
        raise ValueError(f"x ({x!r}) must be one of {sorted(FRONTIER_X)}")
    fig, ax = plt.subplots(figsize=(4.8, 3.2), layout="constrained")
    by_monitor: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        if r.get(x) is None or r.get("rate") is None:
            continue
        spec = MethodSpec.parse(r["method"])
        px, py = r[x], 100 * r["rate"]
        err = [[100 * (r["rate"] - r["ci_low"])], [100 * (r["ci_high"] - r["rate"])]]
        if spec.monitor is None:
            colour, marker = ("#C44E52", "D") if spec.is_rsd else ("#333333", "s")
            ax.errorbar(px, py, yerr=err, fmt=marker, color=colour, ms=5, capsize=2, lw=0.8)
            ax.annotate(r["method"], (px, py), xytext=(4, 3), textcoords="offset points", fontsize=6)
        else:
            by_monitor.setdefault(spec.monitor, []).append(r)
    for monitor, group in sorted(by_monitor.items()):
        group = sorted(group, key=lambda r: r[x])
        colour = MONITOR_COLOURS.get(monitor, "#777777")
        xs, ys = [r[x] for r in group], [100 * r["rate"] for r in group]
        err = [
            [100 * (r["rate"] - r["ci_low"]) for r in group],
            [100 * (r["ci_high"] - r["rate"]) for r in group],
        ]
        ax.errorbar(xs, ys, yerr=err, fmt="o-", color=colour, ms=4, capsize=2, lw=0.8, label=monitor)
        for r, px, py in zip(group, xs, ys, strict=True):
            ax.annotate(
                f"{r['layers']:.1f} layers", (px, py), xytext=(3, -9), textcoords="offset points", fontsize=5
            )
    n = sorted({r["n"] for r in rows if r.get("n")})
    slowest = max((r[x] for r in rows if r.get(x) is not None), default=1.0)
    ax.set_xlim(0, 1.2 * slowest)  # room for the labels right of the slowest point
    ax.set(
        xlabel=FRONTIER_X[x].format(device=", " + device if device else ""),
        ylabel=f"success, % (n = {', '.join(map(str, n))})",
        ylim=(-3, 103),
    )
    if by_monitor:
        ax.legend(fontsize=6, title="depth monitor", title_fontsize=6, loc="lower right")
    return fig


def plot_depth_tradeoff(rows: Sequence[Mapping[str, Any]]) -> plt.Figure:
    """Offline, on validation chunks: action error against mean layers decoded, per monitor.

    Args:
        rows: the benchmark's quality rows (``method``, ``layers_per_chunk``, ``mae_demo``,
            ``mae_vs_plain``) of ``rfsq_ar`` and its adaptive specs.
    """
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.6), layout="constrained", sharex=True)
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        spec = MethodSpec.parse(r["method"])
        if spec.method == "rfsq_ar" and not spec.is_rsd:
            groups.setdefault(spec.monitor or "full depth", []).append(r)
    for ax, key, label in zip(
        axes, ("mae_demo", "mae_vs_plain"), ("vs the demonstration", "vs full-depth decoding"), strict=True
    ):
        for monitor, group in sorted(groups.items()):
            group = sorted(group, key=lambda r: r["layers_per_chunk"])
            ax.plot(
                [r["layers_per_chunk"] for r in group], [r[key] for r in group], "o-", ms=3, lw=0.8,
                color=MONITOR_COLOURS.get(monitor, "#333333"), label=monitor,
            )  # fmt: skip
        ax.set(xlabel="RFSQ layers decoded per chunk (mean)", ylabel=f"action MAE {label}")
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=6)
    return fig
