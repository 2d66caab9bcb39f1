"""Goals with alternatives, the ambiguity scene, and how its rollouts are classified."""

from __future__ import annotations

import numpy as np
import pytest

from rsdlib.experiments.ambiguity import PLACE, TARGETS, commitment_rows, committed_to
from rsdlib.libero.goals import choose_alternative, goal_holds, goal_objects, has_alternatives

EITHER = [["or", ["on", "bowl_1", "plate_1"], ["on", "bowl_2", "plate_1"]]]


def test_a_goal_with_alternatives_holds_when_any_alternative_does():
    on_plate: set[str] = set()
    holds = lambda p: p[0] == "on" and p[1] in on_plate  # noqa: E731
    assert has_alternatives(EITHER) and not has_alternatives([["on", "bowl_1", "plate_1"]])
    assert not goal_holds(EITHER, holds)
    on_plate.add("bowl_2")
    assert goal_holds(EITHER, holds)
    # A conjunction around the alternatives still needs all of its parts.
    both = [["and", EITHER[0], ["on", "cup", "plate_1"]]]
    assert has_alternatives(both) and not goal_holds(both, holds)
    on_plate.add("cup")
    assert goal_holds(both, holds)


def test_the_expert_alternative_alternates_with_the_init_index():
    assert choose_alternative(EITHER, 0) == [["on", "bowl_1", "plate_1"]]
    assert choose_alternative(EITHER, 1) == [["on", "bowl_2", "plate_1"]]
    assert choose_alternative(EITHER, 4) == choose_alternative(EITHER, 0)
    plain = [["open", "drawer_1"], ["in", "bowl", "drawer_1"]]
    assert choose_alternative(plain, 3) == plain
    assert goal_objects(EITHER) == ["bowl_1", "plate_1", "bowl_2"]


def record(moved_1: float, moved_2: float, success: bool, init_index: int = 0) -> dict:
    start = {t: [0.1 * i, 0.0, 0.9] for i, t in enumerate(TARGETS)}
    end = {TARGETS[0]: [moved_1, 0.0, 0.9], TARGETS[1]: [0.1 + moved_2, 0.0, 0.9]}
    return {
        "success": success,
        "init_index": init_index,
        "objects": {t: {"start": start[t], "end": end[t]} for t in TARGETS},
        "eef_path": [[0, 0, 1], [0.05, 0, 1]],
    }


def test_a_rollout_commits_to_the_bowl_it_moved():
    assert committed_to(record(0.2, 0.0, True)) == "bowl 1"
    assert committed_to(record(0.0, 0.15, True)) == "bowl 2"
    assert committed_to(record(0.1, 0.1, False)) == "both"
    assert committed_to(record(0.01, 0.02, False)) == "neither"  # nudged, not moved
    with pytest.raises(ValueError, match="record_path"):
        committed_to({"success": False})
    rows = commitment_rows({"a": [record(0.2, 0, True), record(0, 0.2, True), record(0, 0, False)]})
    (row,) = rows
    assert (row["n"], row["successes"]) == (3, 2)
    assert row["committed"] == pytest.approx(2 / 3) and row["share neither"] == pytest.approx(1 / 3)


BOWL_1, BOWL_2, NEITHER = (0.2, 0.0, True), (0.0, 0.2, True), (0.0, 0.0, False)


def test_balance_split_starts_and_mirror_consistency_are_counted_per_start_and_pair():
    # A greedy-like policy that follows the scene: init 0 -> bowl 1, its mirror twin 1 -> bowl 2.
    follows = [record(*BOWL_1, init_index=0), record(*BOWL_2, init_index=1)]
    # One that always takes bowl 1: not mirror consistent, and every committed rollout is bowl 1.
    fixed_side = [record(*BOWL_1, init_index=0), record(*BOWL_1, init_index=1)]
    # A sampler: from start 2 both bowls over its rollouts, from start 3 only bowl 2 (and a miss).
    sampler = [record(*BOWL_1, init_index=2), record(*BOWL_2, init_index=2), record(*BOWL_2, init_index=3),
               record(*NEITHER, init_index=3)]  # fmt: skip
    rows = {r["method"]: r for r in commitment_rows({"f": follows, "s": fixed_side, "x": sampler})}
    assert rows["f"]["mirror consistent"] == 1.0 and rows["s"]["mirror consistent"] == 0.0
    assert rows["f"]["bowl 1 of committed"] == 0.5 and rows["s"]["bowl 1 of committed"] == 1.0
    assert rows["s"]["b1_low"] < 1.0 == rows["s"]["b1_high"]  # two rollouts cannot rule out balance
    assert rows["f"]["starts split"] is None  # one rollout per start: nothing to split
    assert rows["x"]["starts split"] == 0.5 and rows["x"]["starts"] == 2
    assert rows["x"]["mirror consistent"] == 1.0  # each start's first rollout: bowl 1 from 2, bowl 2 from 3
    # Pairs where a first rollout moved no bowl say nothing about following the scene.
    missed = [record(*NEITHER, init_index=0), record(*NEITHER, init_index=1), record(*BOWL_1, init_index=2)]
    assert commitment_rows({"m": missed})[0]["mirror consistent"] is None


@pytest.mark.libero
def test_the_ambiguity_scene_is_mirror_symmetric_and_either_bowl_on_the_plate_is_success():
    from rsdlib.libero.demos import record_rollout
    from rsdlib.libero.env import LiberoEnv, RenderOptions
    from rsdlib.libero.experts import ExpertConfig, ScriptedExpert
    from rsdlib.libero.init_states import movable_names, placement
    from rsdlib.libero.tasks import get_task

    task = get_task("rsd_ambiguity", 0)
    assert "a black bowl" in task.language and task.num_init_states == 50
    expert = ScriptedExpert(ExpertConfig())
    with LiberoEnv("rsd_ambiguity", 0, render=RenderOptions(enabled=False)) as env:
        names = [n.removesuffix("_joint0") for n in movable_names(env)]
        assert names == [*TARGETS, PLACE]
        # Init states come in mirrored pairs: the twin has every object at y -> -y, the bowls swapped.
        for i in range(0, task.num_init_states, 2):
            drawn, twin = placement(env, env.init_states[i]), placement(env, env.init_states[i + 1])
            mirrored = drawn[[1, 0, 2]] * [1, -1, 1]
            np.testing.assert_allclose(twin, mirrored, atol=1e-9)
            assert (
                drawn[0, 1] > 0.1 > -0.1 > drawn[1, 1] and abs(drawn[2, 1]) < 0.03
            )  # bowls apart, plate on the axis
        env.reset(0)
        assert not env.success
        # The robot starts on the axis of symmetry.
        assert abs(env.raw.env._get_observations(force_update=True)["robot0_eef_pos"][1]) < 1e-3
        for init_index, target in ((0, TARGETS[0]), (1, TARGETS[1])):
            rollout = record_rollout(env, expert, init_index, seed=init_index)
            assert rollout.success and expert.goal == [["on", target, "plate_1"]]
