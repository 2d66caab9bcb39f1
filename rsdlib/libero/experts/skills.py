"""Manipulation skills built from :class:`~rsdlib.libero.experts.motion.Motion` primitives.

Each skill is a generator of actions that plans from the live scene when it starts (and
again at each phase, since objects move), so that a skill can be chained after another.
Skills return (via ``StopIteration.value``) whether their own post-condition holds, which
lets the planner retry a failed grasp the way a teleoperator would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from rsdlib.libero.experts.motion import CLOSE, OPEN, Motion
from rsdlib.libero.experts.scene import Box, Scene

#: Finger opening of the Panda gripper (m) and how far each finger reaches sideways.
FINGER_SPAN = 0.08
#: Horizontal distance (m) from the robot base beyond which a top-down grasp gets hard to reach.
COMFORTABLE_REACH = 0.74
#: Objects wider than this (in both horizontal directions) are grasped by the rim or an edge.
WIDE = 0.07


@dataclass(frozen=True)
class Grasp:
    """Where and how to grasp an object.

    Attributes:
        point: (3,) world position of the grip site at the grasp.
        yaw: gripper rotation about world z (0: fingers close along world y).
        kind: ``"center"`` (around the body) or ``"rim"`` (one wall between the fingers).
    """

    point: np.ndarray
    yaw: float
    kind: str


def wrap_half_turn(angle: float) -> float:
    """An angle folded into [-pi/2, pi/2] (a parallel gripper is symmetric under a half turn)."""
    return float((angle + np.pi / 2) % np.pi - np.pi / 2)


def principal_axes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Horizontal principal axes of a point set: (major, minor, major extent, minor extent)."""
    xy = points[:, :2] - points[:, :2].mean(0)
    _, vecs = np.linalg.eigh(np.cov(xy.T))
    major, minor = vecs[:, 1], vecs[:, 0]
    return major, minor, float(np.ptp(xy @ major)), float(np.ptp(xy @ minor))


def finger_points(point: np.ndarray, yaw: float, *, span: float = FINGER_SPAN) -> np.ndarray:
    """Sample points (N, 3) on both fingers of a gripper at ``point`` turned by ``yaw``."""
    closing = np.array([-np.sin(yaw), np.cos(yaw), 0.0])  # world y turned by yaw
    along = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    pts = []
    for side in (-1, 1):
        for t in (-0.01, 0.0, 0.01):
            for dz in (-0.005, 0.02, 0.045):
                pts.append(point + side * (span / 2 + 0.005) * closing + t * along + [0, 0, dz])
    return np.array(pts)


def plan_grasp(scene: Scene, name: str) -> list[Grasp]:
    """Candidate grasps of object ``name``, best first.

    Narrow objects are grasped around their body, fingers closing across the narrow side.
    Wide ones (bowls, plates) are grasped by one wall of the rim, at the point around the rim
    with the most room for the outer finger and the least wrist rotation.
    """
    points = scene.points(name)
    box = Box(points.min(0), points.max(0))
    major, minor, major_len, minor_len = principal_axes(points)
    center = box.center
    if minor_len < WIDE:
        yaw = 0.0
        if major_len > 1.15 * minor_len:  # close across the narrow side
            yaw = wrap_half_turn(np.arctan2(minor[1], minor[0]) - np.pi / 2)
        z = max(box.bottom + 0.012, box.top - 0.03)
        point = np.array([center[0], center[1], z])
        return [Grasp(point, yaw, "center")]
    # Rim grasp: one wall between the fingers, the gripper closing along the radius.
    radius = (major_len + minor_len) / 4
    z = box.top - 0.018
    candidates = []
    for theta in np.deg2rad(np.arange(0, 360, 15)):
        radial = np.array([np.cos(theta), np.sin(theta), 0.0])
        point = np.array([center[0], center[1], z]) + (radius - 0.008) * radial
        yaw = wrap_half_turn(theta - np.pi / 2)
        room = scene.clearance(finger_points(point, yaw), exclude=(name,))
        reach = np.linalg.norm(point[:2] - scene.robot_base[:2])
        # Prefer room for the fingers first, then a point well within reach, then little wrist rotation.
        score = min(room, 0.03) - 0.5 * max(0.0, reach - COMFORTABLE_REACH) - 0.01 * abs(yaw)
        candidates.append((score, Grasp(point, yaw, "rim")))
    candidates.sort(key=lambda c: -c[0])
    return [g for _, g in candidates]


