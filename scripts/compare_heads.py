"""Draft heads side by side on the states that matter: demonstration and closed-loop validation chunks.

Usage::

    python scripts/compare_heads.py --models checkpoints/lowdim/libero_spatial \\
        --prepared build/prepared/libero_spatial_lowdim --heads <models>/head_drafter build/heads/distilled \\
        --closed-loop data/policy_rollouts

For each head (a head-drafter checkpoint folder) and each set of held-out chunks (the prepared
folder's validation split; with ``--closed-loop``, the validation episodes of the policy rollouts,
split as distillation splits them): the share of tokens and of whole layers equal to the main
policy's greedy ones (teacher forced), and ``exact`` RSD's acceptance per layer and main passes per
chunk (its tokens checked equal to plain greedy decoding). Prints a markdown table.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from rsdlib.experiments.distill import Targets, agreement, closed_loop_chunks, main_targets
from rsdlib.experiments.validation import rsd_on_chunks
from rsdlib.policies import checkpoints
from rsdlib.policies.packed import PackedChunks


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, required=True, help="the folder of the main policy (rfsq_ar)")
    parser.add_argument(
        "--prepared", type=Path, required=True, help="the prepared folder the models came from"
    )
    parser.add_argument(
        "--heads", type=Path, nargs="+", required=True, help="head-drafter checkpoint folders"
    )
    parser.add_argument("--closed-loop", type=Path, default=None, help="policy rollouts root")
    parser.add_argument("--chunks", type=int, default=512, help="chunks per set (evenly spread)")
    parser.add_argument("--gammas", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    main_policy = checkpoints.load(args.models / "rfsq_ar").eval()
    sets = {"demonstrations (val)": PackedChunks.load(args.prepared / "val.npz")}
    if args.closed_loop:
        sets["closed loop (val)"] = closed_loop_chunks(args.closed_loop, args.prepared, progress=False)[1]
    print("| head | chunks | n | token agreement L0-L3 | layer agreement L0-L3 | "
          + " | ".join(f"exact g{g}: acceptance L1-L3; passes" for g in args.gammas) + " |")  # fmt: skip
    print("|---|---|---:|---|---|" + "---|" * len(args.gammas))
    for name, chunks in sets.items():
        chunks = chunks.subset(torch.linspace(0, len(chunks) - 1, min(args.chunks, len(chunks))).long())
        targets: dict[bool, Targets] = {}  # with the main model's block states or not, made once
        for path in args.heads:
            head = checkpoints.load_drafter(path, main=main_policy).eval()
            blocks = head.config.reads_blocks  # its targets need the main model's block states too
            if blocks not in targets:
                targets[blocks] = main_targets(main_policy, chunks, with_blocks=blocks, progress=False)
            agree = agreement(head, targets[blocks])
            L = main_policy.L
            tokens = " ".join(
                f"{agree[f'acc_layer{i}']:.2f}" if f"acc_layer{i}" in agree else "-" for i in range(L)
            )
            layers = " ".join(
                f"{agree[f'match_layer{i}']:.2f}" if f"match_layer{i}" in agree else "-" for i in range(L)
            )
            rsd = rsd_on_chunks(main_policy, head, chunks, gammas=args.gammas, batch_size=128)
            cells = [
                " ".join("-" if a is None else f"{a:.2f}" for a in r["acceptance"][1:])
                + f"; {r['main_passes']:.2f}"
                for r in rsd.values()
            ]
            print(
                f"| {path} | {name} | {len(chunks)} | {tokens} | {layers} | " + " | ".join(cells) + " |",
                flush=True,
            )
    print(
        f"\nplain decoding: {main_policy.L - main_policy.prefix_layers} main passes per chunk after the prefix"
    )


if __name__ == "__main__":
    main()
