"""Every decoding method with the trained models on validation chunks: acceptance, cost, error.

For each method (plain ``rfsq_ar``, ``rfsq_parallel``, ``l1_regression``, ``fast_ar``, and RSD for
each drafter, gamma and acceptance rule), on validation chunks the models never trained on:

- batched over the chunks: acceptance per RFSQ layer, accepted layers and main passes per chunk,
  the speedup those rates predict, and the action error (mean absolute, environment units) against
  the demonstration and against plain greedy ``rfsq_ar`` (zero for a lossless rule);
- batch 1, one chunk after another, round robin over the methods: decode latency (median, p90),
  speedup over plain ``rfsq_ar`` and ratio to the floor (one prefix pass plus one block pass).

Usage::

    python scripts/bench_rsd.py --models checkpoints/lowdim/libero_spatial --chunks 128 --latency-chunks 50
    python scripts/bench_rsd.py --models M --val prepared/val.npz --device cuda   # on a GPU
    python scripts/bench_rsd.py --models M --drafters --specs rfsq_ar+learned:0.025 rsd_head:g2:exact+learned:0.025
    python scripts/bench_rsd.py --models M --device cuda --fixed rfsq_ar rsd_head:g2:exact   # + fixed-shape engine
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rsdlib.experiments.benchmark import ModelSet, latency_rows, merge_rows, quality_rows
from rsdlib.policies.packed import PackedChunks
from rsdlib.results import describe_device

DEFAULT_RULES = (
    "exact",
    "match_rate:0.75",
    "match_rate:0.5",
    "action_tolerance:0.05",
    "action_tolerance:0.2",
)


def print_rows(rows: list[dict]) -> None:
    cols = [("acc/layer", 24), ("acc.L", 5), ("pass", 5), ("pred", 5), ("p.t", 5), ("med ms", 7), ("p90", 7),
            ("x plain", 7), ("/floor", 6), ("MAE demo", 8), ("vs plain", 8)]  # fmt: skip
    print(f"{'method':<52} " + " ".join(f"{c:>{w}}" for c, w in cols))
    for r in rows:
        acc = " ".join("-" if a is None else f"{a:.2f}" for a in r.get("acceptance_per_layer", []))
        f = lambda k, spec, r=r: format(r[k], spec) if r.get(k) is not None else ""  # noqa: E731
        values = [acc, f("accepted_layers_per_chunk", ".2f"), f("main_passes_per_chunk", ".2f"),
                  f("predicted_speedup_passes", ".2f"), f("predicted_speedup_time", ".2f"), f("latency_median_ms", ".2f"),
                  f("latency_p90_ms", ".2f"), f("speedup_vs_plain", ".2f"), f("ratio_to_floor", ".2f"),
                  f("mae_demo", ".4f"), f("mae_vs_plain", ".4f")]  # fmt: skip
        print(f"{r['method']:<52} " + " ".join(f"{v:>{w}}" for v, (_, w) in zip(values, cols, strict=True)))
    print(
        "acc/layer: drafted tokens accepted per RFSQ layer; acc.L: accepted layers per chunk; pass: main passes "
        "after the prefix; pred: L / expected passes; p.t: predicted from the measured prefix, draft and pass "
        "times; x plain: measured median speedup over plain rfsq_ar; /floor: median over one prefix + one block "
        "pass; MAE: mean absolute action error (env units) against the demonstration and against plain rfsq_ar."
    )
    steps = sorted({k for r in rows for k in r.get("step_ms", {})})
    if steps:
        print("\nwhere the time goes (median ms per decode, batch 1):")
        print(f"{'method':<52} " + " ".join(f"{k:>10}" for k in steps))
        for r in rows:
            cells = [r.get("step_ms", {}).get(k) for k in steps]
            print(
                f"{r['method']:<52} "
                + " ".join(f"{'' if c is None else format(c, '.2f'):>10}" for c in cells)
            )


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=Path, default=Path("checkpoints/lowdim/libero_spatial"))
    parser.add_argument(
        "--val", type=Path, default=None, help="packed chunks (default: <models>/val_sample.npz)"
    )
    parser.add_argument("--chunks", type=int, default=128, help="validation chunks for acceptance and error")
    parser.add_argument(
        "--latency-chunks", type=int, default=50, help="chunks decoded one at a time, timed (0: no timing)"
    )
    parser.add_argument("--gammas", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--rules", nargs="+", default=list(DEFAULT_RULES))
    parser.add_argument("--drafters", nargs="*", default=["head", "tiny"], help="none: only --specs")
    parser.add_argument(
        "--specs", nargs="*", default=[],
        help="more method specs, e.g. adaptive depth: rfsq_ar+learned:0.025 rsd_head:g2:exact+learned:0.025",
    )  # fmt: skip
    parser.add_argument(
        "--fixed", nargs="*", default=[],
        help="specs also timed on the fixed-shape engine (CUDA graphs on a GPU), e.g. rfsq_ar rsd_head:g2:exact",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = ModelSet(args.models, args.device)
    val = PackedChunks.load(args.val or args.models / "val_sample.npz")
    val = val.subset(range(min(args.chunks, len(val)))).to(args.device)
    specs = [f"rsd_{d}:g{g}:{r}" for d in args.drafters for g in args.gammas for r in args.rules] + args.specs
    batch = val.batch(torch.arange(len(val), device=args.device), trunk_config=models.trunk)
    quality = quality_rows(models, batch, specs)
    singles = [
        val.batch(torch.tensor([i], device=args.device), trunk_config=models.trunk)["obs"]
        for i in range(min(args.latency_chunks, len(val)))
    ]
    latency = latency_rows(models, singles, specs, fixed=args.fixed) if singles else []
    rows = merge_rows(quality, latency)
    print(
        f"device: {describe_device(args.device)}; {len(val)} validation chunks; {len(singles)} timed one at a time"
    )
    print_rows(rows)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        info = {"device": describe_device(args.device), "args": {k: str(v) for k, v in vars(args).items()}}
        args.out.write_text(json.dumps(info | {"rows": rows}, indent=1))


if __name__ == "__main__":
    main()
