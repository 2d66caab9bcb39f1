"""Privileged views of a LIBERO scene for scripted experts: poses, shapes, joints, regions.

Experts plan from what a teleoperator sees and knows: where each object is, how big it is,
where the goal region lies and how far a drawer is open. All of it is read from the live
MuJoCo model and data of a :class:`~rsdlib.libero.env.LiberoEnv`; nothing here steps the sim.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in world coordinates (metres).

    Attributes:
        lo: (3,) lower corner.
        hi: (3,) upper corner.
    """

    lo: np.ndarray
    hi: np.ndarray

    @property
    def center(self) -> np.ndarray:
        return (self.lo + self.hi) / 2

    @property
    def size(self) -> np.ndarray:
        return self.hi - self.lo

    @property
    def top(self) -> float:
        return float(self.hi[2])

    @property
    def bottom(self) -> float:
        return float(self.lo[2])


class Scene:
    """Read-only access to the objects, fixtures, sites and joints of a LIBERO env.

    Args:
        env: a :class:`~rsdlib.libero.env.LiberoEnv` (its ``raw.env`` is LIBERO's problem env).
    """

    def __init__(self, env) -> None:
        self.problem = env.raw.env
        self.sim = self.problem.sim
        self.model = self.sim.model._model
        self.data = self.sim.data._data

    # -- the task --------------------------------------------------------------------------

    @property
    def goal(self) -> list[list[str]]:
        """The BDDL goal as a list of predicates, e.g. ``[["on", "bowl_1", "plate_1"]]``."""
        return [list(p) for p in self.problem.parsed_problem["goal_state"]]

    def is_object(self, name: str) -> bool:
        return name in self.problem.objects_dict or name in self.problem.fixtures_dict

    def is_site(self, name: str) -> bool:
        return name in self.problem.object_sites_dict

    def site_parent(self, name: str) -> str:
        """The object or fixture a region site belongs to (``basket_1_contain_region`` -> ``basket_1``)."""
        return self.problem.object_sites_dict[name].parent_name

    # -- robot -----------------------------------------------------------------------------

    @property
    def eef_pos(self) -> np.ndarray:
        return self.data.site_xpos[self._site_id("gripper0_grip_site")].copy()

    @property
    def eef_mat(self) -> np.ndarray:
        return self.data.site_xmat[self._site_id("gripper0_grip_site")].reshape(3, 3).copy()

    @property
    def robot_base(self) -> np.ndarray:
        """World position of the robot's base (reach is measured from it)."""
        return self.data.xpos[self.model.body("robot0_base").id].copy()

    @property
    def gripper_opening(self) -> float:
        """Distance between the two finger joints' positions (about 0.08 m fully open)."""
        q = [
            self.data.qpos[self.model.jnt_qposadr[self._joint_id(f"gripper0_finger_joint{i}")]]
            for i in (1, 2)
        ]
        return float(q[0] - q[1])

    # -- objects ---------------------------------------------------------------------------

    def body_of(self, name: str) -> int:
        """The root body id of an object or fixture."""
        obj = self.problem.objects_dict.get(name) or self.problem.fixtures_dict.get(name)
        if obj is None:
            raise KeyError(f"{name!r} is neither an object nor a fixture of this scene")
        return self.model.body(obj.root_body).id

    def pos(self, name: str) -> np.ndarray:
        """World position of an object's root body, or of a site."""
        if self.is_site(name) and not self.is_object(name):
            return self.data.site_xpos[self._site_id(name)].copy()
        return self.data.xpos[self.body_of(name)].copy()

    def mat(self, name: str) -> np.ndarray:
        """World rotation matrix (3, 3) of an object's root body, or of a site."""
        if self.is_site(name) and not self.is_object(name):
            return self.data.site_xmat[self._site_id(name)].reshape(3, 3).copy()
        return self.data.xmat[self.body_of(name)].reshape(3, 3).copy()

    def points(self, name: str, *, bodies: list[int] | None = None) -> np.ndarray:
        """World points (N, 3) outlining the collision geoms of an object (mesh vertices, box corners)."""
        geoms = self._geoms(self.body_of(name)) if bodies is None else self._geoms_of_bodies(bodies)
        if not geoms:
            raise ValueError(f"{name!r} has no collision geoms")
        return np.concatenate([self._geom_points(g) for g in geoms])

    def part_points(self, name: str) -> list[np.ndarray]:
        """World points (N_i, 3) of each collision geom of an object, one array per geom (its parts:
        a moka pot's body walls, lid and handle)."""
        return [self._geom_points(g) for g in self._geoms(self.body_of(name))]

    def box(self, name: str) -> Box:
        """The world axis-aligned bounding box of an object's collision geoms."""
        p = self.points(name)
        return Box(p.min(0), p.max(0))

    def geom_box(self, geom_name: str) -> Box:
        p = self._geom_points(self.model.geom(geom_name).id)
        return Box(p.min(0), p.max(0))

    def holds(self, predicate: list[str]) -> bool:
        """Whether one BDDL goal predicate holds now (LIBERO's own check)."""
        return bool(self.problem._eval_predicate(predicate))

    def clearance(self, points: np.ndarray, *, exclude: tuple[str, ...] = ()) -> float:
        """Smallest distance (m) from any of ``points`` (N, 3) to a collision geom of another object.

        Objects and fixtures named in ``exclude`` (and the robot, table and floor) are ignored.
        Geoms are treated as their local bounding boxes, so the answer is slightly cautious.
        """
        centers, rots, halves = self._obstacle_boxes(exclude)
        if len(centers) == 0:
            return np.inf
        rel = np.asarray(points)[:, None, :] - centers[None]  # (N, G, 3)
        local = np.einsum("ngk,gkj->ngj", rel, rots)  # into each geom's frame
        outside = np.maximum(np.abs(local) - halves[None], 0.0)
        return float(np.linalg.norm(outside, axis=-1).min())

    def _obstacle_boxes(self, exclude: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m, d = self.model, self.data
        names = [n for n in (*self.problem.objects_dict, *self.problem.fixtures_dict) if n not in exclude]
        geoms = [g for n in names for g in self._geoms(self.body_of(n))]
        if not geoms:
            return np.zeros((0, 3)), np.zeros((0, 3, 3)), np.zeros((0, 3))
        geoms = np.array(geoms)
        rots = d.geom_xmat[geoms].reshape(-1, 3, 3)
        centers = d.geom_xpos[geoms] + np.einsum("gij,gj->gi", rots, m.geom_aabb[geoms, :3])
        return centers, rots, m.geom_aabb[geoms, 3:].copy()

    def drop_height(self, xy: np.ndarray, *, exclude: str | None = None, start_z: float = 3.0) -> float:
        """Height of the first collision surface straight below ``(x, y)``, ignoring object ``exclude``.

        Casts a ray down through collision geoms (geom group 0) only, so visual meshes and
        region sites do not count, and passes through the robot (an arm above the spot is not
        a surface to set things on). Returns -inf when nothing is below.
        """
        import mujoco

        groups = np.array([1, 0, 0, 0, 0, 0], dtype=np.uint8)
        body = self.body_of(exclude) if exclude else -1
        geom = np.array([-1], dtype=np.int32)
        z = start_z
        while True:
            start = np.array([xy[0], xy[1], z], dtype=np.float64)
            dist = mujoco.mj_ray(
                self.model, self.data, start, np.array([0.0, 0.0, -1.0]), groups, 1, body, geom
            )
            if dist < 0:
                return -np.inf
            if not self._is_robot_geom(int(geom[0])):
                return float(z - dist)
            z -= dist + 1e-4  # go on from just below the robot part the ray hit

    def ray_to(self, name: str, start: np.ndarray, direction: np.ndarray) -> float:
        """Distance along the ray from ``start`` in ``direction`` to the first collision geom of
        object ``name``, passing through everything else; inf if it misses the object."""
        import mujoco

        own = set(self._geoms_of_bodies(self.subtree(self.body_of(name))))
        groups = np.array([1, 0, 0, 0, 0, 0], dtype=np.uint8)
        direction = np.asarray(direction, dtype=np.float64) / np.linalg.norm(direction)
        geom = np.array([-1], dtype=np.int32)
        travelled = 0.0
        while True:
            point = np.asarray(start, dtype=np.float64) + travelled * direction
            dist = mujoco.mj_ray(self.model, self.data, point, direction, groups, 1, -1, geom)
            if dist < 0:
                return np.inf
            travelled += dist
            if int(geom[0]) in own:
                return travelled
            travelled += 1e-4  # go on from just past the other geom's surface

    def _is_robot_geom(self, geom: int) -> bool:
        name = self.model.body(int(self.model.geom_bodyid[geom])).name
        return name.startswith(("robot0_", "gripper0_", "mount0_"))

    def joint_qpos(self, joint_name: str) -> float:
        return float(self.data.qpos[self.model.jnt_qposadr[self._joint_id(joint_name)]])

    def site_size(self, name: str) -> np.ndarray:
        return self.model.site_size[self._site_id(name)].copy()

    # -- internals -------------------------------------------------------------------------

    def _site_id(self, name: str) -> int:
        return self.model.site(name).id

    def _joint_id(self, name: str) -> int:
        return self.model.joint(name).id

    @cached_property
    def _children(self) -> dict[int, list[int]]:
        children: dict[int, list[int]] = {}
        for b in range(1, self.model.nbody):
            children.setdefault(int(self.model.body_parentid[b]), []).append(b)
        return children

    def subtree(self, body: int) -> list[int]:
        """``body`` and all bodies below it."""
        out, stack = [], [body]
        while stack:
            b = stack.pop()
            out.append(b)
            stack.extend(self._children.get(b, []))
        return out

    def _geoms(self, body: int) -> list[int]:
        return self._geoms_of_bodies(self.subtree(body))

    def _geoms_of_bodies(self, bodies: list[int]) -> list[int]:
        m = self.model
        wanted = set(bodies)
        return [
            g
            for g in range(m.ngeom)
            if int(m.geom_bodyid[g]) in wanted and (m.geom_contype[g] != 0 or m.geom_conaffinity[g] != 0)
        ]

    def _geom_points(self, g: int) -> np.ndarray:
        m, d = self.model, self.data
        if m.geom_type[g] == 7 and m.geom_dataid[g] >= 0:  # mesh: its vertices
            mesh = m.geom_dataid[g]
            start, n = m.mesh_vertadr[mesh], m.mesh_vertnum[mesh]
            local = m.mesh_vert[start : start + n]
        else:  # everything else: the corners of its local bounding box
            center, half = m.geom_aabb[g, :3], m.geom_aabb[g, 3:]
            signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
            local = center + signs * half
        rot = d.geom_xmat[g].reshape(3, 3)
        return local @ rot.T + d.geom_xpos[g]
