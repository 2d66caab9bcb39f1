"""Eager against fixed-shape decoding (CUDA graphs on a GPU), side by side, batch 1.

For the shipped libero_spatial models (``--models``: ``rfsq_ar`` and ``head_drafter``, or the head
``--head``), and for random-weight main models of larger sizes (``--sizes``, as in
``bench_pass_costs.py``, with a random head), times per chunk, round robin over the methods:

- ``eager rfsq_ar``, ``eager rsd_head:gG:exact``, ``eager oracle gG``: the eager engine
  (:func:`decode_rfsq_ar`, :func:`speculative_decode`; the oracle replays plain greedy tokens);
- ``graphed rfsq_ar``, ``graphed rsd_head:gG:exact``, ``graphed oracle gG``: the same decodes on
  :class:`rsdlib.decoding.graphed.GraphedDecoder`, captured as CUDA graphs on a GPU;
- ``graphed floor``: the prefix pass and one block pass (what any decoding of this model costs).

Before timing, every chunk is decoded both ways and compared: tokens must equal plain greedy
and the main passes the eager engine's (in float32; in bfloat16 the agreement is reported, since
two kernels' rounding can flip a near tie). A float32 mismatch fails the script. The timed
region is the decode from a prepared batch on the device to the tokens (no detokenization,
which every method pays alike), bracketed by CUDA events on a GPU.

Usage::

    .venv/bin/python scripts/bench_graphed.py --device cpu --chunks 8 --runs 10
    python3 scripts/bench_graphed.py --device cuda --dtypes float32 bfloat16 --out R.json
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsdlib.decoding import decode_rfsq_ar, make_rule, speculative_decode
from rsdlib.decoding.graphed import GraphedDecoder
from rsdlib.policies import HeadDrafter, HeadDrafterConfig, PolicyConfig, ReplayDrafter, checkpoints
from rsdlib.policies.packed import PackedChunks
from rsdlib.results import describe_device, device_info

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pass_costs import DTYPES, SIZES, build_main  # noqa: E402  (a sibling script, not a package)


def load_models(args: argparse.Namespace, size: str, dtype: torch.dtype) -> tuple[Any, HeadDrafter]:
    """The shipped main policy and head (``size == "shipped"``), or random ones of ``size``."""
    if size == "shipped":
        main = checkpoints.load(args.models / "rfsq_ar").to(args.device, dtype).eval()
        head = checkpoints.load_drafter(args.head or args.models / "head_drafter", main=main)
        head = head.to(args.device, dtype).eval()
        return main, head
    shipped = PolicyConfig.from_dict(checkpoints.read_config(args.models / "rfsq_ar")["config"])
    main = build_main(shipped, size, device=args.device, dtype=dtype)
    head_cfg = HeadDrafterConfig.from_dict(checkpoints.read_config(args.models / "head_drafter")["config"])
    # its own embedding and output layer: a random main of another width has none it could share
    head_cfg = dataclasses.replace(head_cfg, trunk_hidden_size=main.trunk.hidden_size, shares_main_io=False)
    torch.manual_seed(1)
    with torch.device(args.device):
        head = HeadDrafter(config=head_cfg)
    return main, head.to(args.device, dtype).eval()


def parity(main, head, chunks: list, gammas: list[int]) -> tuple[dict[str, Any], list[torch.Tensor]]:
    """Decode every chunk eagerly and on fixed shapes; count agreements (tokens and passes)."""
    graphed_plain = GraphedDecoder(main)
    counts = {"chunks": len(chunks), "plain_tokens": 0}
    greedy = []
    for obs in chunks:
        eager = decode_rfsq_ar(main, obs).tokens
        greedy.append(eager)
        counts["plain_tokens"] += int(torch.equal(graphed_plain.plain(obs).tokens, eager))
    for gamma in gammas:
        with_head, oracle = (
            GraphedDecoder(main, head, gamma=gamma),
            GraphedDecoder(main, "replay", gamma=gamma),
        )
        same_tokens = same_passes = oracle_passes = 0
        for obs, eager in zip(chunks, greedy, strict=True):
            rsd = speculative_decode(main, head, obs, rule=make_rule("exact"), gamma=gamma)
            ours = with_head.rsd(obs)
            same_tokens += int(torch.equal(ours.tokens, eager))
            same_passes += int(ours.main_passes.tolist() == [t.main_passes for t in rsd.traces])
            best = math.ceil((main.L - 1) / (gamma + 1))
            oracle_passes += int(oracle.rsd(obs, replay=eager).main_passes.tolist() == [best])
        counts[f"g{gamma}"] = {
            "rsd_tokens": same_tokens,
            "rsd_passes": same_passes,
            "oracle_passes": oracle_passes,
        }
    return counts, greedy


def parity_ok(counts: dict[str, Any]) -> bool:
    n = counts["chunks"]
    per_gamma = [v for k, v in counts.items() if k.startswith("g")]
    return counts["plain_tokens"] == n and all(x == n for v in per_gamma for x in v.values())


def method_calls(main, head, gammas: list[int], greedy: list[torch.Tensor]) -> dict[str, Callable]:
    """name -> call(chunk index, obs): every method on one chunk (``greedy``: plain tokens per chunk)."""
    exact = make_rule("exact")
    plain = GraphedDecoder(main)
    calls: dict[str, Callable] = {
        "eager rfsq_ar": lambda i, obs: decode_rfsq_ar(main, obs),
        "graphed rfsq_ar": lambda i, obs: plain.plain(obs),
        "graphed floor": lambda i, obs: plain.floor(obs),
    }
    for gamma in gammas:
        with_head, oracle = (
            GraphedDecoder(main, head, gamma=gamma),
            GraphedDecoder(main, "replay", gamma=gamma),
        )
        calls |= {
            f"eager rsd_head:g{gamma}:exact": lambda i, obs, g=gamma: speculative_decode(
                main, head, obs, rule=exact, gamma=g
            ),
            f"graphed rsd_head:g{gamma}:exact": lambda i, obs, d=with_head: d.rsd(obs),
            f"eager oracle g{gamma}": lambda i, obs, g=gamma: speculative_decode(
                main, ReplayDrafter(tokens=greedy[i], codebook_size=main.V), obs, rule=exact, gamma=g
            ),
            f"graphed oracle g{gamma}": lambda i, obs, d=oracle: d.rsd(obs, replay=greedy[i]),
        }
    return calls


def mean_passes(main, head, name: str, chunks: list, greedy: list[torch.Tensor]) -> float | None:
    """Mean main passes after the prefix per chunk of a method (from the fixed-shape decoder)."""
    if name.endswith("floor"):
        return 1.0
    if name.endswith("rfsq_ar"):
        return float(main.L - 1)
    gamma = int(name.rsplit("g", 1)[1].split(":")[0])
    if "oracle" in name:
        return float(math.ceil((main.L - 1) / (gamma + 1)))
    decoder = GraphedDecoder(main, head, gamma=gamma)
    return float(np.mean([float(decoder.rsd(obs).main_passes.float().mean()) for obs in chunks]))


def elapsed_ms(call: Callable[[], Any], *, cuda: bool) -> float:
    """Milliseconds ``call`` takes: between CUDA events after the device is idle on a GPU (what
    it queued, finished), else wall time."""
    if cuda:
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    call()
    return 1e3 * (time.perf_counter() - t0)


def step_breakdown(
    main, head, chunks: list, gammas: list[int], *, runs: int, device: str
) -> tuple[dict, dict]:
    """Milliseconds (median) of each fixed-shape step on its own: the prefix, a plain block, an RSD
    round with each drafter, and the host's read of the done flag (after the GPU is idle: the read
    alone, not the wait for the round)."""
    cuda = device.startswith("cuda")
    decoders = {"plain": GraphedDecoder(main)}
    for gamma in gammas:
        decoders[f"head g{gamma}"] = GraphedDecoder(main, head, gamma=gamma)
        decoders[f"replay g{gamma}"] = GraphedDecoder(main, "replay", gamma=gamma)
    for name, decoder in decoders.items():  # make the buffers (and graphs)
        if name == "plain":
            decoder.plain(chunks[0])
        else:
            replay = torch.zeros(1, main.L, main.N, dtype=torch.long, device=main.device)
            decoder.rsd(chunks[0], **({"replay": replay} if name.startswith("replay") else {}))

    samples: dict[str, list[float]] = {}
    for run in range(runs):
        obs = chunks[run % len(chunks)]
        for name, decoder in decoders.items():
            decoder._load(obs)
            if name == "plain":
                samples.setdefault("prefix", []).append(elapsed_ms(decoder._runs["prefix"], cuda=cuda))
                samples.setdefault("block", []).append(elapsed_ms(decoder._runs["block"], cuda=cuda))
                continue
            decoder._runs["prefix"]()
            samples.setdefault(f"round {name}", []).append(elapsed_ms(decoder._runs["round"], cuda=cuda))
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            bool((decoder.committed >= decoder.L).all())
            samples.setdefault("flag read", []).append(1e3 * (time.perf_counter() - t0))
    return {name: statistics.median(s) for name, s in samples.items()}, decoders


def top_kernels(decoders: dict[str, GraphedDecoder], obs, *, device: str, top: int = 8) -> dict[str, list]:
    """The most expensive device kernels of one step replay per decoder (torch.profiler): where a
    step's time goes. On a CPU, the most expensive operators."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.startswith("cuda")
    out = {}
    for name, decoder in decoders.items():
        step = "block" if name == "plain" else "round"
        decoder._load(obs)
        decoder._runs["prefix"]()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            decoder._runs[step]()
            if cuda:
                torch.cuda.synchronize()
        key = "device_time_total" if cuda else "self_cpu_time_total"
        rows = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0.0), reverse=True)[:top]
        out[f"{step} {name}"] = [(e.key[:60], e.count, round(getattr(e, key, 0.0), 1)) for e in rows]
    return out


