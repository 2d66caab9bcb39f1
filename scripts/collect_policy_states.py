"""Closed-loop states: roll a trained policy out in LIBERO from sampled starts, write the episodes.

Usage::

    MUJOCO_GL=egl python scripts/collect_policy_states.py --models checkpoints/lowdim/libero_spatial \\
        --episodes 20 --threads 1                       # data/policy_rollouts/libero_spatial/*.hdf5
    python scripts/train_policies.py distill --models M --prepared P --closed-loop data/policy_rollouts

Each task's episodes start from placements sampled from its BDDL regions with seeds of their own
(never a benchmark init state, never a demonstration's start) and are written whole, solved or
not, in the demonstration layout (``rsdlib.libero.policy_rollouts``). The actions in them are the
policy's own: they are for distilling a drafter on the states the policy visits, not for
imitation. Lowdim policies run without rendering (a few seconds an episode on one CPU thread).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rsdlib.experiments.comparison import policy_from_spec
from rsdlib.experiments.prepare import read_prepared
from rsdlib.libero.policy_rollouts import POLICY_ROLLOUT_SEED, ROLLOUTS_DIR, collect_policy_rollouts
from rsdlib.libero.tasks import num_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", type=Path, required=True, help="a models folder (its suite is rolled out)"
    )
    parser.add_argument(
        "--method", default="rfsq_ar", help="the method spec that acts (default: plain rfsq_ar)"
    )
    parser.add_argument("--episodes", type=int, default=20, help="sampled starts per task")
    parser.add_argument("--tasks", type=int, nargs="*", default=None, help="task ids (default: all)")
    parser.add_argument("--root", type=Path, default=ROLLOUTS_DIR)
    parser.add_argument("--seed", type=int, default=POLICY_ROLLOUT_SEED)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    suite = read_prepared(args.models)["suite"]
    policy = policy_from_spec(args.method, args.models)
    tasks = args.tasks if args.tasks is not None else list(range(num_tasks(suite)))
    for task_id in tasks:
        report = collect_policy_rollouts(
            suite, task_id, policy, episodes=args.episodes, root=args.root, seed=args.seed,
            description=f"{args.method} of {args.models}", progress=True,
        )  # fmt: skip
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
