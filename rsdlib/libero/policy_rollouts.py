"""Closed-loop states: a learned policy rolled out from sampled starts, written as demonstrations.

A drafter distilled on demonstrations only sees the states an expert visits; in LIBERO episodes
the policy drifts into states of its own (recoveries, near-misses, failures), and there the
drafter's acceptance collapses. :func:`collect_policy_rollouts` runs a policy from starts sampled
from the task's BDDL regions (held out from the benchmark's init states, as demonstrations are,
with placement seeds of their own) and writes every episode, solved or not, in the layout of
:mod:`rsdlib.libero.demos`, so :func:`~rsdlib.libero.dataset.load_demos` reads them. The
recorded actions are the policy's own, not an expert's: these files are for distilling a drafter
on the main policy's outputs at these states, never for imitation (their attributes say so).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rsdlib.libero.demos import DemoConfig, demo_path, env_attrs, record_rollout, write_demo_file
from rsdlib.libero.init_states import HeldOutError, UnstableStartError
from rsdlib.libero.protocol import Protocol
from rsdlib.progress import progress as progress_bar
from rsdlib.results import git_sha
from rsdlib.seeding import episode_seed, placement_seed

#: Base seed of the policy rollouts' placements: not the demonstrations' (DemoConfig.seed = 0),
#: so that their starts differ from the demonstrations' too.
POLICY_ROLLOUT_SEED = 7919
ROLLOUTS_DIR = Path("data") / "policy_rollouts"


def collect_policy_rollouts(
    suite: str,
    task_id: int,
    policy: Any,
    *,
    episodes: int,
    root: str | Path,
    seed: int = POLICY_ROLLOUT_SEED,
    description: str = "",
    progress: bool = False,
) -> dict[str, Any]:
    """Roll ``policy`` out from ``episodes`` sampled starts of one task; write them all.

    Args:
        policy: a :class:`~rsdlib.libero.policy.Policy` (``reset`` and ``act``), e.g.
            ``rsdlib.experiments.comparison.policy_from_spec("rfsq_ar", models)``.
        root: where ``<suite>/<task>_demo.hdf5`` goes (replaced if there).
        seed: base seed of the placements and episode seeds.
        description: what the policy is (recorded in the file).

    Returns:
        A report: path, episodes kept and solved, starts refused, seconds.
    """
    from rsdlib.libero.env import LiberoEnv, RenderOptions
    from rsdlib.libero.tasks import get_task

    task = get_task(suite, task_id)
    start = time.perf_counter()
    rollouts, refused = [], []
    config = DemoConfig(episodes=episodes, seed=seed, dart_std=0.0, protocol=Protocol())
    with LiberoEnv(suite, task_id, config.protocol, RenderOptions(enabled=False)) as env:
        for index in progress_bar(
            range(episodes), desc=f"{suite} task {task_id} policy", disable=not progress
        ):
            sample_seed = placement_seed(seed, suite, task_id, index)
            try:
                rollouts.append(
                    record_rollout(
                        env, policy, index, episode_seed(seed, suite, task_id, index), sample_seed=sample_seed
                    )
                )
            except (HeldOutError, UnstableStartError):  # never a benchmark start; no thrown objects
                refused.append(index)
        attrs = env_attrs(env, config)
        names, kinds = [obj.name for obj in env.objects], list(env.object_kinds)
    if not rollouts:
        raise RuntimeError(f"every start of {suite} task {task_id} was refused; no file written")
    attrs.update(
        {
            "generator": f"rsdlib learned policy: {description or type(policy).__name__}",
            "kind": "policy_rollouts",
            "actions_are": "the policy's own (closed-loop states for distillation, not demonstrations to imitate)",
            "code_version": git_sha() or "unknown",
            "num_attempted": episodes,
            "start": "sampled",
            "starts_refused": json.dumps(refused),
            "successes": sum(r.success for r in rollouts),
            "object_names": json.dumps(names),
            "object_kinds": json.dumps(kinds),
            "has_images": False,
        }
    )
    path = write_demo_file(demo_path(suite, task.name, root), [(r, {}) for r in rollouts], attrs)
    return {
        "suite": suite, "task_id": task_id, "path": str(path), "episodes": len(rollouts),
        "successes": sum(r.success for r in rollouts), "starts_refused": refused,
        "steps": sum(len(r.actions) for r in rollouts), "seconds": round(time.perf_counter() - start, 1),
    }  # fmt: skip
