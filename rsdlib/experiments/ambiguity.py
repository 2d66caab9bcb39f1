"""The ambiguity experiment: one scene, two equally valid targets. Which does each decoder commit to?

The scene (``rsd_ambiguity`` task 0) is symmetric about the robot's start: two identical black
bowls mirrored across the robot's axis, the plate on the axis; the instruction is "pick up a
black bowl and place it on the plate" and either bowl on the plate is success. Its evaluation init
states come in mirrored pairs (``2i + 1`` is ``2i`` reflected); the scripted expert's
demonstrations start elsewhere (sampled) and split between the bowls by start index
(:func:`rsdlib.libero.goals.choose_alternative`), so the demonstrated actions are bimodal. A
decoder that samples the action distribution coarse to fine should pick one bowl per rollout; a
regression to the mean (L1) may be pulled towards the middle.

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
TARGET_OUTCOMES = OUTCOMES[:2]
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


def _mirror(outcome: str) -> str:
    return {"bowl 1": "bowl 2", "bowl 2": "bowl 1"}.get(outcome, outcome)


def commitment_rows(records: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Per method: success with its 95% interval, the share of rollouts per outcome, and balance.

    - ``committed``: the share of rollouts that moved exactly one bowl.
    - ``bowl 1 of committed`` with ``b1_low``/``b1_high``: among committed rollouts, the share
      that took bowl 1, with its 95% Wilson interval (0.5: no side preferred).
    - ``starts split``: the share of init states with more than one rollout from which rollouts
      took each bowl at least once (a sampling policy can; a greedy one repeats itself); None
      when no init state had two rollouts.
    - ``mirror consistent``: among mirrored pairs of init states (``2i``, ``2i + 1``) whose first
      rollouts both committed to a bowl, the share that took mirrored bowls (bowl 1 <-> bowl 2);
      a policy that follows the scene, not a fixed side, is 1; None when no pair committed twice.
    """
    rows = []
    for method, recs in records.items():
        outcomes = [committed_to(r) for r in recs]
        n = len(recs)
        share = {o: outcomes.count(o) / n if n else 0.0 for o in OUTCOMES}
        per_start: dict[int, list[str]] = {}
        for r, o in zip(recs, outcomes, strict=True):
            per_start.setdefault(int(r["init_index"]), []).append(o)
        repeated = [v for v in per_start.values() if len(v) > 1]
        firsts = [
            (per_start[i][0], per_start[i + 1][0]) for i in per_start if i % 2 == 0 and i + 1 in per_start
        ]
        pairs = [(a, b) for a, b in firsts if a in TARGET_OUTCOMES and b in TARGET_OUTCOMES]
        balance = success_summary(outcomes.count("bowl 1"), sum(o in TARGET_OUTCOMES for o in outcomes))
        rows.append(
            {"method": method}
            | success_summary(sum(bool(r["success"]) for r in recs), n)
            | {f"share {o}": share[o] for o in OUTCOMES}
            | {
                "committed": share["bowl 1"] + share["bowl 2"],
                "bowl 1 of committed": balance["rate"],
                "b1_low": balance["ci_low"],
                "b1_high": balance["ci_high"],
                "starts": len(per_start),
                "starts split": (
                    sum(set(TARGET_OUTCOMES) <= set(v) for v in repeated) / len(repeated)
                    if repeated
                    else None
                ),
                "mirror consistent": (sum(b == _mirror(a) for a, b in pairs) / len(pairs) if pairs else None),
                "errors": sum(bool(r.get("error")) for r in recs),
            }
        )
    return rows


