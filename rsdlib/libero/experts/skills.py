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
from rsdlib.libero.scene import Box, Scene

#: Finger opening of the Panda gripper (m) and how far each finger reaches sideways.
FINGER_SPAN = 0.08
#: Horizontal distance (m) from the robot base beyond which a top-down grasp gets hard to reach.
COMFORTABLE_REACH = 0.70
#: Objects wider than this (in both horizontal directions) are grasped by the rim or an edge.
WIDE = 0.07
#: Objects lower than this (m) whose narrow side is wider than the open gripper cannot be
#: lifted reliably (a plate's rim is a 1.9 cm slope the fingers squeeze out of): they are dragged.
FLAT = 0.03
#: A drawer handle closer than this to the surface below it leaves no room for the pitched hand.
LOW_HANDLE = 0.1
#: A drawer handle higher than this (m) above the surface in front of it is approached with the
#: hand turned first, nearer the robot and higher (see :func:`slide_drawer`).
HIGH_HANDLE = 0.08
#: How far (rad) the hand leans from pointing down when it pushes a low drawer closed.
PUSH_LEAN = float(np.deg2rad(35))


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


def gripper_points(point: np.ndarray, yaw: float, *, span: float = FINGER_SPAN) -> np.ndarray:
    """Sample points (N, 3) on the open fingers and the hand of a gripper at ``point`` turned by ``yaw``."""
    closing = np.array([-np.sin(yaw), np.cos(yaw), 0.0])  # world y turned by yaw
    along = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    up = np.array([0.0, 0.0, 1.0])
    pts = []
    for side in (-1, 1):  # the two fingers, from the tips to the palm
        for t in (-0.01, 0.0, 0.01):
            for dz in (-0.005, 0.02, 0.04):
                pts.append(point + side * (span / 2 + 0.005) * closing + t * along + dz * up)
    for c in (-0.1, -0.05, 0.0, 0.05, 0.1):  # the hand: wide along the closing direction
        for t in (-0.035, 0.035):
            for dz in (0.055, 0.09):
                pts.append(point + c * closing + t * along + dz * up)
    return np.array(pts)


def plan_grasp(scene: Scene, name: str) -> list[Grasp]:
    """Candidate grasps of object ``name``, best first.

    Narrow objects are grasped around their body, fingers closing across the narrow side
    (any direction for round ones), at the point along the long side where fingers and hand
    have the most room. Wide ones (bowls, plates) are grasped by one wall of the rim, at the
    point around the rim with the most room for the outer finger and the hand. Ties go to
    points well within reach and little wrist rotation.
    """
    points = scene.points(name)
    box = Box(points.min(0), points.max(0))
    major, minor, major_len, minor_len = principal_axes(points)
    center = box.center
    candidates: list[tuple[np.ndarray, float, str]] = []
    if minor_len < WIDE:
        # As deep as the hand allows (its underside is about 3 cm above the grip site), so that
        # tall objects do not swing.
        z = max(box.bottom + 0.012, box.top - 0.027)
        if major_len > 1.15 * minor_len:  # elongated: close across the narrow side only
            yaws = [wrap_half_turn(np.arctan2(minor[1], minor[0]) - np.pi / 2)]
            slack = max(0.0, min(0.025, major_len / 2 - 0.02))
            shifts = np.linspace(-slack, slack, 5) if slack > 0 else [0.0]
        else:  # round or square: any direction
            yaws = list(np.deg2rad(np.arange(-90, 90, 15)))
            shifts = [0.0]
        for shift in shifts:
            for yaw in yaws:
                point = np.array([center[0], center[1], z]) + shift * np.array([*major, 0.0])
                candidates.append((point, yaw, "center"))
    else:  # rim grasp: one wall between the fingers, the gripper closing along the radius
        radius = (major_len + minor_len) / 4
        z = box.top - 0.018
        for theta in np.deg2rad(np.arange(0, 360, 15)):
            radial = np.array([np.cos(theta), np.sin(theta), 0.0])
            point = np.array([center[0], center[1], z]) + (radius - 0.008) * radial
            candidates.append((point, wrap_half_turn(theta - np.pi / 2), "rim"))
        # A solid body (a moka pot) has no wall to take: where the inner finger would sink into
        # it, take the part that sticks out instead, if one is narrow enough to grasp.
        if box.size[2] > FLAT:
            open_rim = [c for c in candidates if not _inside(scene, name, _inner_finger(c[0], center))]
            candidates = open_rim or _handle_candidates(scene, name) or candidates
    scored = []
    for point, yaw, kind in candidates:
        room = scene.clearance(gripper_points(point, yaw), exclude=(name,))
        reach = np.linalg.norm(point[:2] - scene.robot_base[:2])
        off_center = np.linalg.norm(point[:2] - center[:2]) if kind == "center" else 0.0
        score = (
            min(room, 0.03) - 0.5 * max(0.0, reach - COMFORTABLE_REACH) - 0.01 * abs(yaw) - 0.2 * off_center
        )
        scored.append((score, Grasp(point, yaw, kind)))
    scored.sort(key=lambda c: -c[0])
    return [g for _, g in scored]


