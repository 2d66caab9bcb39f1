"""How fast a LIBERO env steps, with and without rendering (notebook 00 and ``bench_env.py``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from rsdlib.actions import ACTION_DIM
from rsdlib.libero.env import LiberoEnv, RenderOptions
from rsdlib.libero.protocol import Protocol


def wiggle_actions(steps: int) -> np.ndarray:
    """A smooth, bounded test motion: a small circle in x-y, a slow dip in z, gripper open.

    Returns:
        (steps, 7) actions in [-1, 1].
    """
    t = np.arange(steps)[:, None]
    actions = np.zeros((steps, ACTION_DIM))
    actions[:, 0:1] = 0.3 * np.sin(t / 6.0)
    actions[:, 1:2] = 0.3 * np.cos(t / 6.0)
    actions[:, 2:3] = -0.2 * np.sin(t / 12.0)
    actions[:, 6] = -1.0
    return actions


@dataclass
class EnvSpeed:
    """Timings of one env: creation, reset, and per-step wall time."""

    suite: str
    task_id: int
    resolution: int
    render: bool
    fast_render: bool
    backend: str
    create_s: float
    reset_s: float
    step_ms: list[float] = field(repr=False)
    images: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def median_step_ms(self) -> float:
        return float(np.median(self.step_ms))

    @property
    def steps_per_second(self) -> float:
        return 1000.0 / self.median_step_ms

    def summary(self) -> dict[str, object]:
        """A flat row for a table (no images)."""
        return {
            "suite": self.suite,
            "task_id": self.task_id,
            "resolution": self.resolution,
            "render": ("fast" if self.fast_render else "default") if self.render else "none",
            "backend": self.backend,
            "create_s": round(self.create_s, 2),
            "reset_s": round(self.reset_s, 2),
            "median_step_ms": round(self.median_step_ms, 2),
            "p90_step_ms": round(float(np.percentile(self.step_ms, 90)), 2),
            "steps_per_s": round(self.steps_per_second, 2),
            "steps": len(self.step_ms),
        }


def measure_env_speed(
    suite: str,
    task_id: int = 0,
    *,
    resolution: int = 128,
    render: RenderOptions | None = None,
    steps: int = 50,
    init_index: int = 0,
    keep_images: bool = True,
) -> EnvSpeed:
    """Create an env, reset it to an init state and time ``steps`` steps of :func:`wiggle_actions`.

    The first reset is timed apart (it builds the sim); the step timings exclude it.
    With rendering on, the images of the first observation after the reset are kept.
    """
    render = render or RenderOptions()
    start = time.perf_counter()
    env = LiberoEnv(suite, task_id, Protocol(camera_resolution=resolution), render)
    create_s = time.perf_counter() - start
    try:
        start = time.perf_counter()
        obs = env.reset(init_index)
        reset_s = time.perf_counter() - start
        images = {k: v for k, v in obs.items() if k.endswith("_rgb")} if keep_images else {}
        step_ms = []
        for action in wiggle_actions(steps):
            t0 = time.perf_counter()
            env.step(action)
            step_ms.append(1000.0 * (time.perf_counter() - t0))
    finally:
        env.close()
    return EnvSpeed(
        suite, task_id, resolution, render.enabled, render.fast and render.enabled, env.backend,
        create_s, reset_s, step_ms, images,
    )  # fmt: skip
