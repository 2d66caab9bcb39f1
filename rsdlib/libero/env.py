"""A LIBERO environment that follows the protocol: reset to a fixed init state, wait, step, score.

Experts, learned policies, the evaluation harness and the demonstration recorder all drive
the same :class:`LiberoEnv`::

    env = LiberoEnv("libero_spatial", 0)             # renders both cameras at 128x128
    obs = env.reset(init_index=3)                    # seed, reset, init state, 10 wait steps
    obs = env.reset_sampled(seed=1234)               # a new placement from the BDDL regions
    obs, done, info = env.step(action)               # 7-D OSC_POSE delta action, gripper -1/+1
    env.success                                      # the task's goal predicate, from the env

An observation is a dict:

- ``agentview_rgb``, ``eye_in_hand_rgb``: (H, W, 3) uint8, upright (only when rendering);
- ``proprio``: (8,) float32, end-effector position, axis-angle orientation, gripper qpos;
- ``objects``: (K, 10) float32, the pose of every task object and fixture (the ``lowdim``
  modality, see ``objects.py``), and ``object_kinds``: their K kinds;
- ``instruction``: the task's language instruction;
- ``state``: robosuite's raw observation dict (object poses etc., privileged; for experts).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from rsdlib.libero.goals import has_alternatives, install_goal_check
from rsdlib.libero.objects import object_states, task_objects
from rsdlib.libero.protocol import WAIT_ACTION, Protocol, postprocess_gripper
from rsdlib.libero.render import configure_rendering
from rsdlib.libero.tasks import TaskSpec, get_task, init_states
from rsdlib.observations import CAMERAS

#: Observation keys of the two cameras, as LIBERO's HDF5 files name them, by robosuite camera.
#: An object moving faster than this (m/s, along any axis) was thrown by the physics, not the
#: arm: objects in the expert's episodes peak at about 1 m/s, one falling off the table reaches
#: 4.2, and the books of libero_10 task 5 flung at init states 18, 28, 40 and 43 reach 8 to 30.
FLUNG_SPEED = 5.0


@dataclass(frozen=True)
class RenderOptions:
    """How (and whether) camera images are rendered.

    Attributes:
        enabled: render the protocol's cameras (off: physics only, about 10x faster).
        fast: no MSAA, reflections or shadows (about 2x faster on a CPU). The images differ
            slightly from LIBERO's reference rendering, so results record this flag.
        backend: MuJoCo GL backend; None picks ``$MUJOCO_GL`` or ``egl`` (see ``render.py``).
    """

    enabled: bool = True
    fast: bool = False
    backend: str | None = None


def quat_xyzw_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """Axis-angle (3,) of a unit quaternion in robosuite's (x, y, z, w) order.

    The angle is taken in [0, pi]: ``q`` and ``-q`` give the same vector.
    """
    x, y, z, w = np.asarray(quat, dtype=np.float64)
    if w < 0:  # same rotation, angle in [0, pi]
        x, y, z, w = -x, -y, -z, -w
    sin_half = np.sqrt(max(0.0, 1.0 - min(w * w, 1.0)))
    if sin_half < 1e-8:
        return np.zeros(3)
    angle = 2.0 * np.arccos(min(w, 1.0))
    return np.array([x, y, z]) / sin_half * angle


def proprio_from_state(state: dict[str, np.ndarray]) -> np.ndarray:
    """The 8-D proprio vector of OpenVLA-OFT: eef position, eef axis-angle, gripper qpos."""
    return np.concatenate(
        [
            state["robot0_eef_pos"],
            quat_xyzw_to_axis_angle(state["robot0_eef_quat"]),
            state["robot0_gripper_qpos"],
        ]
    ).astype(np.float32)


class LiberoEnv:
    """One LIBERO task, run under a :class:`Protocol`.

    Args:
        suite: suite name (see ``protocol.SUITES``).
        task_id: task index in the suite.
        protocol: the evaluation protocol (camera names and resolution come from it).
        render: rendering options.

    Raises:
        ValueError: unknown suite or task index.
        RenderBackendError: no usable render backend (the message says what to install).
    """

    def __init__(
        self,
        suite: str,
        task_id: int,
        protocol: Protocol | None = None,
        render: RenderOptions | None = None,
    ) -> None:
        self.protocol = protocol or Protocol()
        self.render = render or RenderOptions()
        self.task: TaskSpec = get_task(suite, task_id)
        self.backend = configure_rendering(self.render.backend)
        self.max_steps = self.protocol.max_steps_for(suite)
        self._env = self._make()
        problem = self._env.env
        if has_alternatives(problem.parsed_problem["goal_state"]):  # LIBERO's own check cannot read "or"
            install_goal_check(problem)
        self._place_fixtures()
        self._fast_applied = False
        self.steps = 0  # steps taken since the wait ended
        self.physics_blowup_step: int | None = None  # when the physics blew up this episode (see step)
        self._free_dofs = self._free_joint_dofs()
        self.objects = task_objects(self)
        self.object_kinds = tuple(obj.kind for obj in self.objects)
        self.sample_seed: int | None = None  # the placement seed of an episode from reset_sampled

    def _make(self):
        from libero.libero.envs import OffScreenRenderEnv
        from libero.libero.envs.env_wrapper import ControlEnv

        res = self.protocol.camera_resolution
        kwargs: dict[str, Any] = dict(
            bddl_file_name=self.task.bddl_file,
            camera_names=list(self.protocol.camera_names),
            camera_heights=res,
            camera_widths=res,
            hard_reset=False,  # a soft reset takes 0.1 s instead of 3 s; the init state is set after it
        )
        if self.render.enabled:
            return OffScreenRenderEnv(**kwargs)
        return ControlEnv(**kwargs, has_renderer=False, has_offscreen_renderer=False, use_camera_obs=False)

    @property
    def init_states(self) -> np.ndarray:
        """The task's fixed evaluation init states (read when first asked for: a scene of the
        workbench's own is built before its init states exist)."""
        return init_states(self.task.suite, self.task.task_id)

    # -- episode -----------------------------------------------------------------------------

    def reset(self, init_index: int, *, wait: bool = True) -> dict[str, Any]:
        """Start an episode from fixed init state ``init_index`` and let objects settle.

        Follows the protocol's order: ``seed``, ``reset``, ``set_init_state``, then
        ``num_wait_steps`` no-op steps with the gripper open (skipped with ``wait=False``).
        """
        n = len(self.init_states)
        if not isinstance(init_index, int | np.integer) or not 0 <= init_index < n:
            raise ValueError(
                f"init state {init_index!r} is out of range: {self.task.suite} task {self.task.task_id} "
                f"has init states 0..{n - 1}"
            )
        self._env.seed(self.protocol.env_seed)
        self._env.reset()
        self._forget_previous_episode()
        self._apply_fast_render()
        self.sample_seed = None
        raw = self._env.set_init_state(self.init_states[init_index])
        self.steps, self.physics_blowup_step = 0, None
        return self.wait() if wait else self._observation(raw)

    def reset_sampled(self, seed: int, *, wait: bool = True) -> dict[str, Any]:
        """Start an episode from a placement drawn from the task's BDDL regions with ``seed``.

        LIBERO's placement samplers draw every object and fixture from numpy's global generator
        at ``reset``; seeding it first makes the draw reproducible. These are the init states
        demonstrations start from: the benchmark's fixed ones are kept for evaluation
        (:func:`rsdlib.libero.init_states.check_held_out` proves the two apart).
        """
        self._env.seed(int(seed))
        self._unplace_fixtures()
        raw = self._env.reset()
        self._forget_previous_episode()
        self._apply_fast_render()
        self.sample_seed = int(seed)
        self.steps, self.physics_blowup_step = 0, None
        return self.wait() if wait else self._observation(raw)

    def wait(self) -> dict[str, Any]:
        """The protocol's settling: ``num_wait_steps`` no-op steps with the gripper open (the
        resets do it unless told ``wait=False``)."""
        raw = None
        for _ in range(self.protocol.num_wait_steps):
            raw = self._step_physics(np.asarray(WAIT_ACTION), step=0)[0]
        if raw is None:
            raw = self._env.env._get_observations(force_update=True)
        self.steps = 0
        return self._observation(raw)

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], bool, dict[str, Any]]:
        """Apply one 7-D action; returns (observation, done, info). ``done`` means success."""
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (7,):
            raise ValueError(
                f"an action is 7 numbers (dx, dy, dz, dax, day, daz, gripper), got shape {action.shape}"
            )
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action has non-finite values: {action}")
        action = postprocess_gripper(action, binarize=self.protocol.binarize_gripper)
        raw, reward, done, info = self._step_physics(action, step=self.steps + 1)
        self.steps += 1
        return self._observation(raw), bool(done), {"reward": float(reward), **info}

    def _step_physics(self, action: np.ndarray, *, step: int) -> tuple:
        """One control step (number ``step`` of the episode, 0 while waiting); notes in
        :attr:`physics_blowup_step` the first at which the physics blew up.

        A spurious deep contact (some official libero_10 init states of task 5 fling the book
        this way with the robot standing still) either throws a body off faster than anything
        the arm can do, or makes accelerations so large that MuJoCo only warns and resets the
        whole sim to the model's default pose. An episode after either is not the task any
        more, so evaluation records it.
        """
        data = self._env.sim.data
        before = data.time
        out = self._env.step(action)
        thrown = len(self._free_dofs) > 0 and np.abs(data.qvel[self._free_dofs]).max() > FLUNG_SPEED
        if self.physics_blowup_step is None and (data.time < before or thrown):
            self.physics_blowup_step = step
        return out

    def _free_joint_dofs(self) -> np.ndarray:
        """Indices into ``qvel`` of the linear velocities of free bodies (objects)."""
        import mujoco

        m = self._env.sim.model._model
        free = [j for j in range(m.njnt) if m.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE]
        return np.array([m.jnt_dofadr[j] + k for j in free for k in range(3)], dtype=int)

    @property
    def success(self) -> bool:
        """Whether the task's goal holds now."""
        return bool(self._env.check_success())

    @property
    def timed_out(self) -> bool:
        """Whether the episode used up its step budget."""
        return self.steps >= self.max_steps

    def sim_state(self) -> np.ndarray:
        """The flat MuJoCo state (what LIBERO's HDF5 ``states`` hold)."""
        return np.asarray(self._env.get_sim_state())

    def observation_from_state(self, state: np.ndarray) -> dict[str, Any]:
        """Set the sim to ``state`` and return the observation there (re-renders cameras)."""
        self._apply_fast_render()
        return self._observation(self._env.regenerate_obs_from_state(state))

    def close(self) -> None:
        """Free the simulator and its render context."""
        if getattr(self, "_env", None) is not None:
            self._env.close()
            self._env = None

    def __enter__(self) -> LiberoEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def raw(self):
        """The wrapped LIBERO ``ControlEnv`` (for experts and debugging)."""
        return self._env

    # -- internals ---------------------------------------------------------------------------

    def _observation(self, raw: dict[str, np.ndarray]) -> dict[str, Any]:
        obs: dict[str, Any] = {
            "proprio": proprio_from_state(raw),
            "instruction": self.task.language,
            "objects": object_states(self._env.sim, self.objects),
            "object_kinds": self.object_kinds,
            "state": raw,
        }
        if self.render.enabled:
            for camera in self.protocol.camera_names:
                image = raw[f"{camera}_image"]
                key = CAMERAS.get(camera, f"{camera}_rgb")
                obs[key] = np.ascontiguousarray(image[::-1, ::-1]) if self.protocol.flip_images else image
        return obs

    def _place_fixtures(self) -> None:
        """Put the fixtures (cabinets, stoves, racks) where every episode of this task has them.

        LIBERO draws fixture poses from numpy's global generator at each reset, and the sim
        states in init-state and demonstration files do not hold them (fixtures have no joints).
        Episodes seed that generator first, so their fixtures sit at one fixed pose; the env's
        constructor draws them unseeded, up to 1.3 cm and 1.5 degrees away. Images rendered
        from states before any episode (demonstration replay, videos) would show them there.
        """
        self._env.seed(self.protocol.env_seed)
        self._env.reset()

    def _unplace_fixtures(self) -> None:
        """Put the fixtures back at the origin before a placement draw, as a freshly built model has them.

        LIBERO places an object that starts on a fixture (a bowl on the stove, in a drawer) at
        the fixture's newly drawn pose *plus* the site's position as the sim holds it, which is
        right only when the fixture still stands at the origin: after a hard reset. After a soft
        reset the fixture stands where the last draw put it, the offset counts twice, and the bowl
        starts a metre up and half a metre off, then falls to the floor.
        """
        problem = self._env.env
        model = problem.sim.model
        for fixture in problem.fixtures_dict.values():
            body = model.body_name2id(fixture.root_body)
            model.body_pos[body] = 0.0
            model.body_quat[body] = (1.0, 0.0, 0.0, 0.0)

    def _forget_previous_episode(self) -> None:
        """Clear the state a soft reset keeps, so an episode does not depend on the one before.

        robosuite's soft reset keeps the gripper's integrated command (``current_action``, which
        the Panda gripper ramps towards each command) and MuJoCo's solver warm start. A hard
        reset rebuilds both from scratch; zeroing them gives the same start in 0.1 s instead of 3.
        """
        robosuite_env = self._env.env
        for robot in robosuite_env.robots:
            grippers = robot.gripper.values() if isinstance(robot.gripper, dict) else [robot.gripper]
            for gripper in grippers:
                gripper.current_action = np.zeros_like(gripper.current_action)
        robosuite_env.sim.data.qacc_warmstart[:] = 0.0

    def _apply_fast_render(self) -> None:
        """Turn off MSAA, reflections and shadows in the offscreen context (once per context)."""
        if not (self.render.enabled and self.render.fast):
            return
        import mujoco

        sim = self._env.env.sim
        ctx = sim._render_context_offscreen
        if ctx is None or getattr(ctx, "_rsd_fast", False):
            return
        model = sim.model._model
        model.vis.quality.offsamples = 0  # no multisample anti-aliasing
        # The MSAA setting is read when the GL context is made: rebuild it.
        ctx.con.free()
        del ctx.con
        ctx._set_mujoco_context_and_buffers()
        ctx.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        ctx._rsd_fast = True


def run_steps(env: LiberoEnv, actions: np.ndarray) -> tuple[int, float]:
    """Step through ``actions``; returns (steps taken, seconds). Stops early on success."""
    start = time.perf_counter()
    for i, action in enumerate(actions, 1):
        _, done, _ = env.step(action)
        if done:
            return i, time.perf_counter() - start
    return len(actions), time.perf_counter() - start


def default_backend() -> str:
    """The backend a new env would use (``$MUJOCO_GL`` or ``egl``)."""
    return os.environ.get("MUJOCO_GL", "egl")
