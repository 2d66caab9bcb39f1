"""Main-pass costs by model size and dtype, and the RSD speedup they predict (the cost model).

For Llama-style main models (``rfsq_ar`` on the shipped lowdim trunk, widened; random weights:
timings do not depend on training), batch 1, measures the median and p90 wall time of

- ``prefix``: the prefix pass alone;
- ``prefix+b0``: the prefix pass with block 0 (layer 0) in it, as decoding runs it;
- ``block``: one block pass (N positions) after the prefix and block 0, as plain decoding runs it;
- ``verify k``: one pass over blocks 1 .. k after the prefix and block 0, as RSD's verify pass
  runs it (k = 2, 3, 4; with L = 4 only k <= 3 occur; k = 4 is timed with the fourth block as
  padding, which costs the same positions);

each with the KV cache as the decoder uses it (passes after the first are appended to the cache
and cropped again). On CUDA the timed region is bracketed by ``torch.cuda.Event`` records with a
synchronisation before and after it only. Then :func:`rsdlib.decoding.cost_model.predicted_speedup` turns the measured
costs and per-layer acceptance rates into the speedup of RSD over plain decoding.

Sizes (``--sizes``; parameters of the whole ``rfsq_ar`` policy, L=4, N=4, V=1024, prefix 28 tokens):

    name    hidden  layers  heads  MLP    params
    h128      128      4      4     384     1.8M   (the shipped lowdim main model)
    h256      256      6      4     768     7.0M
    h512      512      8      8    1536    31.3M
    h1024    1024     16     16    2816   214.0M
    h2048    2048     20     16    5632  1046.8M

Usage::

    .venv/bin/python scripts/bench_pass_costs.py --device cpu --sizes h128 h256 --runs 3
    .venv/bin/python scripts/bench_pass_costs.py --device cuda --dtypes float32 bfloat16 --out R.json
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from rsdlib.decoding.cost_model import predicted_speedup
from rsdlib.policies import PolicyConfig, build_policy, checkpoints
from rsdlib.policies.heads import RFSQAutoregressive
from rsdlib.policies.packed import PackedChunks
from rsdlib.policies.processor import ObservationBatch
from rsdlib.results import describe_device, device_info

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decoding import count_params, stats  # noqa: E402  (a sibling script, not a package)

#: name -> (hidden_size, num_layers, num_heads, intermediate_size); head dim 64, 128 at 2048.
SIZES: dict[str, tuple[int, int, int, int]] = {
    "h128": (128, 4, 4, 384),
    "h256": (256, 6, 4, 768),
    "h512": (512, 8, 8, 1536),
    "h1024": (1024, 16, 16, 2816),
    "h2048": (2048, 20, 16, 5632),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SHORT_DTYPE = {"float32": "fp32", "bfloat16": "bf16"}
VERIFY_BLOCKS = (2, 3, 4)
#: Illustrative per-layer acceptance rates (not measured): perfect, good, middling, none.
DEFAULT_ACCEPTANCE = ("1.0", "0.8", "0.5", "0.0")


def parse_acceptance(text: str, num_layers: int) -> list[float | None]:
    """``"0.8"`` (every drafted layer) or ``"0.9,0.8,0.7"`` (layers 1 .. L-1) as an ``(L,)`` list
    with layer 0 (decoded by the prefix pass, never drafted) None."""
    values = [float(x) for x in text.split(",")]
    drafted = num_layers - 1
    if len(values) == 1:
        values = values * drafted
    if len(values) != drafted:
        raise ValueError(
            f"--acceptance {text!r}: give one rate, or {drafted} comma-separated rates (layers 1..{drafted})"
        )
    return [None, *values]


def build_main(shipped: PolicyConfig, size: str, *, device: str, dtype: torch.dtype) -> RFSQAutoregressive:
    """A random-weight ``rfsq_ar`` policy with the shipped config's inputs and ``size``'s trunk."""
    hidden, layers, heads, mlp = SIZES[size]
    trunk = dataclasses.replace(
        shipped.trunk, hidden_size=hidden, num_layers=layers, num_heads=heads, intermediate_size=mlp
    )
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: a 1B model is slow to initialise on a CPU
        main = build_policy(dataclasses.replace(shipped, trunk=trunk))
    return main.to(device=device, dtype=dtype).eval()


def time_calls(
    calls: Mapping[str, tuple[Callable[[], Any], Callable[[], Any] | None]],
    *,
    runs: int,
    warmup: int,
    device: str,
) -> dict[str, list[float]]:
    """Seconds per call of each ``(call, reset)``, round robin (drifting load hits all alike),
    with garbage collection off inside timed calls (as timeit does); ``reset`` runs untimed after
    its call."""
    cuda = device.startswith("cuda")
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for run in range(warmup + runs):
        gc.enable()
        gc.collect()
        gc.disable()
        first = next(iter(calls.values()))
        first[0]()  # untimed: warms the caches the collection cooled, so no entry pays for it
        if first[1] is not None:
            first[1]()
        for name, (call, reset) in calls.items():
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                call()
                end.record()
                end.synchronize()
                seconds = start.elapsed_time(end) / 1e3
            else:
                t0 = time.perf_counter()
                call()
                seconds = time.perf_counter() - t0
            if reset is not None:
                reset()
            if run >= warmup:
                samples[name].append(seconds)
    gc.enable()
    return samples


@torch.no_grad()
def bench_model(main: RFSQAutoregressive, obs: ObservationBatch, *, runs: int, warmup: int) -> dict[str, Any]:
    """Median and p90 ms of the prefix, block and verify passes of ``main`` on ``obs`` (batch 1)."""
    device = main.device
    one = torch.ones(1, dtype=torch.long, device=device)
    tokens = torch.zeros(1, main.L, main.N, dtype=torch.long, device=device)
    state, _ = main.prefix_and_first_block(obs)  # what every later pass runs after

    def after_block0(k: int) -> tuple[Callable[[], Any], Callable[[], Any]]:
        return (
            lambda: main.block_logits(state, tokens, one, one * k),
            lambda: main.trunk.truncate(state, one),
        )

    calls = {
        "prefix": (lambda: main.prefix(obs), None),
        "prefix+b0": (lambda: main.prefix_and_first_block(obs), None),
        "block": after_block0(1),
    } | {f"verify {k}": after_block0(k) for k in VERIFY_BLOCKS}
    samples = time_calls(calls, runs=runs, warmup=warmup, device=str(device))
    return {name: stats(s) for name, s in samples.items()}


def predictions(
    passes: Mapping[str, Mapping[str, float]], profiles: Mapping[str, list[float | None]], *, draft_ms: float
) -> dict[str, dict[int, float]]:
    """Predicted speedup per acceptance profile and gamma (1 .. L-1) from measured medians."""
    pass_ms = {1: passes["block"]["median_ms"]} | {
        k: passes[f"verify {k}"]["median_ms"] for k in VERIFY_BLOCKS
    }
    out: dict[str, dict[int, float]] = {}
    for label, acceptance in profiles.items():
        out[label] = {
            gamma: predicted_speedup(
                acceptance,
                gamma=gamma,
                first_pass_ms=passes["prefix+b0"]["median_ms"],
                pass_ms=pass_ms,
                draft_ms=draft_ms,
            )
            for gamma in range(1, len(acceptance))
        }
    return out


def table_columns(labels: list[str]) -> list[str]:
    verify = [f"v{k}" for k in VERIFY_BLOCKS]
    head = ["size", "params", "dtype", "prefix", "pre+b0", "block", *verify, *(f"{v}/blk" for v in verify)]
    return head + [f"a={label}" for label in labels]


def print_row(r: dict[str, Any], *, labels: list[str], gamma: int) -> None:
    """One row of the table, printed as soon as its size is measured (a long sweep shows progress,
    and a run stopped at its time limit keeps what it measured)."""
    widths = [max(6, len(h)) for h in table_columns(labels)]
    p = {name: s["median_ms"] for name, s in r["passes"].items()}
    cells = [r["size"], f"{r['params'] / 1e6:.1f}M", SHORT_DTYPE[r["dtype"]]]
    cells += [f"{p[k]:.3f}" for k in ("prefix", "prefix+b0", "block")]
    cells += [f"{p[f'verify {k}']:.3f}" for k in VERIFY_BLOCKS]
    cells += [f"{p[f'verify {k}'] / p['block']:.2f}" for k in VERIFY_BLOCKS]
    cells += [f"{r['predicted_speedup'][label][gamma]:.2f}x" for label in labels]
    print("  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)), flush=True)


def write_json(
    args: argparse.Namespace, rows: list[dict[str, Any]], *, profiles, shipped: PolicyConfig
) -> None:
    """The sweep so far as JSON at ``args.out``."""
    L = shipped.actions.num_layers
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "device": describe_device(args.device),
        "device_info": device_info(),
        "torch": torch.__version__,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "acceptance_profiles": {
            "rates": profiles,
            "note": "illustrative, not measured" if args.acceptance == list(DEFAULT_ACCEPTANCE) else "given",
        },
        "L": L,
        "N": shipped.actions.num_latents,
        "V": shipped.actions.codebook_size,
        "prefix_tokens": shipped.trunk.prefix_length,
        "results": rows,
    }
    args.out.write_text(json.dumps(doc, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", nargs="+", choices=list(SIZES), default=None, help="default: all on cuda, h128 h256 on cpu"
    )
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["float32"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--acceptance",
        nargs="+",
        default=list(DEFAULT_ACCEPTANCE),
        help="acceptance profiles to predict with: one rate for every drafted layer, or L-1 comma-separated "
        "rates (layers 1..L-1); the default ones are illustrative, not measured",
    )
    parser.add_argument(
        "--gamma", type=int, default=2, help="layers drafted per round in the printed predictions"
    )
    parser.add_argument(
        "--draft-ms", type=float, default=0.0, help="drafting cost per round (default: excluded)"
    )
    parser.add_argument(
        "--models", type=Path, default=Path("checkpoints/lowdim/libero_spatial"),
        help="shipped models: their rfsq_ar config (inputs, L, N, V) and val_sample.npz (one observation)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(
            f"--device {args.device} asked, but torch {torch.__version__} sees no CUDA device "
            f"({'a CPU-only build' if torch.version.cuda is None else 'no GPU visible'}): run on a GPU "
            "machine with a CUDA build of torch, or pass --device cpu"
        )
    torch.set_num_threads(args.threads)
    sizes = args.sizes or (list(SIZES) if args.device.startswith("cuda") else ["h128", "h256"])
    dtypes = list(args.dtypes)
    if args.device.startswith("cuda") and "bfloat16" in dtypes and not torch.cuda.is_bf16_supported():
        print(f"skipping bfloat16: {torch.cuda.get_device_name()} does not support it natively")
        dtypes.remove("bfloat16")

    shipped = PolicyConfig.from_dict(checkpoints.read_config(args.models / "rfsq_ar")["config"])
    L = shipped.actions.num_layers
    try:
        profiles = {text: parse_acceptance(text, L) for text in args.acceptance}
    except ValueError as err:
        parser.error(str(err))
    if not 1 <= args.gamma <= L - 1:
        parser.error(f"--gamma ({args.gamma}) must be in 1..{L - 1}")
    val = PackedChunks.load(args.models / "val_sample.npz")
    print(
        f"device: {describe_device(args.device)}; batch 1; {args.runs} runs after {args.warmup} warm-up; "
        f"random weights; L={L} N={shipped.actions.num_latents} V={shipped.actions.codebook_size}, "
        f"prefix {shipped.trunk.prefix_length} tokens"
    )
    labels = list(profiles)
    print("  ".join(h.rjust(max(6, len(h))) for h in table_columns(labels)), flush=True)
    rows = []
    for size in sizes:
        for name in dtypes:
            started = time.perf_counter()
            main_policy = build_main(shipped, size, device=args.device, dtype=DTYPES[name])
            built = time.perf_counter() - started
            obs = main_policy.prepare(
                val.batch(torch.tensor([0]), trunk_config=main_policy.config.trunk)["obs"]
            )
            passes = bench_model(main_policy, obs, runs=args.runs, warmup=args.warmup)
            hidden, layers, heads, mlp = SIZES[size]
            rows.append(
                {
                    "size": size,
                    "config": {"hidden_size": hidden, "num_layers": layers, "num_heads": heads,
                               "intermediate_size": mlp},
                    "params": count_params(main_policy),
                    "dtype": name,
                    "passes": passes,
                    "verify_over_block": {
                        k: passes[f"verify {k}"]["median_ms"] / passes["block"]["median_ms"] for k in VERIFY_BLOCKS
                    },
                    "predicted_speedup": predictions(passes, profiles, draft_ms=args.draft_ms),
                }
            )  # fmt: skip
            rows[-1]["seconds"] = {"build": built, "total": time.perf_counter() - started}
            print_row(rows[-1], labels=labels, gamma=args.gamma)
            if args.out:  # after every row: a sweep stopped at its time limit keeps what it measured
                write_json(args, rows, profiles=profiles, shipped=shipped)
            del main_policy, obs
            gc.collect()
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    print(
        f"\nmedian ms (p90 in the JSON); vK: verify pass over K blocks; vK/blk: its cost over one block pass; "
        f"a=...: predicted RSD speedup at gamma={args.gamma} for these per-layer acceptance rates "
        f"({'illustrative, not measured' if args.acceptance == list(DEFAULT_ACCEPTANCE) else 'as given'}), "
        f"plain = prefix+b0 + {L - 1} block passes, drafting {args.draft_ms} ms per round."
    )
    if args.out:
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
