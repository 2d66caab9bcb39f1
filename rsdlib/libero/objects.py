"""The task's objects as the ``lowdim`` modality sees them: one pose per object or fixture.

robomimic's ``low_dim`` datasets give a policy the objects' poses instead of camera images;
this is the same for LIBERO. Every object and fixture the task's BDDL file declares becomes
one row of :data:`OBJECT_FEATURES` numbers, read from the simulator:

- its root body's world position (3) and orientation quaternion (4, w first, w >= 0);
- the positions of up to :data:`MAX_JOINTS` of its own joints (a cabinet's three drawers, a
  stove's knob; zeros where it has fewer), so "open the drawer" is observable too.

Rows come in the order of the objects' names, and each carries its *kind* (the BDDL category,
``akita_black_bowl``): two identical bowls are two rows of the same kind, told apart only by
where they are, as a camera would tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rsdlib.observations import OBJECT_DIM

#: Joint positions an object row holds (:data:`rsdlib.observations.OBJECT_FEATURES`).
MAX_JOINTS = OBJECT_DIM - 7


@dataclass(frozen=True)
class TaskObject:
    """One object or fixture of a task, and where the simulator keeps its state."""

    name: str
    kind: str
    body_id: int
    joint_qpos: tuple[int, ...]  # qpos addresses of its hinge/slide joints (not its free joint)


def task_objects(env) -> list[TaskObject]:
    """The objects and fixtures of a :class:`~rsdlib.libero.env.LiberoEnv`'s task, by name."""
    import mujoco

    problem = env.raw.env
    model = problem.sim.model._model
    declared = {**problem.objects_dict, **problem.fixtures_dict}
    objects = []
    for name in sorted(declared):
        body = problem.obj_body_id[name]
        root = model.body_rootid[body]
        joints = [
            int(model.jnt_qposadr[j])
            for j in range(model.njnt)
            if model.body_rootid[model.jnt_bodyid[j]] == root
            and model.jnt_type[j] in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE)
        ]
        if len(joints) > MAX_JOINTS:
            raise ValueError(
                f"{name} ({declared[name].category_name}) has {len(joints)} joints; the lowdim "
                f"observation keeps {MAX_JOINTS}: raise MAX_JOINTS in rsdlib/libero/objects.py"
            )
        objects.append(TaskObject(name, str(declared[name].category_name), int(body), tuple(joints)))
    return objects


def object_states(sim, objects: list[TaskObject]) -> np.ndarray:
    """``(K, OBJECT_DIM)`` float32 rows for ``objects`` in the simulator's current state."""
    data = sim.data
    rows = np.zeros((len(objects), OBJECT_DIM), dtype=np.float32)
    for i, obj in enumerate(objects):
        quat = np.asarray(data.xquat[obj.body_id], dtype=np.float64)  # (w, x, y, z)
        rows[i, :3] = data.xpos[obj.body_id]
        rows[i, 3:7] = -quat if quat[0] < 0 else quat  # q and -q are one rotation
        rows[i, 7 : 7 + len(obj.joint_qpos)] = data.qpos[list(obj.joint_qpos)]
    return rows
