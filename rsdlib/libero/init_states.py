"""Where episodes start: the benchmark's fixed init states for evaluation, sampled ones for training.

Every published LIBERO result evaluates on the 50 init states the benchmark ships per task and
trains on demonstrations that started elsewhere. Demonstrations here start from placements
that LIBERO's own samplers draw from the task's BDDL regions (:meth:`LiberoEnv.reset_sampled`),
and :func:`check_held_out` refuses any that lands on a benchmark init state: two starts are the
same when every movable object is within :data:`SAME_PLACEMENT_M` of where it is in the other.
"""

from __future__ import annotations

from collections.abc import Callable

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
    starts = _free_joint_qpos(env)
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


def _free_joint_qpos(env) -> np.ndarray:
    """Flat-state indices of the first qpos number of each movable object (its position)."""
    model = env.raw.env.sim.model._model
    return np.array([1 + model.jnt_qposadr[j] for j in _free_joint_ids(env)], dtype=int)


def mirror_state(env, flat_state: np.ndarray, swap: tuple[int, int]) -> np.ndarray:
    """The mirror image of a start across the robot's axis (the plane y = 0).

    Every movable object goes to ``y -> -y`` with its orientation reflected (a quaternion
    ``(w, x, y, z)`` becomes ``(w, -x, y, -z)``); the two objects of ``swap`` (indices into the
    movable objects, e.g. two identical bowls, each sampled from its own side's region) trade
    places, so each is again in its own region. The robot is left as it is: its start pose is
    symmetric about that plane. Velocities stay as they are (zero in a placed start).
    """
    state = np.array(flat_state, dtype=np.float64, copy=True)
    starts = _free_joint_qpos(env)
    poses = np.stack([state[s : s + 7] for s in starts])  # (K, 7): xyz, wxyz
    poses[:, 1] *= -1
    poses[:, [4, 6]] *= -1
    a, b = swap
    poses[[a, b]] = poses[[b, a]]
    for s, pose in zip(starts, poses, strict=True):
        state[s : s + 7] = pose
    return state


def movable_names(env) -> list[str]:
    """The names of the movable objects' free joints, in the order :func:`placement` lists them."""
    model = env.raw.env.sim.model._model
    return [model.joint(int(s)).name for s in _free_joint_ids(env)]


def _free_joint_ids(env) -> list[int]:
    import mujoco

    model = env.raw.env.sim.model._model
    return [j for j in range(model.njnt) if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE]


def mirrored_starts(env, count: int, swap: tuple[str, str], seed_of: Callable[[int], int]) -> np.ndarray:
    """``count`` evaluation init states of a mirror-symmetric scene, in mirrored pairs.

    Start ``2i`` is LIBERO's placement drawn with ``seed_of(k)`` (the next k whose start settles);
    start ``2i + 1`` is its mirror image (:func:`mirror_state`, the objects named by ``swap``
    trading places), also checked to settle. Returns ``(count, state_dim)`` flat states.
    """
    if count < 2 or count % 2:
        raise ValueError(f"mirrored starts come in pairs: count must be even and >= 2, got {count}")
    names = movable_names(env)
    missing = [n for n in swap if not any(j.startswith(n) for j in names)]
    if missing:
        raise ValueError(
            f"no movable object named {missing} in {env.task.suite} task {env.task.task_id}: {names}"
        )
    pair = tuple(next(i for i, j in enumerate(names) if j.startswith(n)) for n in swap)
    states: list[np.ndarray] = []
    k = 0
    while len(states) < count:
        env.reset_sampled(seed_of(k), wait=False)
        k += 1
        drawn = env.sim_state()
        twins = [drawn, mirror_state(env, drawn, pair)]
        try:
            for state in twins:
                env.raw.set_init_state(state)
                env.wait()
                check_settled(env, state, env.sim_state())
        except UnstableStartError:
            continue
        states.extend(twins)
    return np.stack(states)
