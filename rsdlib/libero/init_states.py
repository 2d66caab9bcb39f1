"""Where episodes start: the benchmark's fixed init states for evaluation, sampled ones for training.

Every published LIBERO result evaluates on the 50 init states the benchmark ships per task and
trains on demonstrations that started elsewhere. Demonstrations here start from placements
that LIBERO's own samplers draw from the task's BDDL regions (:meth:`LiberoEnv.reset_sampled`),
and :func:`check_held_out` refuses any that lands on a benchmark init state: two starts are the
same when every movable object is within :data:`SAME_PLACEMENT_M` of where it is in the other.
"""

from __future__ import annotations

import numpy as np

#: Two placements are one init state when no movable object is further apart than this (m).
SAME_PLACEMENT_M = 0.002


#: An object that moves further than this (m) sideways while a sampled start settles was thrown
#: by the physics (LIBERO's samplers can overlap a bowl with the plate's rim), not placed. (Every
#: object drops a few centimetres: the samplers place them above their surface.)
SETTLE_MOVE_M = 0.05


class HeldOutError(ValueError):
    """A sampled start that coincides with one of the benchmark's evaluation init states."""


class UnstableStartError(ValueError):
    """A sampled start whose objects did not stay where they were placed while it settled."""


def check_settled(env, before: np.ndarray, after: np.ndarray) -> None:
    """Raise :class:`UnstableStartError` when an object moved more than :data:`SETTLE_MOVE_M`
    sideways between two flat states of a start (placed, and after the protocol's wait)."""
    moved = np.linalg.norm((placement(env, after) - placement(env, before))[:, :2], axis=-1)
    if moved.max() > SETTLE_MOVE_M:
        raise UnstableStartError(
            f"{env.task.suite} task {env.task.task_id}: an object moved {moved.max() * 100:.0f} cm while the "
            "sampled start settled (placed overlapping another); the start is not used"
        )


def placement(env, flat_state: np.ndarray) -> np.ndarray:
    """``(K, 3)`` positions of the task's movable objects in a flat MuJoCo state.

    A flat state is ``[time, qpos, qvel]``; a movable object is a body with a free joint,
    whose first three qpos numbers are its position.
    """
    import mujoco

    model = env.raw.env.sim.model._model
    free = [j for j in range(model.njnt) if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE]
    starts = np.array([1 + model.jnt_qposadr[j] for j in free], dtype=int)
    return np.asarray(flat_state)[starts[:, None] + np.arange(3)]


def distance_to_benchmark(env, flat_state: np.ndarray) -> float:
    """How far (m) a start is from the nearest benchmark init state of ``env``'s task: the
    smallest, over those states, of the largest displacement of any movable object."""
    mine = placement(env, flat_state)  # (K, 3)
    theirs = np.stack([placement(env, s) for s in env.init_states])  # (S, K, 3)
    return float(np.linalg.norm(theirs - mine, axis=-1).max(axis=1).min())


def check_held_out(env, flat_state: np.ndarray) -> float:
    """Raise :class:`HeldOutError` when ``flat_state`` is one of the benchmark's init states;
    returns its distance to the nearest (m)."""
    distance = distance_to_benchmark(env, flat_state)
    if distance <= SAME_PLACEMENT_M:
        task = env.task
        raise HeldOutError(
            f"{task.suite} task {task.task_id}: a sampled start lies within {distance * 1000:.1f} mm of a "
            "benchmark init state; demonstrations must not start where the evaluation does"
        )
    return distance
