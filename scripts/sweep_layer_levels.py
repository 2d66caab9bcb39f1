"""RFSQ levels per layer: reconstruction against how well a drafter agrees with the main policy.

Usage::

    python scripts/sweep_layer_levels.py --prepared build/prepared/libero_spatial_lowdim \\
        --setting base=2x10 --setting c6=2x6/2x6/3x6/3x6 --setting c5=2x5/2x5/4x5/4x5
    python scripts/sweep_layer_levels.py ... --main-steps 300 --distill-steps 200   # a quick look

For each ``--setting NAME=LEVELS`` (``2x10``: ten binary channels in every layer; one group per
layer: ``2x6/2x6/3x6/3x6``) it refits the RFSQ tokenizer on the prepared folder's chunks, trains
the main policy and the head drafter for the same steps, distils the head on the main policy's
greedy tokens and measures on validation chunks (``rsdlib.experiments.layer_levels``):
reconstruction MSE per depth, the main policy's token accuracy per layer, the head's whole-layer
agreement, and ``exact`` RSD's acceptance and main passes. Each setting lives in
``<out>/<NAME>/`` and a stopped sweep resumes there. Writes ``<out>/sweep.json`` and the
trade-off figure ``<out>/layer_levels.{png,pdf}``, and prints one table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rsdlib.experiments.layer_levels import SweepBudget, parse_levels, plot_layer_levels, run_setting
from rsdlib.plotting import save_figure, use_paper_style
from rsdlib.results import device_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepared", required=True, help="a prepared folder (train_policies.py prepare)")
    parser.add_argument("--out", default="build/layer_levels")
    parser.add_argument("--setting", action="append", required=True, metavar="NAME=LEVELS")
    defaults = SweepBudget()
    parser.add_argument("--tokenizer-steps", type=int, default=defaults.tokenizer_steps)
    parser.add_argument("--main-steps", type=int, default=defaults.main_steps)
    parser.add_argument("--head-steps", type=int, default=defaults.head_steps)
    parser.add_argument("--distill-steps", type=int, default=defaults.distill_steps)
    parser.add_argument("--eval-chunks", type=int, default=defaults.eval_chunks)
    parser.add_argument("--gammas", type=int, nargs="+", default=list(defaults.gammas))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = {}
    for text in args.setting:
        name, sep, levels = text.partition("=")
        if not sep or not name or "/" in name:
            parser.error(f"--setting {text!r}: write NAME=LEVELS, e.g. c6=2x6/2x6/3x6/3x6")
        settings[name] = parse_levels(levels)
    budget = SweepBudget(
        tokenizer_steps=args.tokenizer_steps, main_steps=args.main_steps, head_steps=args.head_steps,
        distill_steps=args.distill_steps, eval_chunks=args.eval_chunks, gammas=tuple(args.gammas),
    )  # fmt: skip
    out = Path(args.out)
    rows = []
    for name, levels in settings.items():
        print(f"== {name}: levels {levels}", flush=True)
        rows.append(run_setting(name, levels, args.prepared, out, budget))
        print_row(rows[-1])
    (out / "sweep.json").write_text(
        json.dumps(
            {
                "prepared": args.prepared,
                "device": device_info(),
                "threads": torch.get_num_threads(),
                "rows": rows,
            },
            indent=1,
        )
        + "\n"  # fmt: skip
    )
    use_paper_style()
    save_figure(plot_layer_levels(rows, gamma=budget.gammas[0]), out / "layer_levels")
    print("\n| setting | codes per layer | bits per layer | MSE k=1..L | main token acc | head layer agreement | "
          + " | ".join(f"exact g{g}: acceptance, passes" for g in budget.gammas) + " |")  # fmt: skip
    for row in rows:
        cells = [
            row["name"], "/".join(map(str, row["codes"])), "/".join(f"{b:g}" for b in row["bits_per_layer"]),
            " ".join(f"{m:.1e}" for m in row["mse"]), " ".join(f"{a:.2f}" for a in row["main_token_accuracy"]),
            " ".join("-" if a is None else f"{a:.2f}" for a in row["head_layer_agreement"]),
        ]  # fmt: skip
        for g in budget.gammas:
            r = row["rsd"][f"g{g}"]
            acc = " ".join("-" if a is None else f"{a:.2f}" for a in r["acceptance"])
            cells.append(f"{acc}; {r['main_passes']:.2f} (plain {row['plain_main_passes']})")
        print("| " + " | ".join(cells) + " |")
    print(f"\nwrote {out / 'sweep.json'} and {out / 'layer_levels.png'}")


def print_row(row: dict) -> None:
    print(
        f"{row['name']}: codes {row['codes']}, MSE by depth {[f'{m:.1e}' for m in row['mse']]}, "
        f"head layer agreement {row['head_layer_agreement']}, "
        + ", ".join(f"{k} passes {v['main_passes']:.2f}" for k, v in row["rsd"].items())
        + f" ({row['seconds']} s)",
        flush=True,
    )


if __name__ == "__main__":
    main()
