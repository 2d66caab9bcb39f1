"""How often `exact` RSD differs from plain greedy decoding, per dtype, on the shipped models.

`exact` commits the argmax of the verify pass's distributions. They are plain greedy decoding's
distributions only up to floating-point rounding: the verify pass runs several blocks in one
call, plain decoding one block per call, and their sums round differently. In float32 and
float64 that never flipped an argmax here; in bfloat16 near-ties flip. This prints, per dtype,
the chunks (of the validation sample) whose tokens differ.

    .venv/bin/python scripts/exact_by_dtype.py --models checkpoints/lowdim/libero_spatial --chunks 128
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from rsdlib.decoding.methods import Decoder
from rsdlib.decoding.spec import MethodSpec
from rsdlib.experiments.prepare import RFSQ_DIR
from rsdlib.policies import checkpoints
from rsdlib.policies.packed import PackedChunks
from rsdlib.tokenizers import load_tokenizer


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=Path, default=Path("checkpoints/lowdim/libero_spatial"))
    parser.add_argument("--chunks", type=int, default=128)
    parser.add_argument("--gammas", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32", "bfloat16"])
    args = parser.parse_args()
    tokenizer = load_tokenizer(args.models / RFSQ_DIR)
    val = PackedChunks.load(args.models / "val_sample.npz")
    val = val.subset(range(min(args.chunks, len(val))))
    print(f"{len(val)} validation chunks of {args.models}; exact RSD (head drafter) against plain rfsq_ar")
    for name in args.dtypes:
        dtype = getattr(torch, name)
        main_policy = checkpoints.load(args.models / "rfsq_ar", dtype=dtype)
        head = checkpoints.load_drafter(args.models / "head_drafter", main=main_policy, dtype=dtype)
        obs = val.batch(torch.arange(len(val)), trunk_config=main_policy.config.trunk, dtype=dtype)["obs"]
        plain = Decoder(MethodSpec("rfsq_ar"), main_policy, tokenizer=tokenizer).decode(obs).tokens
        for gamma in args.gammas:
            spec = MethodSpec("rsd", "head", gamma, "exact")
            rsd = Decoder(spec, main_policy, head, tokenizer).decode(obs).tokens
            differ = int((rsd != plain).flatten(1).any(dim=1).sum())
            print(f"{name:>9} g={gamma}: {differ} of {len(val)} chunks differ from plain greedy decoding")


if __name__ == "__main__":
    main()