def pick(
    motion: Motion, name: str, *, attempt: int = 0, travel_z: float | None = None
) -> Iterator[np.ndarray]:
    """Grasp object ``name`` and lift it; returns whether it came up with the gripper."""
    scene = motion.scene
    grasps = plan_grasp(scene, name)
    grasp = grasps[min(attempt, len(grasps) - 1)] if attempt < 2 else grasps[attempt % len(grasps)]
    point = motion.jitter(grasp.point, scale=0.3)
    start_bottom = scene.box(name).bottom
    above = point + [0, 0, 0.08]
    yield from motion.grip(OPEN, steps=0)
    yield from motion.move(above, yaw=grasp.yaw, tolerance=0.015)
    yield from motion.move(point, speed=0.6, tolerance=0.006, max_steps=60)
    yield from motion.grip(CLOSE, steps=12)
    lift_to = max(point[2] + 0.12, travel_z or 0.0)
    yield from motion.move(np.array([*scene.eef_pos[:2], lift_to]), speed=0.8, tolerance=0.02)
    return scene.box(name).bottom > start_bottom + 0.04


def surface_height(scene: Scene, target: str, xy: np.ndarray, radius: float = 0.03) -> float:
    """Height of the top of ``target`` (an object, fixture or region site) around ``xy``."""
    if scene.is_site(target) and not scene.is_object(target):
        parent = scene.site_parent(target)
        points = scene.points(parent) if parent else np.zeros((0, 3))
    else:
        points = scene.points(target)
    near = points[np.linalg.norm(points[:, :2] - xy, axis=1) < radius]
    if len(near) == 0:  # the footprint misses the vertices (a large flat geom): use its box top
        return float(points[:, 2].max()) if len(points) else float(scene.pos(target)[2])
    return float(near[:, 2].max())


def corridor_height(scene: Scene, start: np.ndarray, end: np.ndarray, *, exclude: tuple[str, ...]) -> float:
    """Highest obstacle point within 8 cm of the straight xy path from ``start`` to ``end``."""
    top = -np.inf
    names = [n for n in (*scene.problem.objects_dict, *scene.problem.fixtures_dict) if n not in exclude]
    a, b = start[:2], end[:2]
    ab = b - a
    for n in names:
        p = scene.points(n)
        t = np.clip(((p[:, :2] - a) @ ab) / max(ab @ ab, 1e-9), 0, 1)
        dist = np.linalg.norm(p[:, :2] - (a + t[:, None] * ab), axis=1)
        near = p[dist < 0.08]
        if len(near):
            top = max(top, float(near[:, 2].max()))
    return top


def place(motion: Motion, name: str, target: str, *, inside: bool = False) -> Iterator[np.ndarray]:
    """Carry the held object ``name`` over ``target`` and set it down (or drop it in)."""
    scene = motion.scene
    held = scene.box(name)
    eef = scene.eef_pos
    hang = eef[2] - held.bottom  # how far the object reaches below the grip site
    offset = eef[:2] - scene.pos(name)[:2]  # keep the object's body centred on the target
    goal_xy = motion.jitter(scene.pos(target)[:2], scale=0.15) + offset
    surface = surface_height(scene, target, goal_xy - offset)
    release_z = surface + hang + (0.03 if inside else 0.012)
    corridor = corridor_height(scene, eef, np.array([*goal_xy, 0]), exclude=(name,))
    travel_z = max(eef[2], release_z + 0.04, corridor + hang + 0.03)
    if travel_z > eef[2] + 0.005:
        yield from motion.move(np.array([*eef[:2], travel_z]), tolerance=0.02)
    yield from motion.move(np.array([*goal_xy, travel_z]), tolerance=0.012)
    yield from motion.move(np.array([*goal_xy, release_z]), speed=0.6, tolerance=0.008)
    yield from motion.grip(OPEN, steps=6)
    retreat = scene.eef_pos + [0, 0, 0.08]
    yield from motion.move(retreat, tolerance=0.02, max_steps=15)