def plot_paths(records: Mapping[str, Sequence[Mapping[str, Any]]], *, title: str | None = None) -> plt.Figure:
    """Figure 2: end-effector paths seen from above, one panel per method, coloured by outcome.

    Drawn with the robot's axis vertical (table x up, y to the left, as the robot sees the
    table), so the scene's mirror symmetry is left against right. Bowls and plate are drawn
    where they started in each method's first rollout; the starts of other init states differ by
    at most a few centimetres. A triangle marks where the gripper starts. The view is the scene
    (objects and start, with a margin): paths that leave it are cut at its edge.
    """
    methods = list(records)
    fig, axes = plt.subplots(1, len(methods), figsize=(1.9 * len(methods), 2.9), layout="constrained")
    axes = np.atleast_1d(axes)
    first = next((recs[0] for recs in records.values() if recs), None)
    if first is not None:
        scene = np.array(
            [first["objects"][n]["start"][:2] for n in (*TARGETS, PLACE)] + [first["eef_path"][0][:2]]
        )
        half = np.abs(scene[:, 1]).max() + 0.15  # symmetric about the axis
        xlim, ylim = (half, -half), (scene[:, 0].min() - 0.1, scene[:, 0].max() + 0.15)
    else:
        xlim, ylim = (1, -1), (-1, 1)
    for ax, method in zip(axes, methods, strict=True):
        recs = records[method]
        for r in recs:
            path = np.asarray(r["eef_path"])
            ax.plot(path[:, 1], path[:, 0], color=OUTCOME_COLORS[committed_to(r)], lw=0.7, alpha=0.6)
            ax.plot(path[-1, 1], path[-1, 0], "x" if not r["success"] else ".", color="black", ms=3)
        if recs:
            objects = recs[0]["objects"]
            for name, label in [(TARGETS[0], "bowl 1"), (TARGETS[1], "bowl 2"), (PLACE, "plate")]:
                x, y = objects[name]["start"][:2]
                ax.add_patch(
                    plt.Circle((y, x), 0.035, fill=False, lw=1.0, ls="-" if label != "plate" else "--")
                )
                ax.annotate(label, (y, x), xytext=(0, 7), textcoords="offset points", fontsize=5, ha="center")
            start = np.asarray(recs[0]["eef_path"])[0]
            ax.plot(start[1], start[0], "^", color="black", ms=4)
        ax.axvline(0, color="0.8", lw=0.5, zorder=0)
        wins = sum(bool(r["success"]) for r in recs)
        ax.set_title(f"{method}\n{wins}/{len(recs)} succeeded", fontsize=7)
        ax.set(xlim=xlim, ylim=ylim, xlabel="y, m")
        ax.set_aspect("equal")
    axes[0].set_ylabel("x, m")
    handles = [plt.Line2D([], [], color=c, label=o) for o, c in OUTCOME_COLORS.items()]
    fig.legend(
        handles=handles, loc="outside lower center", ncol=4, fontsize=6, title="bowl moved", title_fontsize=6
    )
    if title:
        fig.suptitle(title, fontsize=8)
    return fig


def plot_commitment(rows: Sequence[Mapping[str, Any]]) -> plt.Figure:
    """Which bowl each method's rollouts took: stacked shares per outcome, one bar per method,
    with the share of committed rollouts that took bowl 1 and its 95% interval beside it."""
    fig, (ax, bx) = plt.subplots(
        1, 2, figsize=(6.4, 0.45 * len(rows) + 1.2), sharey=True, layout="constrained"
    )
    names = [r["method"] for r in rows]
    left = np.zeros(len(rows))
    for outcome in OUTCOMES:
        share = np.array([r[f"share {outcome}"] for r in rows])
        ax.barh(names, share, left=left, color=OUTCOME_COLORS[outcome], label=outcome)
        left += share
    ax.set(xlim=(0, 1), xlabel="share of rollouts")
    ax.invert_yaxis()
    ax.legend(fontsize=6, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(rows) < 4 else -0.15))
    for i, r in enumerate(rows):
        if r["bowl 1 of committed"] is not None:
            p = r["bowl 1 of committed"]
            bx.errorbar(
                p, i, xerr=[[p - r["b1_low"]], [r["b1_high"] - p]], fmt="o", color="black", ms=3, capsize=2
            )
    bx.axvline(0.5, color="0.6", lw=0.8, ls="--")
    bx.set(xlim=(0, 1), xlabel="bowl 1 among committed rollouts")
    return fig
