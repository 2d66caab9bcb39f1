"""The ambiguity experiment: one scene, two equally valid targets. Which does each decoder commit to?

The scene (``rsd_ambiguity`` task 0, the scene of libero_spatial task 0) holds two identical black
bowls; the instruction is "pick up a black bowl and place it on the plate" and either bowl on the
plate is success. The scripted expert's demonstrations split between the bowls by init index
(:func:`rsdlib.libero.goals.choose_alternative`), so the demonstrated actions are bimodal. A
decoder that samples the action distribution coarse to fine should pick one bowl per rollout; a
regression to the mean (L1) is pulled towards the middle.

Rollouts run through the evaluation harness with ``EvalOptions(record_path=True)``; each episode
record then holds the end-effector path and where the bowls started and ended. A rollout
*committed* to the bowl that it moved (by at least :data:`MOVED_M`): ``neither`` if none moved,
``both`` if it disturbed both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from rsdlib.metrics import success_summary

SUITE = "rsd_ambiguity"
TARGETS = ("akita_black_bowl_1", "akita_black_bowl_2")
PLACE = "plate_1"
#: A bowl that ends this far (metres) from where it started was picked (or pushed) by the robot.
MOVED_M = 0.03
OUTCOMES = ("bowl 1", "bowl 2", "both", "neither")
OUTCOME_COLORS = {"bowl 1": "#4C72B0", "bowl 2": "#DD8452", "both": "#8172B3", "neither": "#C44E52"}


def committed_to(record: Mapping[str, Any]) -> str:
    """``bowl 1``, ``bowl 2``, ``both`` or ``neither``: the bowls this rollout moved."""
    objects = record.get("objects")
    if not objects:
        raise ValueError(
            "the episode record has no object positions: evaluate with EvalOptions(record_path=True)"
        )
    moved = [np.linalg.norm(np.subtract(objects[t]["end"], objects[t]["start"])) >= MOVED_M for t in TARGETS]
    return {(True, False): "bowl 1", (False, True): "bowl 2", (True, True): "both"}.get(
        tuple(moved), "neither"
    )


def commitment_rows(records: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Per method: success with its 95% interval, and the share of rollouts per outcome.

    ``committed`` is the share that moved exactly one bowl.
    """
    rows = []
    for method, recs in records.items():
        outcomes = [committed_to(r) for r in recs]
        n = len(recs)
        share = {o: outcomes.count(o) / n if n else 0.0 for o in OUTCOMES}
        rows.append(
            {"method": method}
            | success_summary(sum(bool(r["success"]) for r in recs), n)
            | {f"share {o}": share[o] for o in OUTCOMES}
            | {
                "committed": share["bowl 1"] + share["bowl 2"],
                "errors": sum(bool(r.get("error")) for r in recs),
            }
        )
    return rows


def plot_paths(records: Mapping[str, Sequence[Mapping[str, Any]]], *, title: str | None = None) -> plt.Figure:
    """Figure 2: end-effector paths seen from above, one panel per method, coloured by outcome.

    Bowls and plate are drawn where they started in each method's first rollout (from the same
    init state they start in the same place).
    """
    methods = list(records)
    fig, axes = plt.subplots(1, len(methods), figsize=(2.2 * len(methods), 2.9), layout="constrained")
    axes = np.atleast_1d(axes)
    paths = [np.asarray(r["eef_path"])[:, :2] for recs in records.values() for r in recs]
    lo, hi = (np.concatenate(paths).min(0) - 0.05, np.concatenate(paths).max(0) + 0.05) if paths else (-1, 1)
    for ax, method in zip(axes, methods, strict=True):
        recs = records[method]
        for r in recs:
            path = np.asarray(r["eef_path"])
            ax.plot(path[:, 0], path[:, 1], color=OUTCOME_COLORS[committed_to(r)], lw=0.8, alpha=0.7)
            ax.plot(*path[-1, :2], "x" if not r["success"] else ".", color="black", ms=3)
        if recs:
            objects = recs[0]["objects"]
            for name, label in [(TARGETS[0], "bowl 1"), (TARGETS[1], "bowl 2"), (PLACE, "plate")]:
                x, y = objects[name]["start"][:2]
                ax.add_patch(
                    plt.Circle((x, y), 0.035, fill=False, lw=1.0, ls="-" if label != "plate" else "--")
                )
                below = label == "plate"  # the plate sits beside bowl 1: label it underneath
                ax.annotate(label, (x, y), xytext=(0, -11 if below else 9), textcoords="offset points",
                            fontsize=6, ha="center", va="center")  # fmt: skip
        wins = sum(bool(r["success"]) for r in recs)
        ax.set_title(f"{method}\n{wins}/{len(recs)} succeeded", fontsize=7)
        ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), xlabel="x, m")
        ax.set_aspect("equal")
    axes[0].set_ylabel("y, m")
    handles = [plt.Line2D([], [], color=c, label=o) for o, c in OUTCOME_COLORS.items()]
    fig.legend(
        handles=handles, loc="outside lower center", ncol=4, fontsize=6, title="bowl moved", title_fontsize=6
    )
    if title:
        fig.suptitle(title, fontsize=8)
    return fig
