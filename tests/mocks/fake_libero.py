"""A fake LIBERO env and policies for testing the evaluation harness without a simulator.

The fake robot is a point on a line. Init state ``k`` starts it at ``0.1 * k`` and the goal
is at 1.0; every action moves it by ``0.1 * action[0]`` (clipped). So with ``max_steps`` 8,
a policy that always pushes +1 succeeds from init states 2 and up and fails from 0 and 1.
Init state :data:`CRASH_INIT` of task :data:`CRASH_TASK` raises inside ``step``.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rsdlib.libero.policy import EnvPolicy, PolicyOutput

CRASH_TASK, CRASH_INIT = 1, 4
MAX_STEPS = 8
_BUILDS = itertools.count()  # envs made in this process


@dataclass(frozen=True)
class FakeTask:
    suite: str
    task_id: int
    name: str
    language: str


class FakeEnv:
    """Mimics the parts of :class:`~rsdlib.libero.env.LiberoEnv` the harness uses."""

    def __init__(self, suite: str, task_id: int, options=None) -> None:
        self.task = FakeTask(suite, task_id, f"fake_task_{task_id}", f"reach the goal {task_id}")
        self.max_steps = MAX_STEPS
        self.steps = 0
        self.position = 0.0
        self.init_index = 0
        self.closed = False
        self.renders = bool(getattr(options, "renders", False))
        self.build = [os.getpid(), next(_BUILDS)]  # which process made it, and its how-manieth env

    def reset(self, init_index: int):
        self.init_index = init_index
        self.position = 0.1 * init_index
        self.steps = 0
        return self._obs()

    def step(self, action):
        if self.task.task_id == CRASH_TASK and self.init_index == CRASH_INIT:
            raise RuntimeError("simulated physics blow-up")
        action = np.asarray(action)
        assert action.shape == (7,)
        self.position += 0.1 * float(np.clip(action[0], -1, 1))
        self.steps += 1
        return self._obs(), self.success, {}

    def sim_state(self) -> np.ndarray:
        return np.array([self.position, self.steps], dtype=np.float64)

    def observation_from_state(self, state: np.ndarray):
        self.position, self.steps = float(state[0]), int(state[1])
        return self._obs()

    @property
    def success(self) -> bool:
        return self.position >= 1.0 - 1e-9

    def _obs(self):
        obs = {
            "proprio": np.array([self.position], dtype=np.float32),
            "instruction": self.task.language,
            "state": {},
            "env_build": self.build,
        }
        if self.renders:  # a 16x16 picture whose brightness follows the step count
            level = np.uint8(min(255, 25 * self.steps))
            obs["agentview_rgb"] = np.full((16, 16, 3), level, dtype=np.uint8)
            obs["eye_in_hand_rgb"] = np.full((16, 16, 3), 255 - level, dtype=np.uint8)
        return obs

    def close(self) -> None:
        self.closed = True


def make_fake_env(suite: str, task_id: int, options=None) -> FakeEnv:
    return FakeEnv(suite, task_id, options)


class PushPolicy(EnvPolicy):
    """Deterministic: returns a chunk of 4 actions pushing +1, and a diagnostic per chunk."""

    name = "push"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls = 0

    def reset(self, context) -> None:
        self.calls = 0
        self.seed = context.seed

    def act(self, obs):
        if self.delay_s:
            time.sleep(self.delay_s)
        self.calls += 1
        chunk = np.zeros((4, 7))
        chunk[:, 0] = 1.0
        chunk[:, 6] = -1.0
        return PolicyOutput(chunk, {"call": self.calls, "position": float(obs["proprio"][0])})


class EnvProbePolicy(PushPolicy):
    """PushPolicy of a given strength that records which env (process, build) it acted in."""

    name = "probe"

    def __init__(self, push: float = 1.0) -> None:
        super().__init__()
        self.push = push

    def act(self, obs):
        out = super().act(obs)
        out.actions[:, 0] = self.push
        return PolicyOutput(out.actions, out.diagnostics | {"env_build": list(obs["env_build"])})


class TorchThreadsPolicy(PushPolicy):
    """PushPolicy that records how many threads torch uses where it acts."""

    name = "torch_threads"

    def act(self, obs):
        import torch

        out = super().act(obs)
        out.diagnostics["torch_threads"] = torch.get_num_threads()
        return out


def evaluation_script(run_dir, *, suite: str, executor: str, delay_s: float, workers: int = 1) -> str:
    """Python source that evaluates :class:`PushPolicy` on the fake env, for a test to run in a
    subprocess and kill midway (episodes of ``delay_s`` per chunk, tasks 0-2, 10 init states)."""
    tests_dir = Path(__file__).resolve().parent.parent
    return (
        f"import sys\n"
        f"sys.path.insert(0, {str(tests_dir)!r})\n"
        f"from mocks.fake_libero import PushPolicy, make_fake_env\n"
        f"from rsdlib.libero.evaluate import evaluate\n"
        f"evaluate(PushPolicy(delay_s={delay_s}), [{suite!r}], [0, 1, 2], 10, run_dir={str(run_dir)!r},\n"
        f"         executor={executor!r}, workers={workers}, env_factory=make_fake_env, progress=False)\n"
    )
