"""The paper's figures drawn from saved results, and the manifest of ``figures/``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from rsdlib.decoding.spec import MethodSpec
from rsdlib.paths import REPO_ROOT
from rsdlib.pipeline import list_notebooks


def plot_pipeline(num_layers: int = 4, num_latents: int = 4, gamma: int = 2) -> plt.Figure:
    """Figure 1: chunk -> RFSQ layers (coarse to fine) -> drafter proposes the first gamma layers ->
    the main policy verifies them in one pass and fills in the rest."""
    fig, ax = plt.subplots(figsize=(7.5, 2.5), layout="constrained")
    ax.set_xlim(0, 15.2)
    ax.set_ylim(0, 5)
    ax.axis("off")

    def box(x, y, w, h, text, colour):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=colour, ec="black", lw=0.7))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=7)

    def arrow(x0, y0, x1, y1, label="", dy=0.25):
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="->", mutation_scale=8, lw=0.8))
        if label:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + dy, label, ha="center", va="center", fontsize=6)

    box(0.1, 1.8, 1.9, 1.4, "observation\n(cameras, proprio,\ninstruction)", "#eeeeee")
    box(2.6, 3.3, 2.2, 1.0, "drafter\n(head or tiny policy)", "#f6d5d6")
    box(2.6, 0.6, 2.2, 1.0, "main policy\n(prefix pass, then\nblock passes)", "#d6e2f0")
    arrow(2.0, 2.8, 2.6, 3.7)
    arrow(2.0, 2.2, 2.6, 1.2)
    x0, y0, cell = 6.5, 0.5, 0.55  # the token grid: one row per RFSQ layer, coarse (top) to fine
    for layer in range(num_layers):
        y = y0 + (num_layers - 1 - layer) * (cell + 0.15)
        colour = "#f6d5d6" if layer < gamma else "#d6e2f0"
        for n in range(num_latents):
            ax.add_patch(
                plt.Rectangle((x0 + n * cell, y), cell * 0.9, cell * 0.9, fc=colour, ec="black", lw=0.5)
            )
        ax.text(
            x0 + num_latents * cell + 0.05,
            y + cell * 0.45,
            f"layer {layer}",
            ha="left",
            va="center",
            fontsize=6,
        )
    top = y0 + num_layers * (cell + 0.15)
    ax.text(
        x0 + num_latents * cell / 2 + 0.3,
        top + 0.15,
        f"RFSQ tokens: L={num_layers} x N={num_latents}",
        ha="center",
        fontsize=7,
    )
    arrow(4.8, 3.8, x0 - 0.1, 3.0, f"propose layers 0..{gamma - 1}", dy=0.45)
    arrow(4.8, 1.1, x0 - 0.1, 1.1, "verify in one pass,\nfill in the rest", dy=-0.45)
    box(10.0, 1.8, 2.2, 1.4, "accept per layer\n(exact, speculative,\nlossy rules)", "#e8f0d8")
    arrow(9.35, 2.5, 10.0, 2.5)
    box(12.9, 1.8, 2.2, 1.4, "action chunk\n(H steps x 7),\ncoarse to fine", "#eeeeee")
    arrow(12.2, 2.5, 12.9, 2.5, "RFSQ\ndecode", dy=0.5)
    return fig


def plot_iso_latency(comparison: Mapping[str, Any], latency: Mapping[str, Any]) -> plt.Figure:
    """Figure 3: LIBERO success (95% Wilson interval) against median chunk latency, one marker per
    method of the comparison whose latency was measured."""
    timing = {str(MethodSpec.parse(r["method"])): r for r in latency["rows"]}
    fig, ax = plt.subplots(figsize=(4.6, 3.2), layout="constrained")
    points = {
        r["method"]: (t["latency_median_ms"], 100 * r["rate"]) for r in comparison["rows"]
        if (t := timing.get(r["method"])) is not None
    }  # fmt: skip
    # Labels above their markers; markers at the same success alternate above and below, from
    # fast to slow, so that neighbours' labels do not run into each other.
    below: set[str] = set()
    for method, (_, y) in points.items():
        row = sorted((p[0], m) for m, p in points.items() if abs(p[1] - y) < 6)
        if [m for _, m in row].index(method) % 2:
            below.add(method)
    for r in comparison["rows"]:
        t = timing.get(r["method"])
        if t is None:
            continue
        crowded = r["method"] in below
        rsd = r["method"].startswith("rsd")
        ax.errorbar(
            t["latency_median_ms"], 100 * r["rate"],
            yerr=[[100 * (r["rate"] - r["ci_low"])], [100 * (r["ci_high"] - r["rate"])]],
            fmt="o" if not rsd else "D", color="#C44E52" if rsd else "#4C72B0", capsize=2, ms=5, lw=0.8,
        )  # fmt: skip
        ax.annotate(
            r["method"].replace("rsd_head:", "RSD ").replace("rsd_tiny:", "RSD tiny "),
            (t["latency_median_ms"], 100 * r["rate"]),
            fontsize=6,
            xytext=(4, -9 if crowded else 3),
            textcoords="offset points",
        )
    for points, style, label in _frontiers(comparison["rows"], timing):
        ax.plot(*zip(*points, strict=True), style, color="#C44E52", lw=0.8, alpha=0.7, label=label, zorder=0)
    floor = latency["rows"][0].get("floor_ms")
    if floor:
        ax.axvline(floor, ls="--", color="black", lw=0.7, label="floor (prefix + one block pass)")
        ax.legend(fontsize=6, loc="lower right")
    n = sorted({r["n"] for r in comparison["rows"]})
    ax.set(xlabel=f"chunk latency, ms (median, batch 1, {latency['device']})",
           ylabel=f"{comparison['suite']} success, % (n = {', '.join(map(str, n))})", ylim=(-3, 103))  # fmt: skip
    return fig


def _frontiers(rows: Sequence[Mapping[str, Any]], timing: Mapping[str, Any]) -> list[tuple[list, str, str]]:
    """The lossless and the lossy RSD frontier as (latency, success %) points from fast to slow:
    lossless, plain ``rfsq_ar`` and the lossless RSD settings (same outputs, other latencies);
    lossy, the lossy RSD settings with the exact ones at their strict end (the trade-off the
    thresholds trace). A frontier needs two points."""
    kinds: dict[str, list[tuple[float, float]]] = {"lossless": [], "lossy": []}
    for r in rows:
        t = timing.get(r["method"])
        rule = MethodSpec.parse(r["method"]).rule
        if t is None or not (r["method"] == "rfsq_ar" or rule is not None):
            continue
        point = (t["latency_median_ms"], 100 * r["rate"])
        if rule in (None, "exact", "speculative"):
            kinds["lossless"].append(point)
        if rule is not None:
            kinds["lossy"].append(point)
    if len(kinds["lossy"]) == len([p for p in kinds["lossless"] if p in kinds["lossy"]]):
        kinds["lossy"] = []  # no lossy setting: nothing to trace
    return [
        (sorted(kinds[kind]), style, f"{kind} RSD frontier")
        for kind, style in (("lossless", "-"), ("lossy", "--"))
        if len(kinds[kind]) >= 2
    ]


def plot_success_per_task_by_method(
    tasks: Mapping[str, Sequence[Mapping[str, Any]]], suite: str
) -> plt.Figure:
    """LIBERO success per task (95% Wilson interval), one bar per method in each task's group
    (``tasks``: method -> per-task summaries, as ``evaluate(...).summary["tasks"]``)."""
    methods = list(tasks)
    ids = sorted({r["task_id"] for rows in tasks.values() for r in rows if r["suite"] == suite})
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(min(9.0, 2.0 + 0.5 * len(ids)), 2.8), layout="constrained")
    for i, method in enumerate(methods):
        by_id = {r["task_id"]: r for r in tasks[method] if r["suite"] == suite}
        x = np.array([t for t in ids if t in by_id]) + (i - (len(methods) - 1) / 2) * width
        rows = [by_id[t] for t in ids if t in by_id]
        rate = np.array([r["rate"] for r in rows])
        err = np.array([[r["rate"] - r["ci_low"] for r in rows], [r["ci_high"] - r["rate"] for r in rows]])
        ax.bar(x, rate, width=width, label=method)
        ax.errorbar(x, rate, yerr=err, fmt="none", ecolor="black", capsize=1, lw=0.5)
    n = sorted({r["n"] for rows in tasks.values() for r in rows if r["suite"] == suite})
    ax.set(xlabel=f"{suite} task", ylabel=f"success (n = {', '.join(map(str, n))} per task)", ylim=(0, 1.05))
    ax.set_xticks(ids)
    ax.legend(fontsize=5, ncol=min(3, len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.22))
    return fig


def plot_acceptance_by_rule(rows: Sequence[Mapping[str, Any]]) -> plt.Figure:
    """Figure 4: acceptance per RFSQ layer, one line per RSD setting (drafter, gamma, rule)."""
    rsd = [r for r in rows if r.get("acceptance_per_layer") is not None]
    fig, ax = plt.subplots(figsize=(4.6, 3.0), layout="constrained")
    for r in rsd:
        values = [np.nan if a is None else a for a in r["acceptance_per_layer"]]
        style = "-" if MethodSpec.parse(r["method"]).drafter == "head" else ":"
        ax.plot(
            range(len(values)),
            values,
            style,
            marker="o",
            ms=3,
            lw=0.9,
            label=r["method"],
        )
    ax.set(xlabel="RFSQ layer (coarse to fine)", ylabel="accepted / drafted", ylim=(-0.02, 1.02))
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.legend(fontsize=5, ncol=2, loc="upper right")
    return fig


def write_manifest(
    figures_dir: str | Path, *, sources: Mapping[str, Sequence[str]]
) -> dict[str, dict[str, Any]]:
    """Write ``figures/MANIFEST.json``: per file, the notebook that wrote it (by its number prefix),
    the result runs it came from (``sources`` by file-name prefix, e.g. ``{"07_": [run dirs]}``)
    and its SHA-256. Deterministic: sorted, paths relative to the repository."""
    figures_dir = Path(figures_dir)
    notebooks = {nb.stem.split("_", 1)[0]: nb.name for nb in list_notebooks()}
    manifest = {}
    for file in sorted(p for p in figures_dir.iterdir() if p.is_file() and p.name != "MANIFEST.json"):
        prefix = file.name.split("_", 1)[0]
        runs = next((list(v) for k, v in sources.items() if file.name.startswith(k)), [])
        manifest[file.name] = {
            "notebook": notebooks.get(prefix),
            "results": sorted(_relative(r) for r in runs),
            "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
        }
    (figures_dir / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def _relative(path: str | Path) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return path.name  # outside the repository (a temporary folder in tests): the run's name