def time_methods(calls: dict[str, Callable], chunks: list, *, runs: int, warmup: int, device: str) -> dict:
    """Seconds per decode of each method, round robin; run r decodes chunk r mod len(chunks)."""
    cuda = device.startswith("cuda")
    samples: dict[str, list[float]] = {name: [] for name in calls}
    gc.disable()  # collection pauses would land on whichever method happened to run
    try:
        for run in range(warmup + runs):
            i = run % len(chunks)
            for name, call in calls.items():
                seconds = elapsed_ms(functools.partial(call, i, chunks[i]), cuda=cuda) / 1e3
                if run >= warmup:
                    samples[name].append(seconds)
            if run % 10 == 9:
                gc.collect()
    finally:
        gc.enable()
    return {
        name: {"median_ms": 1e3 * statistics.median(s), "p90_ms": 1e3 * float(np.percentile(s, 90))}
        for name, s in samples.items()
    }


def predicted_from_steps(
    rows: dict[str, dict[str, float]], steps: dict[str, float], L: int
) -> dict[str, float]:
    """The graphed methods' time as the sum of their steps timed alone (the cost model of the
    fixed-shape path): the prefix, then L-1 blocks (plain) or one round plus one flag read per
    main pass (RSD; every round is one pass)."""
    out = {
        "graphed rfsq_ar": steps["prefix"] + (L - 1) * steps["block"],
        "graphed floor": steps["prefix"] + steps["block"],
    }
    for name, r in rows.items():
        if name.startswith("graphed ") and "g" in name.split()[-1]:
            gamma = name.rsplit("g", 1)[1].split(":")[0]
            drafter = "replay" if "oracle" in name else "head"
            out[name] = steps["prefix"] + r["passes"] * (
                steps[f"round {drafter} g{gamma}"] + steps["flag read"]
            )
    return out


