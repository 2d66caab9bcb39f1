"""One LIBERO observation at a chosen task, init state and step (for inspecting a policy there)."""

from __future__ import annotations

from typing import Any

from rsdlib.libero.protocol import Protocol
from rsdlib.progress import progress as progress_bar


def observation_at(
    suite: str,
    task_id: int,
    init_index: int,
    step: int = 0,
    *,
    resolution: int = 128,
    fast_render: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """The observation ``step`` steps into an episode driven by the noise-free scripted expert.

    The expert moves the scene to a state a policy would meet mid-task (approaching, grasping,
    carrying), without rendering; only the final state is rendered. With ``progress``, a bar
    counts the expert's steps (loading the scene and rendering show in its description).

    Returns:
        A LIBERO observation dict (both cameras upright, ``proprio``, ``instruction``) plus
        ``suite``, ``task_id``, ``init_index``, ``step`` and ``success`` (whether the task was
        already solved on the way).
    """
    from rsdlib.libero.env import LiberoEnv, RenderOptions
    from rsdlib.libero.experts import ExpertConfig, ScriptedExpert
    from rsdlib.libero.policy import EpisodeContext, as_output

    if step < 0:
        raise ValueError(f"step ({step}) must be >= 0")
    protocol = Protocol(camera_resolution=resolution)
    expert = ScriptedExpert(ExpertConfig.with_noise(0.0, 0.0))
    where = f"{suite} task {task_id} init {init_index}"
    with progress_bar(
        total=step, desc=f"{where}: loading the scene", unit="step", disable=not progress
    ) as bar:
        with LiberoEnv(suite, task_id, protocol, RenderOptions(enabled=False)) as env:
            obs = env.reset(init_index)
            expert.reset(EpisodeContext(suite, task_id, init_index, 0, env.task.language, env))
            bar.set_description(f"{where}: expert steps")
            done, taken = False, 0
            while taken < step and not done:
                for action in as_output(expert.act(obs)).actions[: protocol.open_loop_steps]:
                    obs, done, _ = env.step(action)
                    taken += 1
                    bar.update(1)
                    if done or taken == step:
                        break
            state, instruction = env.sim_state(), env.task.language
        bar.set_description(f"{where}: rendering step {taken}")
        with LiberoEnv(suite, task_id, protocol, RenderOptions(enabled=True, fast=fast_render)) as env:
            env.reset(init_index, wait=False)
            obs = env.observation_from_state(state)
        bar.set_description(f"{where}: step {taken}" + (" (task solved on the way)" if done else ""))
    obs["instruction"] = instruction
    return obs | {
        "suite": suite,
        "task_id": task_id,
        "init_index": init_index,
        "step": taken,
        "success": done,
    }
