"""Evaluation runs compared on the episodes they all ran: success, paired tests, chunk statistics.

Usage::

    python scripts/compare_runs.py results/libero_eval/libero_spatial-lowdim-rfsq_ar \\
        results/libero_eval/libero_spatial-lowdim-rfsq_ar+fixed:2 results/libero_eval/...

The first run is the reference. Only episodes every run holds (same suite, task, init state and
repeat, so the same start and seed) are counted, so a 500-episode run can be the reference of a
200-episode one. Per run: successes with a 95% Wilson interval, the episodes only the reference
and only this run solved with the exact McNemar p, episodes with the same chunks, and over their
chunks the layers decoded, main passes and decode latency (median). Prints a markdown table; the
run folders are only read (a run still writing is fine: its unfinished last line is skipped).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from rsdlib.experiments.adaptive import depth_rows, plot_depth_frontier
from rsdlib.experiments.comparison import chunk_stats
from rsdlib.libero.evaluate import EPISODES_FILE, read_episodes
from rsdlib.metrics import paired_outcomes, record_key, success_summary
from rsdlib.plotting import save_figure


def finished_episodes(run_dir: Path) -> list[dict]:
    """The complete records of a run folder, without touching the file."""
    if not (run_dir / EPISODES_FILE).is_file():
        raise SystemExit(f"{run_dir} holds no {EPISODES_FILE}: is it an evaluation run folder?")
    try:
        return read_episodes(run_dir, repair=False)
    except ValueError as err:  # a malformed line before the last
        raise SystemExit(str(err)) from None


def method_spec(run_dir: Path) -> str:
    """The method spec a run folder evaluated (its ``config.json``)."""
    config = json.loads((run_dir / "config.json").read_text())
    return config["policy"]["spec"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders; the first is the reference")
    parser.add_argument(
        "--frontier", type=Path, default=None,
        help="also draw success against main passes per chunk (the adaptive-depth frontier) to FRONTIER.{png,pdf}",
    )  # fmt: skip
    args = parser.parse_args(argv)
    runs = {run: finished_episodes(run) for run in args.runs}
    shared = set.intersection(*({record_key(r) for r in records} for records in runs.values()))
    if not shared:
        raise SystemExit("the runs share no episode")
    runs = {run: [r for r in records if record_key(r) in shared] for run, records in runs.items()}
    reference = runs[args.runs[0]]
    print(f"{len(shared)} episodes every run holds; reference: {args.runs[0].name}\n")
    print("| run | successes | rate [95% CI] | only reference | only this | McNemar p | same chunks "
          "| layers | main passes | latency median ms |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for run, records in runs.items():
        s = success_summary(sum(bool(r["success"]) for r in records), len(records))
        paired = paired_outcomes(reference, records)
        stats = chunk_stats(records)
        layers = stats.get("layers")
        print(
            f"| {run.name} | {s['successes']}/{s['n']} | {s['rate']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}] "
            f"| {paired['only_a']} | {paired['only_b']} | {paired['p_mcnemar']:.3g} | {paired['same_chunks']} "
            f"| {'-' if layers is None else f'{layers:.2f}'} | {stats.get('main_passes', float('nan')):.2f} "
            f"| {stats.get('latency_median_ms', float('nan')):.1f} |"
        )
    if args.frontier:
        rows = depth_rows({method_spec(run): records for run, records in runs.items()})
        save_figure(plot_depth_frontier(rows, x="main_passes"), args.frontier)
        print(f"wrote {args.frontier}.png")
    print(
        "\nLatencies are as each run measured them, under whatever else the machine ran then; time "
        "methods side by side (scripts/bench_rsd.py, notebook 07) to compare them."
    )


if __name__ == "__main__":
    main()
