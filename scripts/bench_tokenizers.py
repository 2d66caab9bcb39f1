"""Encode and decode speed of the action tokenizers, in chunks per second, on this machine.

Usage::

    python scripts/bench_tokenizers.py                                   # tokenizers fitted here
    python scripts/bench_tokenizers.py --from-run results/action_tokenizers/<run>
    python scripts/bench_tokenizers.py --threads 2 --repeats 50

With ``--from-run`` it times the tokenizers notebook 02_action_tokenizers saved (RFSQ, every
FAST scale, binning) on that run's own kind of data. Without it, it fits RFSQ (briefly: speed
does not depend on how well the weights are trained), FAST and binning on the chunks it
times: held-out chunks of ``--demos-dir`` or, without it, synthetic expert-like chunks
(FAST's speed depends on its token counts, so the output says which). Prints the median and p90 over ``--repeats`` timed calls after warm-up,
for batch 1 and batch 256, plus the device, threads and versions. Timings only; it asserts
nothing about them.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from rsdlib.results import device_info, package_versions
from rsdlib.tokenizers import BinningTokenizer, FASTTokenizer, RFSQTokenizer, load_tokenizer
from rsdlib.tokenizers.data import load_source, split_episodes, synthetic_episodes


def time_call(fn, *, repeats: int, warmup: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def tokenizers_from_run(run: Path) -> dict:
    folder = run / "tokenizers"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist; run notebook 02_action_tokenizers first")
    return {path.name: load_tokenizer(path) for path in sorted(folder.iterdir()) if path.is_dir()}


def fitted_here(chunks: np.ndarray, args) -> dict:
    rfsq = RFSQTokenizer(
        num_latents=args.num_latents, num_layers=args.num_layers, levels=args.levels, hidden=args.hidden,
        depth=args.depth, steps=20,
    ).fit(chunks, progress=False)  # fmt: skip
    toks = {"rfsq": rfsq}
    for scale in (5, 10, 20):
        toks[f"fast_scale{scale}"] = FASTTokenizer(scale=scale, normaliser=rfsq.normaliser).fit(chunks)
    toks["binning"] = BinningTokenizer(normaliser=rfsq.normaliser).fit(chunks)
    return toks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from-run", type=Path, help="a results/action_tokenizers/<run> folder")
    parser.add_argument(
        "--demos-dir", type=Path, help="time on chunks of these demonstrations (default: synthetic)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--num-latents", type=int, default=4, help="RFSQ N when fitting here")
    parser.add_argument("--num-layers", type=int, default=4, help="RFSQ L when fitting here")
    parser.add_argument(
        "--levels", type=int, nargs="+", default=[2] * 10, help="RFSQ levels when fitting here"
    )
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--depth", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.demos_dir:
        source, episodes = load_source("demos", demos_dir=args.demos_dir)
    else:
        source, episodes = (
            "synthetic chunks",
            synthetic_episodes(40, generator=torch.Generator().manual_seed(0)),
        )
    data = split_episodes(episodes, held_out_fraction=0.25, horizon=8, seed=0, source=source)
    toks = tokenizers_from_run(args.from_run) if args.from_run else fitted_here(data.train, args)
    pool = data.held_out

    info = device_info()
    versions = package_versions(("torch", "numpy", "tokenizers", "vector-quantize-pytorch", "scipy"))
    print(f"device: {info['cpu']} ({info['cpu_count']} cores), torch threads {torch.get_num_threads()}, "
          f"float32, python {platform.python_version()}")  # fmt: skip
    print("versions:", ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(
        f"tokenizers: {'loaded from ' + str(args.from_run) if args.from_run else 'fitted here'}; timed on {source}"
    )
    if "rfsq" in toks:
        r = toks["rfsq"]
        print(f"rfsq: N={r.num_latents} L={r.num_layers} levels={r.levels} hidden={r.hidden} depth={r.depth} "
              f"({r.num_parameters()} parameters)")  # fmt: skip
    print(f"median (p90) over {args.repeats} calls after {args.warmup} warm-up calls; chunks per second\n")
    header = f"{'tokenizer':<16} {'batch':>5} {'encode chunks/s':>22} {'decode chunks/s':>22}"
    print(header)
    print("-" * len(header))
    for name, tok in toks.items():
        for batch in args.batches:
            chunks = torch.as_tensor(pool[:batch], dtype=torch.float32)
            ids = tok.encode(chunks)
            enc = time_call(lambda: tok.encode(chunks), repeats=args.repeats, warmup=args.warmup)  # noqa: B023
            dec = time_call(lambda: tok.decode(ids), repeats=args.repeats, warmup=args.warmup)  # noqa: B023

            def rate(times: list[float]) -> str:
                median, p90 = statistics.median(times), float(np.percentile(times, 90))
                return f"{batch / median:>10.0f} ({batch / p90:>8.0f})"  # noqa: B023

            print(f"{name:<16} {batch:>5} {rate(enc):>22} {rate(dec):>22}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
