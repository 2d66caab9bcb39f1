"""Decoding latency per method, batch 1: one prefix pass, one block pass, one full decode.

Measures, on a tiny and a default-sized model (random weights: timings do not depend on
training, acceptance does), the median and p90 wall time over many runs after warm-up of

- one prefix pass, one block pass (N positions) and one verify pass (gamma + 1 blocks);
- a full chunk decode for plain ``rfsq_ar``, ``rfsq_parallel``, ``l1_regression``, ``fast_ar``,
  and RSD (``exact`` rule) with several drafters: ``replay`` (the greedy tokens, an oracle that
  is free and always right: the ceiling of pass reduction), ``self`` (the main model drafting
  for itself: everything accepted, drafting costs main passes), ``random``, the untrained
  ``head`` and ``tiny_policy`` drafters (acceptance near zero until trained: a cost floor), and a
  ``head`` drafter distilled for ``--distill-steps`` on the benchmark observation (it memorises
  one observation: its acceptance is an upper bound, its cost is that of a real head drafter).

Prints measured figures and ratios side by side: each method against plain ``rfsq_ar`` and
against the floor (one prefix pass plus one block pass), with the speedup the pass counts
predict beside the measured one. These machines are noisy: compare ratios within one run.

Usage:
    .venv/bin/python scripts/bench_decoding.py --sizes tiny default --runs 50 --gamma 2
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsdlib.decoding import (
    decode_fast_ar,
    decode_l1_regression,
    decode_rfsq_ar,
    decode_rfsq_parallel,
    make_rule,
    speculative_decode,
)
from rsdlib.policies import (
    ActionSpace,
    HeadDrafter,
    HeadDrafterConfig,
    PolicyConfig,
    PolicyDrafter,
    RandomDrafter,
    ReplayDrafter,
    TrunkConfig,
    build_instruction_vocab,
    build_policy,
)
from rsdlib.results import device_info

INSTRUCTIONS = ("pick up the black bowl between the plate and the ramekin and place it on the plate",)

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "trunk": {"hidden_size": 16, "num_layers": 2, "num_heads": 2, "intermediate_size": 32, "image_size": 16,
                  "image_channels": (4, 8), "max_instruction_tokens": 8},
        "drafter_trunk": {"hidden_size": 8, "num_layers": 1, "num_heads": 2, "intermediate_size": 16,
                          "image_size": 16, "image_channels": (4, 8), "max_instruction_tokens": 8},
        "actions": {"num_layers": 3, "num_latents": 2, "codebook_size": 6, "fast_vocab": 16, "fast_max_tokens": 12},
    },
    "default": {
        "trunk": {},
        "drafter_trunk": {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "intermediate_size": 128,
                          "image_channels": (8, 16, 32, 32, 64)},
        "actions": {"num_layers": 4, "num_latents": 4, "codebook_size": 1024, "fast_vocab": 1024,
                    "fast_max_tokens": 40},
    },
}  # fmt: skip


def _shipped() -> dict[str, Any]:
    """The sizes of the shipped models (rsdlib.experiments.train_models.Sizes) with the default tokenizers."""
    from dataclasses import asdict

    from rsdlib.experiments.train_models import Sizes

    keep = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "image_size", "image_channels")
    sizes = Sizes()
    return {
        "trunk": {k: v for k, v in asdict(sizes.main).items() if k in keep},
        "drafter_trunk": {k: v for k, v in asdict(sizes.tiny).items() if k in keep},
        "actions": SIZES["default"]["actions"],
    }


SIZES["shipped"] = _shipped()


def stats(samples: list[float]) -> dict[str, float]:
    return {"median_ms": 1e3 * statistics.median(samples), "p90_ms": 1e3 * float(np.percentile(samples, 90))}


def build(size: str, seed: int = 0) -> dict[str, Any]:
    spec = SIZES[size]
    vocab = build_instruction_vocab(INSTRUCTIONS)
    trunk = TrunkConfig(**spec["trunk"], instruction_vocab=vocab)
    small = TrunkConfig(**spec["drafter_trunk"], instruction_vocab=vocab)
    actions = ActionSpace(**spec["actions"])
    torch.manual_seed(seed)
    models = {
        head: build_policy(PolicyConfig(head=head, trunk=trunk, actions=actions)).eval()
        for head in ("rfsq_ar", "rfsq_parallel", "l1_regression", "fast_ar")
    }
    models["tiny_policy"] = build_policy(PolicyConfig(head="rfsq_ar", trunk=small, actions=actions)).eval()
    hd = HeadDrafterConfig(
        trunk_hidden_size=trunk.hidden_size, hidden_size=trunk.hidden_size, actions=actions
    )
    models["head"] = HeadDrafter(config=hd).eval()
    rng = np.random.default_rng(seed)
    s = trunk.image_size
    obs = [
        {
            "agentview_rgb": rng.integers(0, 256, (s, s, 3), dtype=np.uint8),
            "eye_in_hand_rgb": rng.integers(0, 256, (s, s, 3), dtype=np.uint8),
            "proprio": rng.normal(size=8).astype(np.float32),
            "instruction": INSTRUCTIONS[0],
        }
    ]
    return {"models": models, "obs": models["rfsq_ar"].prepare(obs), "trunk": trunk, "actions": actions}


def distill_head(head: HeadDrafter, main: Any, obs: Any, greedy: torch.Tensor, *, steps: int) -> HeadDrafter:
    """A copy of ``head`` distilled on the main policy's greedy tokens for this one observation.

    It memorises one observation, so its acceptance is an upper bound; what it shows is the
    speed of RSD with a learned head drafter that agrees with the main policy.
    """
    import copy
    import tempfile

    from rsdlib.policies import head_drafter_loss
    from rsdlib.train import TrainConfig, train

    head = copy.deepcopy(head)
    with tempfile.TemporaryDirectory() as tmp, torch.enable_grad():
        train(
            head,
            batches=lambda step, gen: {"obs": obs, "tokens": greedy},
            loss_fn=head_drafter_loss(main, head),
            config=TrainConfig(
                steps=steps, lr=3e-3, warmup_steps=min(10, steps), progress=False, log_every=steps
            ),
            run_dir=tmp,
        )
    return head.eval()


def count_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in m.named_parameters() if "embed_tokens" not in n)


@torch.no_grad()
def bench_size(
    size: str, *, runs: int, warmup: int, gamma: int, distill_steps: int = 0, device: str = "cpu"
) -> dict[str, Any]:
    setup = build(size)
    models, obs, actions = setup["models"], setup["obs"].to(device), setup["actions"]
    for m in models.values():
        m.to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    main = models["rfsq_ar"]
    L, N, V = actions.num_layers, actions.num_latents, actions.codebook_size
    zeros = torch.zeros(1, L, N, dtype=torch.long, device=device)
    state = main.prefix(obs)
    start = torch.zeros(1, dtype=torch.long, device=device)
    verify_name = f"verify pass ({min(gamma + 1, L)} blocks)"
    # Single passes: (call, reset after it, untimed). A block pass runs after a held prefix.
    single: dict[str, tuple[Callable[[], Any], Callable[[], Any] | None]] = {
        "prefix pass": (lambda: main.prefix(obs), None),
        "block pass (N)": (
            lambda: main.block_logits(state, zeros, start, torch.ones(1, dtype=torch.long, device=device)),
            lambda: main.trunk.truncate(state, start),
        ),
        verify_name: (
            lambda: main.block_logits(state, zeros, start, torch.tensor([min(gamma + 1, L)], device=device)),
            lambda: main.trunk.truncate(state, start),
        ),
    }

    greedy = decode_rfsq_ar(main, obs).tokens
    exact = make_rule("exact")
    methods: dict[str, Callable[[], Any]] = {
        "rfsq_ar (plain)": lambda: decode_rfsq_ar(main, obs),
        "rfsq_parallel": lambda: decode_rfsq_parallel(models["rfsq_parallel"], obs),
        "l1_regression": lambda: decode_l1_regression(models["l1_regression"], obs),
        "fast_ar (untrained: runs to the cap)": lambda: decode_fast_ar(models["fast_ar"], obs),
    }
    drafters = {
        "replay oracle": lambda: ReplayDrafter(tokens=greedy, codebook_size=V),
        "self (main drafts)": lambda: PolicyDrafter(policy=main),
        "random": lambda: RandomDrafter(num_layers=L, num_latents=N, codebook_size=V, seed=0),
        "head (untrained)": lambda: models["head"],
        "tiny_policy (untrained)": lambda: PolicyDrafter(policy=models["tiny_policy"]),
    }
    if distill_steps:
        distilled = distill_head(models["head"], main, obs, greedy, steps=distill_steps)
        drafters["head (distilled on this obs.)"] = lambda: distilled
    for name, make in drafters.items():
        methods[f"RSD exact g={gamma}, {name}"] = lambda make=make: speculative_decode(
            main, make(), obs, rule=exact, gamma=gamma
        )
    # Round robin: every run times each pass and each method once, so drifting load (these
    # machines are shared) hits all of them alike.
    entries = {name: call for name, call in single.items()} | {
        name: (fn, None) for name, fn in methods.items()
    }
    samples: dict[str, list[float]] = {name: [] for name in entries}
    for run in range(warmup + runs):
        # As timeit does: no garbage collection inside timed calls. Collect once per round, then
        # warm the caches with an untimed pass so no entry pays for the collection.
        gc.enable()
        gc.collect()
        gc.disable()
        main.prefix(obs)
        for name, (fn, reset) in entries.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()  # a GPU runs asynchronously: time until its work is done
            dt = time.perf_counter() - t0
            if reset is not None:
                reset()
            if run >= warmup:
                samples[name].append(dt)
    gc.enable()
    passes = {name: stats(samples[name]) for name in single}
    floor_ms = passes["prefix pass"]["median_ms"] + passes["block pass (N)"]["median_ms"]
    rows = []
    base = None
    for name, fn in methods.items():
        result = fn()
        t = result.traces[0]
        if name.startswith("RSD"):
            assert torch.equal(result.tokens, greedy), f"{name} changed the greedy tokens"
        s = stats(samples[name])
        row = {"method": name, **s, "main_passes": t.main_passes, "accepted_layers": t.accepted_layers}
        if base is None:
            base = s["median_ms"]
        row["speedup_vs_plain"] = base / s["median_ms"]
        row["ratio_to_floor"] = s["median_ms"] / floor_ms
        if name.startswith("RSD"):
            row["predicted_speedup_passes"] = L / t.main_passes
            # With the measured pass times: a verify pass runs gamma + 1 blocks, a plain pass one.
            prefix_ms = passes["prefix pass"]["median_ms"]
            plain_ms = prefix_ms + L * passes["block pass (N)"]["median_ms"]
            row["predicted_speedup_time"] = plain_ms / (
                prefix_ms + t.main_passes * passes[verify_name]["median_ms"]
            )
        rows.append(row)
    return {
        "size": size,
        "params": {k: count_params(m) for k, m in models.items()},
        "L": L,
        "N": N,
        "V": V,
        "prefix_tokens": setup["trunk"].prefix_length,
        "passes": passes,
        "floor_ms": floor_ms,
        "decodes": rows,
    }


def print_report(res: dict[str, Any]) -> None:
    print(
        f"\n== {res['size']} model: L={res['L']} N={res['N']} V={res['V']}, prefix {res['prefix_tokens']} tokens"
    )
    print("   params: " + ", ".join(f"{k} {v / 1e6:.3f}M" for k, v in res["params"].items()))
    print(f"   {'pass':38s} {'median ms':>10s} {'p90 ms':>9s}")
    for name, s in res["passes"].items():
        print(f"   {name:38s} {s['median_ms']:10.3f} {s['p90_ms']:9.3f}")
    print(f"   floor (prefix + one block pass): {res['floor_ms']:.3f} ms")
    hdr = (
        f"   {'full decode':44s} {'median ms':>9s} {'p90 ms':>8s} {'passes':>6s} {'acc.L':>5s} "
        f"{'vs plain':>8s} {'pred.':>6s} {'pred.t':>6s} {'/floor':>6s}"
    )
    print(hdr)
    for r in res["decodes"]:
        pred = f"{r['predicted_speedup_passes']:.2f}" if "predicted_speedup_passes" in r else ""
        pred_t = f"{r['predicted_speedup_time']:.2f}" if "predicted_speedup_time" in r else ""
        print(
            f"   {r['method']:44s} {r['median_ms']:9.3f} {r['p90_ms']:8.3f} {r['main_passes']:6d} "
            f"{r['accepted_layers']:5d} {r['speedup_vs_plain']:7.2f}x {pred:>6s} {pred_t:>6s} {r['ratio_to_floor']:6.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "default"], choices=sorted(SIZES))
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--gamma", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--distill-steps", type=int, default=100, help="train a head drafter on this observation (0: skip)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    info = device_info()
    where = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"{info['cpu']} ({info['cpu_count']} cores)"
    )
    print(
        f"device: {where}, torch threads {torch.get_num_threads()}, "
        f"float32, batch 1, {args.runs} runs after {args.warmup} warm-up, random weights"
    )
    results = [
        bench_size(
            s,
            runs=args.runs,
            warmup=args.warmup,
            gamma=args.gamma,
            distill_steps=args.distill_steps,
            device=args.device,
        )  # fmt: skip
        for s in args.sizes
    ]
    for res in results:
        print_report(res)
    print(
        "\n'passes' = sequential main passes after the prefix; 'acc.L' = drafted layers accepted; "
        "'pred.' = L / passes (the speedup pass counts alone predict); 'pred.t' = the same with measured pass "
        "times (prefix + L block passes) / (prefix + passes verify passes), drafting excluded; "
        "'/floor' = time / (prefix + one block pass)."
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {"device": info, "args": vars(args) | {"out": str(args.out)}, "results": results}, indent=2
            )
        )


if __name__ == "__main__":
    main()
