"""Measure the scripted expert's success per task through the evaluation harness.

Usage::

    python scripts/measure_experts.py --suites libero_spatial libero_object --episodes 50 --workers 1

Writes ``results/expert_success/<run>/`` (config, provenance, episodes.jsonl, metrics.json)
and prints a table of success per task with 95% Wilson intervals. Re-running the same command
resumes the run: finished episodes are not run again, and a larger ``--episodes`` extends it.
"""

from __future__ import annotations

import argparse

from rsdlib.libero.evaluate import EvalOptions, evaluate, format_table
from rsdlib.libero.experts import ExpertConfig, ScriptedExpert
from rsdlib.libero.protocol import SUITES
from rsdlib.paths import RESULTS_DIR
from rsdlib.results import new_run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suites", nargs="+", default=["libero_spatial"], choices=SUITES)
    parser.add_argument("--tasks", nargs="*", type=int, default=None, help="task indices (default: all)")
    parser.add_argument("--episodes", type=int, default=50, help="init states per task (the first N)")
    parser.add_argument("--executor", default="pool", choices=("serial", "pool", "ray"))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-noise", action="store_true", help="measure the noiseless expert")
    parser.add_argument("--video", default="none", choices=("none", "failures", "all"))
    parser.add_argument("--run", default=None, help="run name (default: derived from the suites)")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    args = parser.parse_args()

    expert_config = ExpertConfig() if args.no_noise else ExpertConfig.with_noise()
    expert = ScriptedExpert(expert_config)
    options = EvalOptions(video=args.video)
    config = {
        "policy": expert.config(),
        "suites": args.suites,
        "tasks": args.tasks,
        "seed": args.seed,
        "options": options,
    }
    run = args.run or "-".join(s.replace("libero_", "") for s in args.suites) + (
        "-nonoise" if args.no_noise else ""
    )
    run_dir = new_run("expert_success", config, run=run, root=args.results_dir)
    result = evaluate(
        expert,
        args.suites,
        args.tasks,
        args.episodes,
        run_dir=run_dir,
        seed=args.seed,
        options=options,
        executor=args.executor,
        workers=args.workers,
    )
    print(f"run folder: {run_dir}")
    print(format_table(result.summary))
    failures = [r for r in result.records if not r["success"]]
    for r in failures:
        print(
            f"  failed {r['suite']} task {r['task_id']} init {r['init_index']} steps {r['steps']}"
            + (f" error {r['error'].splitlines()[0]}" if r["error"] else "")
        )


if __name__ == "__main__":
    main()
