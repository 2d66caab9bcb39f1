"""The paper's figures drawn from saved results, and the manifest of ``figures/``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

from rsdlib.decoding.spec import MethodSpec
from rsdlib.experiments.cards import training_data_label
from rsdlib.paths import REPO_ROOT
from rsdlib.pipeline import list_notebooks
from rsdlib.plotting import place_labels
from rsdlib.results import device_label, git_sha

#: Colours of RSD settings and of plain methods in every paper figure.
RED, BLUE, GREEN = "#C44E52", "#4C72B0", "#55A868"


def plot_pipeline(num_layers: int = 4, num_latents: int = 4, gamma: int = 2) -> plt.Figure:
    """Figure 1: observation -> drafter and main policy -> the RFSQ token grid (one column per
    layer, coarse to fine; one row per latent) -> acceptance per layer -> the action chunk.

    The drafter proposes layers ``0..gamma-1`` (a bracket over those columns); the main policy
    verifies them in one pass and fills in the rest (a bracket under every column). Labels sit
    in free space, clear of every box (``tests/unit/test_paper.py`` measures it).
    """
    fig, ax = plt.subplots(figsize=(7.5, 2.9), layout="constrained")
    ax.set_xlim(0, 16)
    ax.set_ylim(0, 6.1)
    ax.axis("off")

    def box(x, y, w, h, text, colour, gid):
        ax.add_patch(
            FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=colour, ec="black", lw=0.7, gid=gid)
        )
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=7, gid=gid)

    def arrow(start, end, colour="black", **kwargs):
        ax.add_patch(
            FancyArrowPatch(start, end, arrowstyle="->", mutation_scale=8, lw=0.8, color=colour, **kwargs)
        )

    def bracket(x0, x1, y, tick, colour, gid):
        """A bracket along x0..x1 at height y, its ends turned by ``tick`` towards the grid."""
        ax.plot([x0, x0, x1, x1], [y + tick, y, y, y + tick], color=colour, lw=1.0, gid=gid,
                solid_joinstyle="miter")  # fmt: skip

    box(0.1, 2.2, 2.2, 1.6, "observation\n(cameras, proprio,\ninstruction)", "#eeeeee", "observation")
    box(3.0, 4.3, 2.4, 1.0, "drafter\n(head or tiny policy)", "#f6d5d6", "drafter")
    box(3.0, 0.3, 2.4, 1.0, "main policy\n(prefix pass, then\nblock passes)", "#d6e2f0", "main")
    arrow((2.35, 3.4), (2.95, 4.6))
    arrow((2.35, 2.6), (2.95, 1.0))

    # The token grid: column j is RFSQ layer j (coarse, left, to fine), row n is latent n; it
    # fits in the same place whatever L and N (smaller cells for more of them).
    gx, gy = 6.6, 1.95
    pitch_x, pitch_y = min(0.6, 3.0 / num_layers), min(0.56, 2.1 / num_latents)
    cell_w, cell_h = 0.77 * pitch_x, 0.82 * pitch_y
    right = gx + (num_layers - 1) * pitch_x + cell_w
    top = gy + (num_latents - 1) * pitch_y + cell_h
    for j in range(num_layers):
        x = gx + j * pitch_x
        for n in range(num_latents):
            ax.add_patch(
                plt.Rectangle((x, gy + (num_latents - 1 - n) * pitch_y), cell_w, cell_h, lw=0.5, ec="black",
                              fc="#f6d5d6" if j < gamma else "#d6e2f0", gid=f"layer {j}")
            )  # fmt: skip
        ax.text(x + cell_w / 2, gy - 0.08, str(j), ha="center", va="top", fontsize=6)
    ax.text(gx - 0.12, gy - 0.08, "layer", ha="right", va="top", fontsize=6)
    ax.text((gx + right) / 2, 5.75, f"RFSQ tokens: L = {num_layers} layers (coarse to fine) x N = {num_latents} latents",
            ha="center", va="center", fontsize=7)  # fmt: skip

    # Drafter: proposes the first gamma layers (a bracket over their columns).
    drafted = gx + (gamma - 1) * pitch_x + cell_w
    bracket(gx, drafted, top + 0.28, -0.12, RED, "propose")
    mid = (gx + drafted) / 2
    arrow((5.45, 4.8), (mid, top + 0.28), RED, connectionstyle="angle,angleA=0,angleB=90,rad=0", shrinkB=0)
    ax.text(
        mid + 0.15, 4.8, f"propose {_layers(0, gamma - 1)}", ha="left", va="center", fontsize=6, color=RED
    )

    # Main policy: verifies the drafted layers and fills in the rest (a bracket under every column).
    low = gy - 0.42
    bracket(gx, right, low, 0.12, BLUE, "verify")
    centre = (gx + right) / 2
    arrow((5.45, 0.8), (centre, low), BLUE, connectionstyle="angle,angleA=0,angleB=90,rad=0", shrinkB=0)
    rest = f",\nfill in {_layers(gamma, num_layers - 1)}" if gamma < num_layers else ""
    ax.text(centre + 0.15, 0.8, f"verify {_layers(0, gamma - 1)} in one pass{rest}", ha="left", va="center",
            fontsize=6, color=BLUE)  # fmt: skip

    box(10.2, 2.2, 2.4, 1.6, "accept per layer\n(exact, speculative,\nlossy rules)", "#e8f0d8", "accept")
    arrow((right + 0.1, 3.0), (10.15, 3.0))
    box(13.6, 2.2, 2.3, 1.6, "action chunk\n(H steps x 7),\ncoarse to fine", "#eeeeee", "chunk")
    arrow((12.7, 3.0), (13.55, 3.0))
    ax.text(13.12, 3.12, "RFSQ\ndecode", ha="center", va="bottom", fontsize=6)
    return fig


def _layers(first: int, last: int) -> str:
    return f"layer {first}" if first == last else f"layers {first}..{last}"


def suite_blocks(run: Mapping[str, Any], suite: str | None = None) -> dict[str, Mapping[str, Any]]:
    """``{suite: block}`` of a comparison (08) or latency (07) run, one block per suite it covered
    (its first folder's block is also the top level); a run from before runs covered several
    suites is one block, named ``suite`` where it did not record its own."""
    blocks = run.get("suites") or [{**run, "suite": run.get("suite", suite)}]
    return {b["suite"]: b for b in blocks}


#: Labelled ticks of Figure 3's logarithmic latency axes, in ms.
LATENCY_TICKS_MS = tuple(round(m * 10.0**e, 1) for e in range(-1, 4) for m in (1, 2, 3, 5))


def plot_iso_latency(comparison: Mapping[str, Any], latency: Mapping[str, Any]) -> plt.Figure:
    """Figure 3: LIBERO success (95% Wilson interval) against median chunk latency, one marker per
    method of the comparison whose latency was measured (plain methods, ``fast_ar`` among them,
    as circles; RSD settings as diamonds; adaptive-depth settings as triangles), the RSD frontiers
    and the floor; one panel per suite that both runs covered, two to a row. The latency axes are
    logarithmic: a speedup is a distance, the same anywhere on the axis, and ``fast_ar`` (three to
    six times ``rfsq_ar``'s latency) no longer squeezes every other method into the left fifth of a linear
    axis. The legend, under the axes, names only what is drawn."""
    timed = suite_blocks(latency, comparison["suite"])
    panels = [(block, timed[s]) for s, block in suite_blocks(comparison).items() if s in timed]
    if not panels:
        raise ValueError(
            f"no suite was both evaluated ({list(suite_blocks(comparison))}) and timed ({list(timed)})"
        )
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    size = (4.6, 3.4) if len(panels) == 1 else (3.4 * cols, 2.7 * rows + 0.5)
    fig, axes = plt.subplots(rows, cols, figsize=size, layout="constrained", sharey=True, squeeze=False)
    axes = axes.ravel()
    for ax, (block, timing_block) in zip(axes, panels, strict=False):
        _iso_latency_panel(ax, block, timing_block)
        ax.set_xlabel("chunk latency, ms (median, batch 1)")
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    axes[0].set_ylabel("LIBERO success, %")
    if rows > 1:
        axes[cols].set_ylabel("LIBERO success, %")
    models = "; ".join(dict.fromkeys(trained_on(block) for block, _ in panels))
    fig.suptitle(f"latency on {device_label(latency['device'])}; models: {models}", fontsize=6)
    drawn = {}  # label -> handle, over every panel (one may have a frontier another lacks)
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            drawn.setdefault(label, handle)
    handles, labels = list(drawn.values()), list(drawn)
    if handles:
        fig.legend(
            handles, labels, loc="outside lower center", ncol=min(2, len(handles)), fontsize=6, frameon=False
        )
    return fig


def _iso_latency_panel(ax: plt.Axes, comparison: Mapping[str, Any], latency: Mapping[str, Any]) -> None:
    """One suite's panel of :func:`plot_iso_latency`."""
    timing = _timing(comparison["rows"], latency["rows"])
    rows = [r for r in comparison["rows"] if r["method"] in timing]
    for r in rows:
        fmt, colour = _marker(r["method"])
        ax.errorbar(
            timing[r["method"]]["latency_median_ms"], 100 * r["rate"],
            yerr=[[100 * (r["rate"] - r["ci_low"])], [100 * (r["ci_high"] - r["rate"])]],
            fmt=fmt, color=colour, capsize=2, ms=5, lw=0.8, zorder=3,
        )  # fmt: skip
    for points, style, label in _frontiers(comparison["rows"], timing):
        lossless = label.startswith("lossless")
        # lossless RSD shares the plain policy's success: a wide grey band under the markers, so
        # that the dashed lossy line drawn over its end leaves it visible
        colour = GREEN if label.startswith("adaptive") else RED
        ax.plot(*zip(*points, strict=True), style, label=label,
                **({"color": "0.55", "lw": 3.0, "alpha": 0.45, "solid_capstyle": "round", "zorder": 1}
                   if lossless else {"color": colour, "lw": 0.9, "alpha": 0.8, "zorder": 2}))  # fmt: skip
    floor = next((t["floor_ms"] for t in latency["rows"] if t.get("floor_ms")), None)
    floor_line = []
    if floor:
        floor_line.append(
            ax.axvline(
                floor, ls=":", color="black", lw=0.8, label="floor (prefix + one block pass)", zorder=0
            )
        )
    n = ", ".join(map(str, sorted({r["n"] for r in comparison["rows"]})))
    ax.set_title(f"{comparison['suite']} (n = {n})", fontsize=7)
    ax.set_ylim(-3, 103)
    xs = [timing[r["method"]]["latency_median_ms"] for r in rows] + ([floor] if floor else [])
    ax.set_xscale("log")
    # from a labelled tick, so that every panel has one on each side of its points
    lo, hi = 0.8 * min(xs), 1.25 * max(xs)
    lo = max([t for t in LATENCY_TICKS_MS if t <= lo], default=lo)
    ax.set_xlim(lo, hi)
    ax.xaxis.set_major_locator(FixedLocator([t for t in LATENCY_TICKS_MS if lo <= t <= hi]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    place_labels(
        ax,
        [(timing[r["method"]]["latency_median_ms"], 100 * r["rate"]) for r in rows],
        [_short(r["method"]) for r in rows],
        avoid=floor_line,
    )


def _marker(method: str) -> tuple[str, str]:
    """A method's marker and colour: adaptive depth (a depth monitor) a green triangle, RSD a red
    diamond, any other method a blue circle."""
    try:
        spec = MethodSpec.parse(method)
    except ValueError:  # a name from before method specs
        return ("D", RED) if method.startswith("rsd") else ("o", BLUE)
    if spec.monitor is not None:
        return "^", GREEN
    return ("D", RED) if spec.is_rsd else ("o", BLUE)


def trained_on(comparison: Mapping[str, Any]) -> str:
    """What a comparison's models were trained on; comparisons from before it was recorded used
    the rgb models, whose demonstrations started from the evaluation's init states."""
    return comparison.get("training_data") or training_data_label({})


def timing_setup(latency: Mapping[str, Any]) -> str:
    """Where and how a latency run timed its chunks, for a caption: device and threads, then the
    weights' dtype and each model's parameters where the run recorded them (07 from 2026-12-01)."""
    text = device_label(latency["device"])
    models = latency.get("models")
    if models:
        sizes = ", ".join(f"{name} {n / 1e6:.2f}M" for name, n in models["parameters"].items())
        text += f", {models['dtype']} weights; parameters: {sizes}"
    return text


def _timing(
    rows: Sequence[Mapping[str, Any]], timed: Sequence[Mapping[str, Any]]
) -> dict[str, Mapping[str, Any]]:
    """The latency row of each comparison row's method (by its spec, however either file spells
    it), for the methods with a finite median latency."""
    by_spec = {_spec_text(t["method"]): t for t in timed}
    out = {}
    for r in rows:
        t = by_spec.get(_spec_text(r["method"]))
        if t is not None and t.get("latency_median_ms") is not None and np.isfinite(t["latency_median_ms"]):
            out[r["method"]] = t
    return out


def _spec_text(method: str) -> str:
    try:
        return str(MethodSpec.parse(method))
    except ValueError:  # a name from before method specs: matched as written
        return method


def _short(method: str) -> str:
    """A marker's label: ``RSD g3:exact``, ``RSD tiny g2:match_rate:0.5``, ``fast_ar``."""
    return method.replace("rsd_head:", "RSD ").replace("rsd_tiny:", "RSD tiny ")


def _frontiers(rows: Sequence[Mapping[str, Any]], timing: Mapping[str, Any]) -> list[tuple[list, str, str]]:
    """The lossless and lossy RSD frontiers and the adaptive-depth one as (latency, success %)
    points from fast to slow: lossless, plain ``rfsq_ar`` and the lossless RSD settings (same
    outputs, other latencies); lossy, the lossy RSD settings with the exact ones at their strict
    end (the trade-off the thresholds trace); adaptive depth, the settings with a depth monitor
    with full-depth ``rfsq_ar`` at their end. A frontier needs two distinct points: one that would
    not be drawn is not returned (so no legend names it)."""
    kinds: dict[str, list[tuple[float, float]]] = {"lossless": [], "lossy": [], "adaptive": []}
    for r in rows:
        t = timing.get(r["method"])
        try:
            spec = MethodSpec.parse(r["method"])
        except ValueError:  # a name from before method specs: on no frontier
            continue
        if t is None or not (r["method"] == "rfsq_ar" or spec.is_rsd or spec.monitor):
            continue
        point = (t["latency_median_ms"], 100 * r["rate"])
        if spec.monitor is not None or r["method"] == "rfsq_ar":
            kinds["adaptive"].append(point)
        if spec.monitor is not None:
            continue
        if spec.lossless:
            kinds["lossless"].append(point)
        if spec.is_rsd:
            kinds["lossy"].append(point)
    if len(kinds["lossy"]) == len([p for p in kinds["lossless"] if p in kinds["lossy"]]):
        kinds["lossy"] = []  # no lossy setting: nothing to trace
    labels = {
        "lossless": "lossless RSD frontier",
        "lossy": "lossy RSD frontier",
        "adaptive": "adaptive depth",
    }
    return [
        (sorted(kinds[kind]), style, labels[kind])
        for kind, style in (("lossless", "-"), ("lossy", "--"), ("adaptive", ":"))
        if len(set(kinds[kind])) >= 2
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
    """Figure 4: acceptance per RFSQ layer (accepted / drafted) of every RSD setting, as a heatmap
    per drafter: one row per setting (gamma, then rule as the rows come), one column per layer,
    the value written in each cell. A layer the setting never drafted is marked "not drafted"
    (hatched, no value). Rows without ``acceptance_per_layer`` (plain methods) are left out."""
    rsd = [r for r in rows if r.get("acceptance_per_layer") is not None]
    if not rsd:  # a run without RSD settings: say so rather than draw empty axes
        fig, ax = plt.subplots(figsize=(4.0, 1.2), layout="constrained")
        ax.axis("off")
        ax.text(0.5, 0.5, "no RSD setting with acceptance per layer in these rows", ha="center", va="center")
        return fig
    panels: dict[str, list[tuple[str, list[float]]]] = {}
    for r in rsd:
        drafter, label = _setting_label(r["method"])
        values = [np.nan if a is None else float(a) for a in r["acceptance_per_layer"]]
        panels.setdefault(drafter, []).append((label, values))
    panels = {d: sorted(p, key=lambda s: _gamma_of(s[0])) for d, p in sorted(panels.items())}
    layers = max(1, *(len(v) for p in panels.values() for _, v in p))
    height = max(len(p) for p in panels.values())
    width = max(len(label) for p in panels.values() for label, _ in p)
    fig, axes = plt.subplots(
        1, len(panels), squeeze=False, layout="constrained",
        figsize=(1.0 + len(panels) * (0.04 * width + 0.42 * layers + 0.2), max(1.8, 0.9 + 0.19 * height)),
    )  # fmt: skip
    cmap = plt.get_cmap("viridis")
    for ax, (drafter, settings) in zip(axes[0], panels.items(), strict=True):
        matrix = np.full((height, layers), np.nan)
        for i, (_, values) in enumerate(settings):
            matrix[i, : len(values)] = values
        image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=0, vmax=1, aspect="auto")
        for i in range(len(settings)):
            for j in range(layers):
                value = matrix[i, j]
                if np.isnan(value):
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fc="#eeeeee", ec="#bbbbbb",
                                               hatch="////", lw=0.0))  # fmt: skip
                    continue
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=5.5,
                        color="white" if value < 0.55 else "black")  # fmt: skip
        gammas = [_gamma_of(label) for label, _ in settings]
        for i in range(1, len(settings)):
            if gammas[i] != gammas[i - 1]:  # a line between gamma groups
                ax.axhline(i - 0.5, color="white", lw=1.5)
        ax.set_xticks(range(layers), [str(j) for j in range(layers)], fontsize=6)
        ax.set_yticks(range(len(settings)), [label for label, _ in settings], fontsize=5.5)
        ax.set_ylim(height - 0.5, -0.5)
        ax.tick_params(length=0)
        ax.grid(False)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_xlabel("RFSQ layer (coarse to fine)", fontsize=7)
        ax.set_title(f"drafter: {drafter}" if drafter else "RSD settings", fontsize=7)
    bar = fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, aspect=30, pad=0.02)
    bar.set_label("accepted / drafted", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    if np.isnan([v for p in panels.values() for _, vs in p for v in vs]).any() or any(
        len(vs) < layers for p in panels.values() for _, vs in p
    ):
        fig.legend(handles=[Patch(fc="#eeeeee", ec="#bbbbbb", hatch="////", label="not drafted")],
                   loc="outside lower center", fontsize=6, frameon=False)  # fmt: skip
    return fig


def _setting_label(method: str) -> tuple[str, str]:
    """``(drafter, row label)`` of an RSD method: ``("head", "g3 match_rate 0.5")``; a name
    that is no method spec keeps its text, in a panel without a drafter."""
    try:
        spec = MethodSpec.parse(method)
    except ValueError:
        return "", method
    if not spec.is_rsd:
        return "", method
    label = f"g{spec.gamma} {spec.rule}" + (f" {spec.param:g}" if spec.param is not None else "")
    label += "" if spec.redraft else " once"
    label += f" @{spec.temperature:g}" if spec.temperature > 0 else ""
    return spec.drafter or "", label


def _gamma_of(label: str) -> int:
    head = label.split(" ", 1)[0]
    return int(head[1:]) if head[:1] == "g" and head[1:].isdigit() else 0


def write_manifest(
    figures_dir: str | Path,
    *,
    sources: Mapping[str, Sequence[str]],
    profile: str | None = None,
    commit: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Write ``figures/MANIFEST.json``: per file, the notebook that wrote it (by its number prefix),
    the result runs it came from (``sources`` by file-name prefix, e.g. ``{"07_": [run dirs]}``),
    its SHA-256, the ``commit`` of the code that made it and the pipeline ``profile`` it was made
    under.

    ``commit`` defaults to the checked-out tree (:func:`rsdlib.results.git_sha`, ``-dirty`` with
    uncommitted changes). A file whose SHA-256 is the one the manifest already records keeps that
    entry's commit and profile: it was not redrawn, so where it came from has not changed.
    Deterministic: sorted keys, paths relative to the repository.
    """
    figures_dir = Path(figures_dir)
    path = figures_dir / "MANIFEST.json"
    commit = commit or git_sha()
    try:
        before = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:  # a broken manifest is rewritten, not trusted
        before = {}
    notebooks = {nb.stem.split("_", 1)[0]: nb.name for nb in list_notebooks()}
    manifest = {}
    for file in sorted(p for p in figures_dir.iterdir() if p.is_file() and p.name != "MANIFEST.json"):
        prefix = file.name.split("_", 1)[0]
        runs = next((list(v) for k, v in sources.items() if file.name.startswith(k)), [])
        sha = hashlib.sha256(file.read_bytes()).hexdigest()
        old = before.get(file.name)
        same = isinstance(old, dict) and old.get("sha256") == sha and "commit" in old
        manifest[file.name] = {
            "notebook": notebooks.get(prefix),
            "results": sorted(_relative(r) for r in runs),
            "sha256": sha,
            "commit": old["commit"] if same else commit,
            "profile": old.get("profile") if same else profile,
        }
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def _relative(path: str | Path) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return path.name  # outside the repository (a temporary folder in tests): the run's name
