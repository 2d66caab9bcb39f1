"""From waypoints to OSC_POSE delta actions, the way a steady teleoperator moves.

The default LIBERO controller (robosuite OSC_POSE, delta mode) reads an action
``[dx, dy, dz, dax, day, daz, gripper]`` in [-1, 1]; one unit is 0.05 m of position and
0.5 rad of rotation, and the gripper is -1 open, +1 closed. :class:`Motion` turns a target
pose into such actions with a proportional law whose speed is capped (straight lines, at most
``max_speed`` per step) and whose change per step is capped (no jerks), plus optional small
Gaussian noise drawn from an explicit generator so that demonstrations vary.

Every primitive is a generator of actions: the expert pulls one action per env step, and the
primitive reads the live sim state (through :class:`~rsdlib.libero.scene.Scene`) before
computing each one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from rsdlib.libero.scene import Scene

OPEN, CLOSE = -1.0, 1.0
#: Metres of end-effector motion one action unit asks for (robosuite OSC_POSE ``output_max``).
POS_SCALE = 0.05
#: Radians of rotation one action unit asks for.
ROT_SCALE = 0.5


@dataclass(frozen=True)
class MotionConfig:
    """How the expert moves.

    Attributes:
        max_speed: largest position action norm (1.0 moves about 2 cm per step).
        max_accel: largest change of any position action entry from one step to the next.
        gain: proportional gain on the position error (actions per 5 cm).
        rot_gain: proportional gain on the orientation error.
        tolerance: distance (m) at which a waypoint counts as reached.
        max_turn: largest rotation action norm (0.6 turns about 0.3 rad per step at most).
        noise_std: standard deviation of Gaussian noise added to position actions (action units).
        waypoint_noise: standard deviation (m) of the jitter added to approach and place waypoints.
    """

    max_speed: float = 1.0
    max_accel: float = 0.35
    gain: float = 1.6
    rot_gain: float = 1.5
    tolerance: float = 0.008
    max_turn: float = 0.6
    noise_std: float = 0.0
    waypoint_noise: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.max_speed <= 1:
            raise ValueError(f"max_speed ({self.max_speed}) must be in (0, 1]")
        if self.noise_std < 0 or self.waypoint_noise < 0:
            raise ValueError(
                f"noise_std ({self.noise_std}) and waypoint_noise ({self.waypoint_noise}) must be >= 0"
            )


def yaw_matrix(yaw: float) -> np.ndarray:
    """Rotation (3, 3) about world z by ``yaw`` radians."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_vector(rot: np.ndarray) -> np.ndarray:
    """Axis-angle vector (3,) of a rotation matrix (angle in [0, pi])."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(rot).as_rotvec()


class Motion:
    """Turns target poses into bounded, smooth actions.

    Args:
        scene: the live scene.
        config: speed, smoothness and noise settings.
        rng: generator for action and waypoint noise.
    """

    def __init__(self, scene: Scene, config: MotionConfig, rng: np.random.Generator) -> None:
        self.scene = scene
        self.config = config
        self.rng = rng
        self.reference = scene.eef_mat  # gripper pointing down, fingers closing along world y
        self.yaw = 0.0
        self.tilt = np.eye(3)  # extra rotation applied before the yaw (a pitched grasp)
        self.gripper = OPEN
        self._last = np.zeros(3)

    # -- single actions ----------------------------------------------------------------------

    def action_towards(self, target: np.ndarray, *, speed: float | None = None) -> np.ndarray:
        """One action that moves the end effector towards ``target`` and holds the orientation."""
        cfg = self.config
        speed = cfg.max_speed if speed is None else speed
        desired = cfg.gain * (np.asarray(target) - self.scene.eef_pos) / POS_SCALE
        norm = np.linalg.norm(desired)
        if norm > speed:  # keep the direction: straight lines, not axis-by-axis staircases
            desired *= speed / norm
        step = np.clip(desired - self._last, -cfg.max_accel, cfg.max_accel)
        self._last = self._last + step
        pos = self._last
        if cfg.noise_std > 0:
            pos = pos + self.rng.normal(0.0, cfg.noise_std, 3)
        return np.concatenate([np.clip(pos, -1, 1), self._rotation_action(), [self.gripper]])

    @property
    def goal_rotation(self) -> np.ndarray:
        """The orientation the gripper is steered to: tilt, then yaw about world z, from the start pose."""
        return yaw_matrix(self.yaw) @ self.tilt @ self.reference

    def _rotation_action(self) -> np.ndarray:
        goal = self.goal_rotation
        error = rotation_vector(goal @ self.scene.eef_mat.T)  # world-frame rotation still to do
        rot = self.config.rot_gain * error / ROT_SCALE
        norm = np.linalg.norm(rot)
        if norm > self.config.max_turn:  # turn about a fixed axis at a bounded rate
            rot *= self.config.max_turn / norm
        return rot

    def jitter(self, point: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """``point`` moved by waypoint noise in x and y (none when the noise is off)."""
        point = np.array(point, dtype=float)
        if self.config.waypoint_noise > 0:
            point[:2] += self.rng.normal(0.0, self.config.waypoint_noise * scale, 2)
        return point

    # -- primitives --------------------------------------------------------------------------

    def move(
        self,
        target: np.ndarray,
        *,
        tolerance: float | None = None,
        max_steps: int = 120,
        speed: float | None = None,
        yaw: float | None = None,
        tilt: np.ndarray | None = None,
        until_stuck: bool = False,
    ) -> Iterator[np.ndarray]:
        """Go to ``target`` (3,) in a straight line, optionally turning to ``yaw``.

        Ends when the end effector is within ``tolerance`` of the target and the orientation
        error is under 0.1 rad, or after ``max_steps``; with ``until_stuck`` also when it has
        moved less than 3 mm in the last 8 steps (set down on something higher than planned).
        """
        tolerance = self.config.tolerance if tolerance is None else tolerance
        if yaw is not None:
            self.yaw = yaw
        turning = iter(())
        if tilt is not None:
            turning = self._tilt_path(tilt)
        target = np.asarray(target, dtype=float)
        trail: list[np.ndarray] = []
        for _ in range(max_steps):
            self.tilt = next(turning, self.tilt)
            if np.linalg.norm(target - self.scene.eef_pos) < tolerance and self._orientation_error() < 0.15:
                return
            trail.append(self.scene.eef_pos)
            if until_stuck and len(trail) > 8 and np.linalg.norm(trail[-1] - trail[-9]) < 0.003:
                return  # (not there yet, or the first check would have ended it)
            yield self.action_towards(target, speed=speed)

    def _tilt_path(self, tilt: np.ndarray, step: float = 0.12) -> Iterator[np.ndarray]:
        """Tilts from the current one to ``tilt`` in small steps along the shortest rotation.

        Steering straight at a far-away orientation lets the controller pick either way round
        (and near a half turn it may flip between them); small steps keep the turn one-way.
        """
        from scipy.spatial.transform import Rotation, Slerp

        ends = Rotation.from_matrix(np.stack([self.tilt, tilt]))
        angle = float(np.linalg.norm((ends[1] * ends[0].inv()).as_rotvec()))
        n = max(1, int(np.ceil(angle / step)))
        path = Slerp([0.0, 1.0], ends)(np.linspace(0.0, 1.0, n + 1)[1:])
        for k in range(n):
            yield path[k].as_matrix()

    def grip(self, value: float, steps: int = 10) -> Iterator[np.ndarray]:
        """Open (-1) or close (+1) the gripper while holding the current position."""
        self.gripper = value
        hold = self.scene.eef_pos
        for i in range(steps):
            yield self.action_towards(hold)
            if value == CLOSE and i >= 4 and self._fingers_still():
                return

    def _fingers_still(self) -> bool:
        opening = self.scene.gripper_opening
        still = abs(opening - getattr(self, "_last_opening", np.inf)) < 5e-4
        self._last_opening = opening
        return still

    def _orientation_error(self) -> float:
        goal = self.goal_rotation
        return float(np.linalg.norm(rotation_vector(goal @ self.scene.eef_mat.T)))
