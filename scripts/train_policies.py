"""Make the shipped models: prepare the demonstrations, train every model, write the cards.

Usage::

    # 1. where the demonstrations are (needs LIBERO's files only through data/demos):
    python scripts/train_policies.py prepare --suite libero_spatial --out build/prepared/libero_spatial
    # 2. anywhere with torch (a GPU machine: copy the prepared folder there); resumable:
    python scripts/train_policies.py train --prepared build/prepared/libero_spatial --out checkpoints/libero_spatial
    # 3. validation metrics with decoding, card.json per model and README.md:
    python scripts/train_policies.py cards --out checkpoints/libero_spatial --prepared build/prepared/libero_spatial

``--steps`` and ``--batch-size`` override every model's schedule; ``--models`` picks some.

The lowdim track in one command (prepare, train every model in its time budget, cards)::

    python scripts/train_policies.py lowdim --suite libero_spatial     # about an hour on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from rsdlib.experiments.cards import write_cards
from rsdlib.experiments.distill import distill_head_drafter
from rsdlib.experiments.layer_levels import parse_levels
from rsdlib.experiments.prepare import prepare, read_prepared
from rsdlib.experiments.recipe import LOWDIM_DEMOS, LOWDIM_MINUTES, train_lowdim_suite
from rsdlib.experiments.train_models import MODELS, Sizes, default_schedule, default_sizes, train_models
from rsdlib.observations import MODALITIES

LEVELS_HELP = "RFSQ levels: 2x10 (every layer), or one group per layer, 2x6/2x6/3x6/3x6 (default 2x10)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="stage", required=True)
    p = sub.add_parser("prepare", help="split, fit tokenizers, pack chunks")
    p.add_argument("--suite", default="libero_spatial")
    p.add_argument("--out", required=True)
    p.add_argument("--demos-root", default=None)
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--rfsq-steps", type=int, default=3000)
    p.add_argument("--rfsq-levels", type=parse_levels, default=None, help=LEVELS_HELP)
    p.add_argument("--jpeg-quality", type=int, default=None, help="store images as JPEG (smaller, lossy)")
    p.add_argument("--modality", choices=MODALITIES, default="rgb", help="lowdim: object poses, no images")
    t = sub.add_parser("train", help="train models on a prepared folder")
    t.add_argument("--prepared", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--minutes", type=float, default=None, help="per model: steps that fit, timed first")
    t.add_argument("--lr", type=float, default=None)
    t.add_argument(
        "--deadline-minutes", type=float, default=None, help="per model: stop (and save) after this"
    )
    t.add_argument("--device", default=None)
    t.add_argument(
        "--trunk", choices=("main", "tiny"), default="main",
        help="trunk of the main policy and baselines: the default, or the tiny drafter's (small checkpoints)",
    )  # fmt: skip
    lo = sub.add_parser("lowdim", help="the lowdim recipe: prepare, train every model, cards (~1 h on a CPU)")
    lo.add_argument("--suite", default="libero_spatial")
    lo.add_argument("--demos-root", default=str(LOWDIM_DEMOS))
    lo.add_argument("--out", default=None, help="default: checkpoints/lowdim/<suite>")
    lo.add_argument("--scale", type=float, default=1.0, help="multiply every model's minutes (quick: 0.1)")
    lo.add_argument(
        "--demos-per-task", type=int, default=None, help="the first N demos of each task (data curve)"
    )
    lo.add_argument("--steps", type=int, default=None, help="fixed steps per model instead of its minutes")
    lo.add_argument("--prepared", default=None, help="default: build/prepared/<suite>_lowdim")
    lo.add_argument(
        "--models", nargs="*", default=None, choices=MODELS, help="default: every model of the recipe"
    )
    lo.add_argument("--rfsq-levels", type=parse_levels, default=None, help=LEVELS_HELP)
    lo.add_argument("--device", default=None)
    d = sub.add_parser("distill", help="fine-tune the head drafter on the main policy's greedy tokens")
    d.add_argument("--models", required=True)
    d.add_argument("--prepared", required=True)
    d.add_argument("--out", default=None, help="default: replace <models>/head_drafter")
    d.add_argument("--steps", type=int, default=3000)
    d.add_argument("--batch-size", type=int, default=256)
    d.add_argument(
        "--reads-blocks",
        action="store_true",
        help="the head also reads the main trunk's block states (EAGLE-style)",
    )
    d.add_argument(
        "--share-main-io", action="store_true",
        help="the head reads the main policy's token embedding and output layer (not stored: half its size)",
    )  # fmt: skip
    d.add_argument(
        "--closed-loop", default=None,
        help="policy rollouts (scripts/collect_policy_states.py): their states join the training chunks",
    )  # fmt: skip
    c = sub.add_parser("cards", help="validation metrics and cards")
    c.add_argument("--out", required=True)
    c.add_argument("--prepared", default=None)
    c.add_argument(
        "--only", nargs="+", default=None, help="measure these models again; the others keep their cards"
    )
    args = parser.parse_args()
    if args.stage == "prepare":
        prepare(
            args.suite, args.out, demos_root=args.demos_root, stride=args.stride,
            rfsq={"steps": args.rfsq_steps} | ({"levels": args.rfsq_levels} if args.rfsq_levels else {}),
            jpeg_quality=args.jpeg_quality, modality=args.modality,
        )  # fmt: skip
        print((Path(args.out) / "prepared.json").read_text())
    elif args.stage == "train":
        overrides = {
            k: v
            for k, v in (
                ("steps", args.steps),
                ("batch_size", args.batch_size),
                ("minutes", args.minutes),
                ("lr", args.lr),
            )
            if v is not None
        }
        schedules = {m: replace(default_schedule(m), **overrides) for m in args.models}
        seconds = train_models(
            args.prepared,
            args.out,
            models=args.models,
            schedules=schedules,
            device=args.device,
            deadline_minutes=args.deadline_minutes,
            sizes=None if args.trunk == "main" else _tiny_sizes(args.prepared),
        )
        print(json.dumps({"seconds": seconds}))
    elif args.stage == "lowdim":
        minutes = None if args.models is None else {m: LOWDIM_MINUTES[m] for m in args.models}
        record = train_lowdim_suite(
            args.suite, demos_root=args.demos_root, out=args.out, prepared_dir=args.prepared, minutes=minutes,
            scale=args.scale, max_per_task=args.demos_per_task, steps=args.steps, rfsq_levels=args.rfsq_levels,
            device=args.device,
        )  # fmt: skip
        print(json.dumps(record, indent=1))
    elif args.stage == "distill":
        report = distill_head_drafter(
            args.models, args.prepared, out=args.out, steps=args.steps, batch_size=args.batch_size,
            reads_blocks=args.reads_blocks, shares_main_io=args.share_main_io, closed_loop=args.closed_loop,
        )  # fmt: skip
        print(json.dumps(report, indent=1))
    else:
        cards = write_cards(args.out, prepared_dir=args.prepared, only=args.only)
        print(json.dumps({name: card["validation"] for name, card in cards.items()}, indent=1))


def _tiny_sizes(prepared: str) -> Sizes:
    """The recipe's sizes for the prepared folder's modality, with the tiny trunk as the main one."""
    sizes = default_sizes(read_prepared(prepared))
    return replace(sizes, main=sizes.tiny)


if __name__ == "__main__":
    main()