def print_table(title: str, rows: dict[str, dict[str, float]]) -> None:
    eager, graphed, floor = (
        rows[k]["median_ms"] for k in ("eager rfsq_ar", "graphed rfsq_ar", "graphed floor")
    )
    print(f"\n{title}")
    print(f"   {'method':34} {'median ms':>9} {'p90 ms':>8} {'passes':>6} {'x eager plain':>13} "
          f"{'x graphed plain':>15} {'/floor':>6}")  # fmt: skip
    for name, r in rows.items():
        m = r["median_ms"]
        print(f"   {name:34} {m:9.3f} {r['p90_ms']:8.3f} {r['passes']:6.2f} {eager / m:12.2f}x "
              f"{graphed / m:14.2f}x {m / floor:6.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=Path, default=Path("checkpoints/lowdim/libero_spatial"))
    parser.add_argument(
        "--head", type=Path, default=None, help="the head drafter (default: <models>/head_drafter)"
    )
    parser.add_argument("--sizes", nargs="*", default=None, choices=["shipped", *SIZES],
                        help="default: shipped (on cuda also h512 h1024)")  # fmt: skip
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=None,
                        help="default: float32 (on cuda also bfloat16)")  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gammas", nargs="+", type=int, default=[2, 3])
    parser.add_argument("--chunks", type=int, default=32, help="validation chunks (parity and timing)")
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="print each step's most expensive kernels")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        parser.error(f"--device {args.device}, but torch {torch.__version__} sees no CUDA device")
    torch.set_num_threads(args.threads)
    sizes = args.sizes or (["shipped", "h512", "h1024"] if cuda else ["shipped"])
    dtypes = args.dtypes or (["float32", "bfloat16"] if cuda else ["float32"])
    val = PackedChunks.load(args.models / "val_sample.npz")
    n = min(args.chunks, len(val))
    print(f"device: {describe_device(args.device)}; batch 1; {args.runs} timed decodes per method after "
          f"{args.warmup} warm-up, round robin over {n} validation chunks; gammas {args.gammas}")  # fmt: skip
    results, failed = [], []
    for size in sizes:
        for dtype_name in dtypes:
            main_policy, head = load_models(args, size, DTYPES[dtype_name])
            chunks = [
                main_policy.prepare(
                    val.batch(torch.tensor([i]), trunk_config=main_policy.config.trunk)["obs"]
                )
                for i in range(n)
            ]
            t0 = time.perf_counter()
            counts, greedy = parity(main_policy, head, chunks, args.gammas)
            ok = parity_ok(counts)
            print(f"\n== {size} {dtype_name}: parity over {n} chunks ({time.perf_counter() - t0:.1f} s): "
                  f"{json.dumps(counts)} -> {'equal' if ok else 'MISMATCH'}")  # fmt: skip
            if not ok and dtype_name == "float32":
                failed.append(f"{size} {dtype_name}")
            calls = method_calls(main_policy, head, args.gammas, greedy)
            rows = time_methods(calls, chunks, runs=args.runs, warmup=args.warmup, device=args.device)
            for name in rows:
                rows[name]["passes"] = mean_passes(main_policy, head, name, chunks, greedy)
            print_table(f"{size} {dtype_name} ({sum(p.numel() for p in main_policy.parameters()) / 1e6:.1f}M "
                        f"main parameters)", rows)  # fmt: skip
            steps, decoders = step_breakdown(
                main_policy, head, chunks, args.gammas, runs=args.runs, device=args.device
            )
            print(
                "   fixed-shape steps alone, median ms: "
                + ", ".join(f"{k} {v:.3f}" for k, v in steps.items())
            )
            predicted = predicted_from_steps(rows, steps, main_policy.L)
            print("   sum of steps against measured, ms: " + ", ".join(
                f"{k.removeprefix('graphed ')} {v:.3f}/{rows[k]['median_ms']:.3f}" for k, v in predicted.items()
            ))  # fmt: skip
            kernels = {}
            if args.profile:
                try:
                    kernels = top_kernels(decoders, chunks[0], device=args.device)
                except Exception as err:  # a diagnostic: its failure must not cost the timings
                    kernels = {"error": repr(err)}
                for step, top in kernels.items():
                    print(f"   top kernels, {step} (us total): {top}")
            results.append(
                {"size": size, "dtype": dtype_name, "parity": counts, "parity_ok": ok, "rows": rows, "steps_ms": steps,
                 "top_kernels": kernels, "predicted_ms": predicted}
            )  # fmt: skip
            del main_policy, head, chunks, calls
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
    print("\npasses: main passes after the prefix per chunk (mean); x eager/graphed plain: speedup over plain "
          "rfsq_ar decoded that way; /floor: median over the graphed prefix + one block pass.")  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"device": describe_device(args.device), "device_info": device_info(), "torch": torch.__version__,
               "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "results": results}  # fmt: skip
        args.out.write_text(json.dumps(doc, indent=1))
        print(f"wrote {args.out}")
    if failed:
        sys.exit(
            f"float32 parity failed for {', '.join(failed)}: the fixed-shape path disagrees with the eager one"
        )


if __name__ == "__main__":
    main()
