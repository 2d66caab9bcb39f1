"""Evaluate the shipped policies on LIBERO under the protocol, one resumable run folder each.

Usage::

    python scripts/evaluate_policies.py --models checkpoints/lowdim/libero_spatial --episodes 5 --workers 2
    python scripts/evaluate_policies.py --methods rfsq_ar rsd_head:g3:exact --episodes 50   # more, resumed
    python scripts/evaluate_policies.py --methods rfsq_ar+entropy:0.2 rsd_head:g3:match_rate:0.5
    python scripts/evaluate_policies.py --models checkpoints/lowdim/libero_spatial --episodes 50 --methods rfsq_ar
    python scripts/evaluate_policies.py --methods rfsq_ar --episodes 50 --open-loop-steps 4   # re-plan every 4

Methods are method specs, as notebook 08 writes them (``rsdlib.decoding.spec.MethodSpec``): the
four heads (``rfsq_ar``, ``rfsq_parallel``, ``l1_regression``, ``fast_ar``), RSD as
``rsd_<head|tiny>:g<gamma>:<rule>[:<threshold>]``, adaptive depth as ``+<monitor>:<threshold>``,
sampling as ``@<temperature>``. Each goes to ``<results>/libero_eval/<suite>-<method>/``
(``<suite>-lowdim-<method>/`` for lowdim models, whose episodes run without rendering)
(``episodes.jsonl``, ``metrics.json``, videos of failures); re-running with more episodes adds
only the missing ones. ``--open-loop-steps K`` executes K actions of each chunk before
re-planning instead of OpenVLA-OFT's 8: a protocol deviation, printed, written into the config and
``metrics.json``, and its runs go to folders ending ``-ol<K>``. Prints one summary line per
method (success with a 95% Wilson interval, mean chunk latency, main passes per chunk) and, for
each method after the first, a paired comparison with the first on the same episodes (episodes
only one of them solved, exact McNemar p, episodes with the same steps and chunks).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from rsdlib.decoding.spec import PLAIN_METHODS, MethodSpec
from rsdlib.experiments.comparison import (
    chunk_stats,
    eval_options,
    policy_from_spec,
    protocol_tag,
    run_name,
    run_prefix,
)
from rsdlib.experiments.prepare import read_prepared
from rsdlib.libero.evaluate import WorkerPool, evaluate, format_table
from rsdlib.libero.protocol import Protocol, deviation_lines, deviations
from rsdlib.metrics import paired_outcomes
from rsdlib.paths import repo_path
from rsdlib.results import new_run


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="checkpoints/lowdim/libero_spatial")
    parser.add_argument(
        "--methods",
        nargs="*",
        type=MethodSpec.parse,
        default=[*PLAIN_METHODS, "rsd_head:g2:exact"],
        help="method specs, as notebook 08 writes them: rfsq_ar, rsd_head:g3:match_rate:0.5, rfsq_ar@1, ...",
    )
    parser.add_argument("--episodes", type=int, default=5, help="init states per task (the first ones)")
    parser.add_argument("--tasks", nargs="*", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch threads per worker (default: CPUs / workers); 1 when other jobs share the machine",
    )  # fmt: skip
    parser.add_argument(
        "--video",
        default=None,
        choices=("none", "failures", "all"),
        help="default: failures for rgb models (their frames are there), none for lowdim (replaying costs ~40 s each)",
    )
    parser.add_argument(
        "--open-loop-steps",
        type=int,
        default=Protocol.open_loop_steps,
        metavar="K",
        help="actions of each chunk executed before the policy is asked again, 1..horizon "
        "(default: OpenVLA-OFT's %(default)s; another K is a protocol deviation, run in <run>-ol<K>/)",
    )
    parser.add_argument("--results", default="results")
    args = parser.parse_args(argv)
    models = repo_path(args.models)
    info = read_prepared(models)
    try:
        options = eval_options(info, video=args.video, open_loop_steps=args.open_loop_steps)
    except ValueError as err:
        parser.error(f"--open-loop-steps {args.open_loop_steps}: {err} ({models})")
    for line in deviation_lines(deviations(options.protocol)):
        print(line)
    prefix = run_prefix(info)
    tag = protocol_tag(options.protocol)
    first = None  # the first method's records: every other method is compared with it, paired
    # one pool for every method: its workers build each task's env once, not once per method
    with WorkerPool(args.workers, threads=args.threads) as pool:
        for method in args.methods:
            policy = policy_from_spec(method, models)
            # Not the episode count: an episode is known by its task, init state and seed, so a
            # folder grows when asked for more (folders made before 2026-12-01 recorded it).
            config = {"policy": policy.config(), "options": options}
            run_dir = new_run(
                "libero_eval",
                config,
                run=f"{prefix}-{run_name(method)}{tag}",
                root=repo_path(args.results),
                retired=("episodes",),
            )
            result = evaluate(
                policy,
                [info["suite"]],
                args.tasks,
                args.episodes,
                run_dir=run_dir,
                options=options,
                pool=pool,
            )
            print(format_table(result.summary))
            suite = result.summary["suites"][0]
            line = {"method": str(method), "successes": suite["successes"], "n": suite["n"], "rate": suite["rate"],
                    "ci": [suite["ci_low"], suite["ci_high"]], "errors": result.summary["errors"],
                    "open_loop_steps": options.protocol.open_loop_steps,
                    "chunks_per_episode": sum(r["chunks"] for r in result.records) / len(result.records)}  # fmt: skip
            print(json.dumps(line | chunk_stats(result.records)))
            if first is None:
                first = (str(method), result.records)
            else:  # the same episodes (starts and seeds): a paired test says more than two intervals
                print(
                    json.dumps(
                        {"paired": [first[0], str(method)]} | paired_outcomes(first[1], result.records)
                    )
                )


if __name__ == "__main__":
    main()