def _inner_finger(point: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Points (3, 3) on the inner finger of a rim grasp at ``point`` (the finger nearer the
    object's ``center``), from its tip up."""
    radial = np.array([*(point[:2] - center[:2]), 0.0])
    radial /= max(np.linalg.norm(radial), 1e-9)
    tip = point - (FINGER_SPAN / 2 + 0.005) * radial
    return tip + np.outer([-0.008, 0.0, 0.015], [0.0, 0.0, 1.0])


def _inside(scene: Scene, name: str, points: np.ndarray) -> bool:
    """Whether any of ``points`` (N, 3) lies within (or on) a collision geom of object ``name``."""
    others = tuple(n for n in (*scene.problem.objects_dict, *scene.problem.fixtures_dict) if n != name)
    return scene.clearance(points, exclude=others) <= 0.0


def _handle_candidates(scene: Scene, name: str) -> list[tuple[np.ndarray, float, str]]:
    """Grasps around the part of a wide solid object that sticks out furthest from its body's
    axis (a handle): those collision geoms, fingers closing across their narrow side."""
    center = scene.pos(name)  # the root body sits on the body's axis, not at the handle-skewed box centre
    pts = scene.part_points(name)
    reach = np.array([np.linalg.norm(p[:, :2].mean(0) - center[:2]) for p in pts])
    part = np.concatenate([p for p, r in zip(pts, reach, strict=True) if r > 0.8 * reach.max()])
    major, minor, _, minor_len = principal_axes(part)
    if minor_len > FINGER_SPAN - 0.02:
        return []
    yaw = wrap_half_turn(np.arctan2(minor[1], minor[0]) - np.pi / 2)  # close across the narrow side
    mid = part.mean(0)
    point = np.array([mid[0], mid[1], part[:, 2].max() - 0.02])
    return [(point + shift * np.array([*major, 0.0]), yaw, "center") for shift in (0.0, -0.006, 0.006)]


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
    # Cross above anything the straight way down would land the open fingers on (a milk carton
    # beside the cream cheese).
    eef = scene.eef_pos
    cross_z = crossing_height(scene, eef, above, exclude=(name,))
    if cross_z is not None:
        if cross_z > eef[2]:
            yield from motion.move(np.array([*eef[:2], cross_z]), tolerance=0.02)
        yield from motion.move(
            np.array([*above[:2], cross_z]), yaw=grasp.yaw, tilt=np.eye(3), tolerance=0.015
        )
    # aligned (and pointing down, after a drawer) before going down
    yield from motion.move(above, yaw=grasp.yaw, tilt=np.eye(3), tolerance=0.006)
    yield from motion.move(point, speed=0.6, tolerance=0.006, max_steps=60)
    yield from motion.grip(CLOSE, steps=12)
    # Lift well clear of the support (and of drawer walls around it); place() climbs higher only
    # if the way to the target needs it, and descends on the way if it does not.
    lift_to = max(point[2] + 0.12, travel_z or 0.0)
    yield from motion.move(np.array([*scene.eef_pos[:2], lift_to]), speed=0.8, tolerance=0.02)
    return scene.box(name).bottom > start_bottom + 0.04


def surface_height(scene: Scene, xy: np.ndarray, *, held: str, radius: float = 0.02) -> float:
    """Highest collision surface under a small disk around ``xy`` (the held object ignored)."""
    offsets = [(0, 0), (radius, 0), (-radius, 0), (0, radius), (0, -radius)]
    heights = [scene.drop_height(np.asarray(xy) + off, exclude=held) for off in offsets]
    return max(heights)


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


def crossing_height(
    scene: Scene, start: np.ndarray, end: np.ndarray, *, exclude: tuple[str, ...], radius: float = 0.05
) -> float | None:
    """How high to cross from ``start`` to ``end`` (3,) when the straight line passes within
    ``radius`` (horizontally) of an object less than 2 cm below it: 6 cm over the highest such
    object; None when the straight line is clear of them.

    Only objects count (a milk carton beside the cream cheese): fixtures are large boxes that
    grasps are already planned around, and crossing above them costs steps that tasks such as
    "open the drawer and put the bowl in it" do not have. The line's first fifth is where the
    hand already is.
    """
    names = [n for n in scene.problem.objects_dict if n not in exclude]
    if not names:
        return None
    points = np.concatenate([scene.points(n) for n in names])
    blocking = -np.inf
    for t in np.linspace(0.2, 1.0, 10):
        at = start + t * (end - start)
        near = points[np.linalg.norm(points[:, :2] - at[:2], axis=1) < radius]
        if len(near) and near[:, 2].max() + 0.02 > at[2]:
            blocking = max(blocking, float(near[:, 2].max()))
    return None if np.isinf(blocking) else max(blocking + 0.06, end[2])


def free_spot(scene: Scene, held: str, target: str, *, leave_room: bool = False) -> np.ndarray:
    """Where in ``target`` to set ``held`` down (xy): the target's centre; to one side of a region
    when ``leave_room`` for another object (the first of two moka pots on one stove); or, when
    another object already stands in the region, the point of its inner part farthest from it."""
    center = scene.pos(target)[:2]
    if not scene.is_site(target) or scene.is_object(target):
        return center
    half = scene.site_size(target)[:2]
    rot = scene.mat(target)[:2, :2]
    inside = []  # xy points of the other objects standing in the region
    for other in (n for n in scene.problem.objects_dict if n != held):
        xy = scene.points(other)[:, :2]
        if (np.abs((xy - center) @ rot) <= half).all(axis=1).any():
            inside.append(xy)
    if not inside:
        return center + rot @ np.array([0.0, 0.7 * half[1]]) if leave_room else center
    occupied = np.concatenate(inside)
    grid = np.linspace(-0.7, 0.7, 8)
    spots = np.array([center + rot @ (np.array([u, v]) * half) for u in grid for v in grid])
    room = np.min(np.linalg.norm(spots[:, None] - occupied[None], axis=-1), axis=1)
    return spots[int(np.argmax(room - 0.1 * np.linalg.norm(spots - center, axis=1)))]


def under_roof(scene: Scene, region: str) -> bool:
    """Whether the object holding region ``region`` covers all of it just above its top (a
    microwave's roof over its inside), so that nothing can be lowered into it from above. A
    basket's handle arching over its middle does not count: it covers the middle only; nor does
    a container lying on its side (a basket knocked over covers its region with its own wall)."""
    if not scene.is_site(region) or scene.is_object(region):  # "in the bowl": an object, no roof
        return False
    center, half = scene.pos(region), scene.site_size(region)
    rot = scene.mat(region)
    up = np.array([0.0, 0.0, 1.0])
    owner = scene.site_parent(region)
    if scene.mat(owner)[2, 2] < 0.9:  # not upright
        return False
    starts = [
        center + rot @ np.array([u * half[0], v * half[1], 0.0])
        for u, v in ((0, 0), (-0.5, -0.5), (-0.5, 0.5), (0.5, -0.5), (0.5, 0.5))
    ]
    return all(scene.ray_to(owner, start, up) < half[2] + 0.05 for start in starts)


def drawer_spot(scene: Scene, region: str, held: str) -> np.ndarray:
    """Where to lower object ``held`` into the open drawer holding ``region`` (xy): the middle
    of the part of the drawer not covered by the cabinet above it, but not so far out that the
    object lands on the drawer's front wall.

    The region's centre moves with the drawer but, for a lower drawer open by less than its
    depth, lies under the drawers above it: an object lowered there lands on their fronts.
    """
    joint, sign = _drawer_joint(scene, region)
    body = int(scene.model.jnt_bodyid[joint])
    out = _drawer_out(scene, joint, sign)
    cabinet = scene.site_parent(region)
    drawer = scene.points(cabinet, bodies=[body])
    others = [b for b in scene.subtree(scene.body_of(cabinet)) if b != body]
    above = scene.points(cabinet, bodies=others)
    above = above[above[:, 2] > drawer[:, 2].max() - 0.005]
    center = scene.pos(region)[:2]
    if not len(above):
        return center
    cover_front = float((above[:, :2] @ out).max())  # where the cabinet above ends
    along = float(center @ out)
    rot = scene.mat(region)[:2, :2]
    inner_front = along + float(
        np.abs(rot.T @ out) @ scene.site_size(region)[:2]
    )  # the region fills the drawer
    half = float(np.ptp(scene.points(held)[:, :2] @ out)) / 2
    middle = min((cover_front + inner_front) / 2, inner_front - half - 0.005)
    return center + max(0.0, middle - along) * out


def place(
    motion: Motion, name: str, target: str, *, inside: bool = False, leave_room: bool = False
) -> Iterator[np.ndarray]:
    """Carry the held object ``name`` over ``target`` and set it down (or drop it in), to one side
    of a region when ``leave_room`` for another object (:func:`free_spot`)."""
    scene = motion.scene
    held = scene.box(name)
    eef = scene.eef_pos
    hang = eef[2] - held.bottom  # how far the object reaches below the grip site
    offset = eef[:2] - scene.pos(name)[:2]  # keep the object's body centred on the target
    # into a container: its centre (things may stack there); onto a region: a free spot in it
    if inside and is_drawer_region(scene, target):
        spot = drawer_spot(scene, target, name)
    elif inside:
        spot = scene.pos(target)[:2]
    else:
        spot = free_spot(scene, name, target, leave_room=leave_room)
    goal_xy = motion.jitter(spot, scale=0.15) + offset
    surface = surface_height(scene, goal_xy - offset, held=name)
    release_z = surface + hang + (0.02 if inside else 0.012)
    corridor = corridor_height(scene, eef, np.array([*goal_xy, 0]), exclude=(name,))
    travel_z = max(release_z + 0.04, corridor + hang + 0.03)
    if travel_z > eef[2] + 0.005:  # climb first, then cross
        yield from motion.move(np.array([*eef[:2], travel_z]), tolerance=0.02)
    # Cross (descending on the way if we are higher than needed), then set down: fast until
    # 3 cm above the release height, gently after.
    yield from motion.move(np.array([*goal_xy, travel_z]), tolerance=0.012)
    yield from motion.move(np.array([*goal_xy, release_z + 0.03]), tolerance=0.01, until_stuck=True)
    yield from motion.move(np.array([*goal_xy, release_z]), speed=0.6, tolerance=0.008, until_stuck=True)
    yield from motion.grip(OPEN, steps=6)
    retreat = scene.eef_pos + [0, 0, 0.08]
    yield from motion.move(retreat, tolerance=0.02, max_steps=15)


def should_drag(scene: Scene, name: str, target: str) -> bool:
    """Whether ``name`` goes to ``target`` along the table: it is flat and too wide to grasp
    around, and the target is a region of the surface it stands on (no lift needed)."""
    if not scene.is_site(target) or scene.is_object(target):
        return False
    box = scene.box(name)
    _, _, _, minor_len = principal_axes(scene.points(name))
    on_same_surface = abs(scene.pos(target)[2] - box.bottom) < 0.02
    return box.size[2] < FLAT and minor_len > FINGER_SPAN and on_same_surface


def drag(motion: Motion, name: str, target: str, *, attempt: int = 0) -> Iterator[np.ndarray]:
    """Pinch the rim of the flat object ``name`` and slide it along the table onto ``target``.

    A pinch too weak to lift a plate still drags it, and dragging needs no reach beyond the
    object's near side (pushing from its far side often lies past the arm's reach). The
    fingers stop 1.2 cm above the object's bottom, over its floor rather than into it.
    """
    scene = motion.scene
    grasps = plan_grasp(scene, name)
    grasp = grasps[attempt % len(grasps)]
    point = motion.jitter(grasp.point, scale=0.3)
    point[2] = max(point[2], scene.box(name).bottom + 0.012)
    yield from motion.grip(OPEN, steps=0)
    yield from motion.move(point + [0, 0, 0.06], yaw=grasp.yaw, tilt=np.eye(3), tolerance=0.006)
    yield from motion.move(point, speed=0.6, tolerance=0.006, max_steps=30)
    yield from motion.grip(CLOSE, steps=12)
    shift = motion.jitter(scene.pos(target), scale=0.15)[:2] - scene.pos(name)[:2]
    end = scene.eef_pos + [*shift, 0.004]  # a little up: less of its weight on the table
    yield from motion.move(end, speed=0.5, tolerance=0.008, max_steps=80)
    yield from motion.grip(OPEN, steps=6)
    yield from motion.move(scene.eef_pos + [0, 0, 0.08], tolerance=0.02, max_steps=15)


def turn_knob(motion: Motion, name: str, *, on: bool = True) -> Iterator[np.ndarray]:
    """Grip the ridge of a stove knob (fixture ``name``) and twist it on (or off).

    The knob is the fixture body that carries its only hinge joint; the ridge runs along the
    knob's diameter, so the fingers close across it and the wrist turns about world z.
    """
    scene = motion.scene
    m, d = scene.model, scene.data
    joints = [
        j
        for j in range(m.njnt)
        if m.jnt_type[j] == 3 and int(m.jnt_bodyid[j]) in scene.subtree(scene.body_of(name))
    ]
    if not joints:
        raise ValueError(f"{name!r} has no hinge joint to turn")
    joint = joints[0]
    body = int(m.jnt_bodyid[joint])
    axis = d.xmat[body].reshape(3, 3) @ m.jnt_axis[joint]
    points = scene.points(name, bodies=[body])
    top = float(points[:, 2].max())
    center = d.xanchor[joint].copy()
    major, _, _, _ = principal_axes(points[points[:, 2] > top - 0.02])  # the ridge, on top
    grip_yaw = wrap_half_turn(np.arctan2(major[1], major[0]))  # fingers close across the ridge
    turn = (1.0 if on else -1.0) * np.sign(axis[2]) * 0.9  # radians, about world z
    point = motion.jitter(np.array([center[0], center[1], top - 0.02]), scale=0.2)
    yield from motion.grip(OPEN, steps=0)
    yield from motion.move(point + [0, 0, 0.06], yaw=grip_yaw, tilt=np.eye(3), tolerance=0.006)
    yield from motion.move(point, speed=0.6, tolerance=0.006, max_steps=40)
    yield from motion.grip(CLOSE, steps=10)
    yield from motion.move(point, yaw=grip_yaw + turn, tolerance=0.01, max_steps=30)
    yield from motion.grip(OPEN, steps=6)
    yield from motion.move(scene.eef_pos + [0, 0, 0.08], tolerance=0.02, max_steps=15)


def _drawer_joint(scene: Scene, region: str) -> tuple[int, float]:
    """The slide joint that moves the drawer holding ``region``, and the sign of its opening motion."""
    site = scene.problem.object_sites_dict[region]
    names = list(getattr(site, "joints", []) or [])
    if not names:
        raise ValueError(f"region {region!r} has no joint: it is not a drawer or door")
    joint = scene.model.joint(names[0]).id
    parent = scene.problem.get_object(scene.site_parent(region))
    opens = parent.object_properties["articulation"]["default_open_ranges"]
    return joint, (-1.0 if max(opens) <= 0 else 1.0)


def is_drawer_region(scene: Scene, region: str) -> bool:
    """Whether ``region`` is a region that slides with a joint (a drawer's)."""
    sites = scene.problem.object_sites_dict
    return region in sites and bool(getattr(sites[region], "joints", None))


def _pitched(approach: np.ndarray, closing: np.ndarray) -> np.ndarray:
    """The tilt that turns the reference gripper (approaching along -z, closing along y) to
    approach along ``approach`` with the fingers closing along ``closing`` (3,) each."""
    return np.stack([np.cross(closing, -approach), closing, -approach], axis=1)


def _drawer_out(scene: Scene, joint: int, sign: float) -> np.ndarray:
    """The horizontal unit direction (2,) in which the drawer on slide ``joint`` opens."""
    m, d = scene.model, scene.data
    axis = d.xmat[int(m.jnt_bodyid[joint])].reshape(3, 3) @ m.jnt_axis[joint]
    out = sign * axis[:2]
    return out / np.linalg.norm(out)


def is_open(scene: Scene, region: str) -> bool:
    """Whether the drawer holding ``region`` is open (LIBERO's own check)."""
    return scene.holds(["open", region])


def slide_drawer(motion: Motion, region: str, *, open_it: bool = True) -> Iterator[np.ndarray]:
    """Open (pull) or close (push) the drawer that holds ``region`` by its handle.

    The gripper is pitched to face the drawer front with the fingers closing vertically, grips
    the handle bar, and moves along the slide joint's axis. It ends backed off and still
    pitched: :func:`pick` and :func:`turn_knob` turn the wrist down on their way to the next
    object.
    """
    scene = motion.scene
    m = scene.model
    joint, sign = _drawer_joint(scene, region)
    body = int(m.jnt_bodyid[joint])
    out = np.array([*_drawer_out(scene, joint, sign), 0.0])  # where the front goes when it opens
    lo, hi = m.jnt_range[joint]
    travel = (hi - lo) * 0.95
    points = scene.points(scene.site_parent(region), bodies=[body])
    reach = points @ out
    handle = points[reach > reach.max() - 0.012].mean(0)  # the bar that sticks out furthest
    floor = scene.drop_height((handle + 0.1 * out)[:2])
    if not open_it and handle[2] - floor < LOW_HANDLE:
        yield from _push_closed_from_above(motion, handle, out[:2], travel=(hi - lo))
        return
    # Gripper frame: approach along -out (into the drawer), fingers closing vertically. The
    # reference pose approaches along -z and closes along y; the tilt maps -z to the approach
    # and y to +z. (Of the two symmetric choices this one keeps the wrist within its joint
    # range for cabinets on the robot's right; the other stalls a few cm short of the handle.)
    approach, closing = -out, np.array([0.0, 0.0, 1.0])
    tilt = _pitched(approach, closing)
    grip_point = handle - 0.004 * out
    if open_it:
        start = grip_point
        end = grip_point + travel * out
    else:  # push the front from wherever it is now back to closed
        start = grip_point
        end = grip_point - travel * out
    yield from motion.grip(OPEN if open_it else CLOSE, steps=0)
    clear = start + 0.16 * out  # in front of the handle, where the hand has turned to face it
    if handle[2] - floor > HIGH_HANDLE:
        # Turning the hand on the way out to a high handle stretched the arm to its elbow limit
        # (joint 4 at -0.07 rad, joint 2 at +1.76), where it stalled with the hand short of the
        # pitch and closed on air 4 cm before the handle: 37% of sampled libero_goal starts for
        # the middle drawer, 74% for the top one. Turned 15 cm nearer the robot (it stands on -x)
        # and 10 cm higher first, the elbow stays bent (joint 4 below -0.9 rad).
        yield from motion.move(clear + [-0.15, 0.0, 0.10], yaw=0.0, tilt=tilt, tolerance=0.02, max_steps=60)
    # Turn the wrist well clear of the cabinet, then come in straight along the slide axis.
    yield from motion.move(clear + [0, 0, 0.03], yaw=0.0, tilt=tilt, tolerance=0.015, max_steps=80)
    yield from motion.move(start + 0.09 * out, tolerance=0.006, max_steps=30)
    yield from motion.move(start, speed=0.5, tolerance=0.006, max_steps=40)
    if open_it:
        yield from motion.grip(CLOSE, steps=10)
    yield from motion.move(end, speed=0.5, tolerance=0.01, max_steps=60)
    yield from motion.grip(OPEN, steps=6)
    retreat = scene.eef_pos + 0.08 * out + [0, 0, 0.03]
    yield from motion.move(retreat, tolerance=0.02, max_steps=20)
    # The wrist stays pitched: the next skill turns it back to pointing down on its way (turning
    # in place first cost ~55 steps, a fifth of libero_goal's budget).


def _push_closed_from_above(
    motion: Motion, handle: np.ndarray, out: np.ndarray, *, travel: float
) -> Iterator[np.ndarray]:
    """Close a low drawer by pushing its handle with the closed fingers, the hand pointing down
    and leaning into the push.

    The pitched grip of :func:`slide_drawer` needs room for the hand (20 cm across its closing
    direction, which is vertical there) below the handle; a bottom drawer's handle is 5 cm
    above the table. Leaning keeps the forearm off the cabinet's top edge as the drawer goes in
    (pointing straight down, it rests there with the drawer 5 cm short of closed).
    """
    out3 = np.array([*out, 0.0])
    closing = np.array([-out[1], out[0], 0.0])  # fingers side by side along the handle
    approach = np.cos(PUSH_LEAN) * np.array([0.0, 0.0, -1.0]) - np.sin(PUSH_LEAN) * out3
    tilt = _pitched(approach, closing)
    start = handle + 0.05 * out3
    yield from motion.grip(CLOSE, steps=0)
    yield from motion.move(start + [0, 0, 0.08], yaw=0.0, tilt=tilt, tolerance=0.01, max_steps=80)
    yield from motion.move(start + [0, 0, 0.01], speed=0.6, tolerance=0.008, max_steps=40)
    yield from motion.move(handle - travel * out3 + [0, 0, 0.01], speed=0.5, tolerance=0.01, max_steps=60)
    yield from motion.move(motion.scene.eef_pos + 0.05 * out3 + [0, 0, 0.08], tolerance=0.02, max_steps=20)


def _hinge(scene: Scene, name: str) -> int | None:
    """The hinge joint of articulated object ``name`` (a microwave's door), or None."""
    import mujoco

    m = scene.model
    bodies = set(scene.subtree(scene.body_of(name)))
    hinges = [
        j for j in range(m.njnt) if m.jnt_bodyid[j] in bodies and m.jnt_type[j] == mujoco.mjtJoint.mjJNT_HINGE
    ]
    return hinges[0] if hinges else None


def has_hinged_door(scene: Scene, name: str) -> bool:
    """Whether object ``name`` has a door on a hinge (that :func:`swing_door_closed` can close)."""
    return scene.is_object(name) and _hinge(scene, name) is not None


def swing_door_closed(motion: Motion, name: str) -> Iterator[np.ndarray]:
    """Close the hinged door of ``name`` (a microwave) by pushing its face near the free edge
    along the arc it swings through, closed fingers pointing down, the way one shuts it by hand.
    """
    scene = motion.scene
    m, d = scene.model, scene.data
    joint = _hinge(scene, name)
    props = scene.problem.get_object(name).object_properties["articulation"]
    closes_upwards = np.mean(props["default_close_ranges"]) > np.mean(props["default_open_ranges"])
    sign = 1.0 if closes_upwards else -1.0
    q_now = float(d.qpos[m.jnt_qposadr[joint]])
    q_shut = float(
        max(props["default_close_ranges"]) if closes_upwards else min(props["default_close_ranges"])
    )
    anchor, axis = d.xanchor[joint].copy(), d.xaxis[joint].copy()
    door = scene.points(name, bodies=scene.subtree(int(m.jnt_bodyid[joint])))
    arm = door[:, :2] - anchor[:2]
    reach = np.linalg.norm(arm, axis=1)
    edge = arm[np.argmax(reach)] / reach.max()  # (2,) from the hinge to the free edge
    swing = sign * np.cross(axis, [*edge, 0.0])[:2]  # (2,) where the free edge goes as it closes
    behind = -float((arm @ swing).min())  # from the hinge plane to the face we push (handle too)
    radius, z = 0.8 * reach.max(), anchor[2] - 0.02

    def contact(q: float, gap: float) -> tuple[np.ndarray, float, np.ndarray]:
        """Where the fingers touch the door at angle ``q`` (``gap`` off its face), their yaw, and
        the way the door's free edge moves there."""
        turn = sign * (q - q_now) * axis[2]  # about a vertical axis
        rot = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
        u, s = rot @ edge, rot @ swing
        point = anchor[:2] + radius * u - (behind + gap) * s
        return np.array([*point, z]), wrap_half_turn(float(np.arctan2(u[1], u[0])) - np.pi / 2), s

    start, yaw, _ = contact(q_now, 0.06)
    yield from motion.grip(CLOSE, steps=0)
    yield from motion.move(start + [0, 0, 0.1], yaw=yaw, tilt=np.eye(3), tolerance=0.015, max_steps=80)
    yield from motion.move(start, speed=0.6, tolerance=0.01, max_steps=40)
    # On to 0.25 rad past shut (the stop holds the door): within the moves' tolerance of 1.5 cm
    # the door would stay a few degrees open.
    for q in np.linspace(q_now, q_shut + sign * 0.25, 8)[1:]:
        point, yaw, s = contact(q, 0.01)
        yield from motion.move(point, yaw=yaw, speed=0.6, tolerance=0.015, max_steps=25)
    yield from motion.move(scene.eef_pos + [*(-0.05 * s), 0.06], tolerance=0.02, max_steps=20)
