"""Plain ``rfsq_ar`` decoding with layer 0 in the prefix pass against layer 0 in a pass of its own.

Block 0 reads no token, so :meth:`RFSQAutoregressive.prefix_and_first_block` computes it with the
prefix: L - 1 block passes after the prefix instead of L. This times both ways side by side
(alternating, batch 1, after warm-up) on the shipped models' validation chunks, checks that they
pick the same greedy tokens, and prints the medians and their ratio.

Usage::

    python scripts/bench_first_block.py --models checkpoints/lowdim/libero_spatial --threads 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from rsdlib.policies import checkpoints
from rsdlib.policies.packed import PackedChunks
from rsdlib.results import describe_device


@torch.no_grad()
def greedy_tokens(main, obs, *, first_in_prefix: bool) -> torch.Tensor:
    """Greedy layer tokens ``(B, L, N)``, layer 0 from the prefix pass or from a pass of its own."""
    B, L, N = obs.batch_size, main.L, main.N
    tokens = torch.zeros(B, L, N, dtype=torch.long, device=main.device)
    one = torch.ones(B, dtype=torch.long, device=main.device)
    if first_in_prefix:
        state, logits = main.prefix_and_first_block(obs)
        tokens[:, 0] = logits.argmax(-1)
    else:
        state = main.prefix(obs)
    for layer in range(1 if first_in_prefix else 0, L):
        logits = main.block_logits(state, tokens, one * layer, one)[:, 0]
        tokens[:, layer] = logits.argmax(-1)
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=Path, default=Path("checkpoints/lowdim/libero_spatial"))
    parser.add_argument("--chunks", type=int, default=50, help="validation chunks, decoded one at a time")
    parser.add_argument("--rounds", type=int, default=3, help="times each chunk is decoded each way")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    main_policy = checkpoints.load(args.models / "rfsq_ar")
    val = PackedChunks.load(args.models / "val_sample.npz")
    trunk = main_policy.config.trunk
    singles = [
        val.batch(torch.tensor([i]), trunk_config=trunk)["obs"] for i in range(min(args.chunks, len(val)))
    ]
    times: dict[bool, list[float]] = {True: [], False: []}
    same = 0
    for obs in singles[:3]:  # warm-up
        greedy_tokens(main_policy, obs, first_in_prefix=True)
        greedy_tokens(main_policy, obs, first_in_prefix=False)
    for obs in singles:
        out = {}
        for _ in range(args.rounds):
            for way in (True, False):  # alternate, so that drifting load hits both alike
                t0 = time.perf_counter()
                out[way] = greedy_tokens(main_policy, obs, first_in_prefix=way)
                times[way].append(time.perf_counter() - t0)
        same += bool(torch.equal(out[True], out[False]))
    new, old = 1e3 * np.median(times[True]), 1e3 * np.median(times[False])
    print(f"{describe_device('cpu')}; {len(singles)} chunks x {args.rounds}, batch 1")
    print(f"layer 0 in its own pass:   {old:6.2f} ms median ({main_policy.L} block passes after the prefix)")
    print(
        f"layer 0 in the prefix pass: {new:6.2f} ms median ({main_policy.L - 1} block passes after the prefix)"
    )
    print(f"ratio {old / new:.2f}x; same greedy tokens in {same} of {len(singles)} chunks")


if __name__ == "__main__":
    main()
