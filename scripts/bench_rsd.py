"""RSD with the trained models on validation observations: acceptance, passes, latency, action error.

For each drafter, gamma and acceptance rule, on validation chunks the models never trained on:

- batched over the chunks: acceptance per RFSQ layer, accepted layers and main passes per chunk,
  the speedup those rates predict, and the action error (mean absolute, environment units) against
  the demonstration and against plain greedy ``rfsq_ar`` (zero for a lossless rule);
- batch 1, one chunk after another: decode latency (median and p90) beside plain ``rfsq_ar`` and
  one-pass ``rfsq_parallel``, measured in the same loop (round robin, so drifting load hits all).

Usage::

    python scripts/bench_rsd.py --models checkpoints/libero_spatial --chunks 128 --latency-chunks 50
    python scripts/bench_rsd.py --models M --val prepared/val.npz --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from rsdlib.decoding import decode_rfsq_ar, decode_rfsq_parallel, make_rule, speculative_decode
from rsdlib.decoding.trace import summarize
from rsdlib.policies import checkpoints
from rsdlib.policies.drafters import PolicyDrafter
from rsdlib.policies.packed import PackedChunks
from rsdlib.policies.recipe import RFSQ_DIR, describe_device
from rsdlib.tokenizers import load_tokenizer

DEFAULT_RULES = ("exact", "match_rate:0.75", "match_rate:0.5", "level_distance:1", "action_tolerance:0.05")
PARAM = {"match_rate": "tau", "level_distance": "delta", "action_tolerance": "eps"}


def parse_rule(text: str, tokenizer):
    name, _, value = text.partition(":")
    params = {}
    if name in PARAM:
        params[PARAM[name]] = int(value) if name == "level_distance" else float(value)
    return make_rule(name, tokenizer=tokenizer, **params)


def mae(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> float:
    err = (pred.double().cpu() - target.double().cpu()).abs().mean(-1)  # (B, H)
    return float(err[valid.cpu()].mean())


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=Path, default=Path("checkpoints/libero_spatial"))
    parser.add_argument(
        "--val", type=Path, default=None, help="packed chunks (default: <models>/val_sample.npz)"
    )
    parser.add_argument("--chunks", type=int, default=128, help="validation chunks for acceptance and error")
    parser.add_argument("--latency-chunks", type=int, default=50, help="chunks decoded one at a time, timed")
    parser.add_argument("--gammas", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--rules", nargs="+", default=list(DEFAULT_RULES))
    parser.add_argument("--drafters", nargs="+", default=["head_drafter", "tiny_policy"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dev = args.device
    main_policy = checkpoints.load(args.models / "rfsq_ar").to(dev).eval()
    parallel = checkpoints.load(args.models / "rfsq_parallel").to(dev).eval()
    tokenizer = load_tokenizer(args.models / RFSQ_DIR)
    drafters = {
        "head_drafter": checkpoints.load(args.models / "head_drafter").to(dev).eval(),
        "tiny_policy": PolicyDrafter(policy=checkpoints.load(args.models / "tiny_policy").to(dev).eval()),
    }
    val = PackedChunks.load(args.val or args.models / "val_sample.npz")
    val = val.subset(range(min(args.chunks, len(val)))).to(dev)
    batch = val.batch(torch.arange(len(val), device=dev), trunk_config=main_policy.config.trunk)
    obs, target, valid = batch["obs"], batch["actions_raw"], batch["valid"]
    print(
        f"device: {describe_device(dev)}; {len(val)} validation chunks; {args.latency_chunks} timed one at a time"
    )

    plain = decode_rfsq_ar(main_policy, obs, tokenizer=tokenizer)
    one_pass = decode_rfsq_parallel(parallel, obs, tokenizer=tokenizer)
    rows = [
        {"setting": "rfsq_ar (plain)", "mae_demo": mae(plain.actions, target, valid), "mae_vs_plain": 0.0,
         "main_passes_per_chunk": main_policy.L},
        {"setting": "rfsq_parallel", "mae_demo": mae(one_pass.actions, target, valid), "main_passes_per_chunk": 1},
    ]  # fmt: skip
    settings = [(d, g, r) for d in args.drafters for g in args.gammas for r in args.rules]
    for drafter, gamma, rule_text in settings:
        rule = parse_rule(rule_text, tokenizer)
        result = speculative_decode(
            main_policy, drafters[drafter], obs, rule=rule, gamma=gamma, tokenizer=tokenizer
        )
        s = summarize(result.traces)
        rows.append({
            "setting": f"rsd {drafter} g={gamma} {rule.label}", "drafter": drafter, "gamma": gamma, "rule": rule.label,
            "mae_demo": mae(result.actions, target, valid), "mae_vs_plain": mae(result.actions, plain.actions, valid),
            "same_tokens_as_plain": bool(torch.equal(result.tokens, plain.tokens)),
            **{k: s[k] for k in ("acceptance_per_layer", "accepted_layers_per_chunk", "main_passes_per_chunk",
                                 "expected_main_passes", "predicted_speedup_passes")},
        })  # fmt: skip

    # Latency, batch 1, round robin over methods for each chunk.
    timed = {"rfsq_ar (plain)": lambda o: decode_rfsq_ar(main_policy, o, tokenizer=tokenizer),
             "rfsq_parallel": lambda o: decode_rfsq_parallel(parallel, o, tokenizer=tokenizer)}  # fmt: skip
    for drafter, gamma, rule_text in settings:
        rule = parse_rule(rule_text, tokenizer)
        timed[f"rsd {drafter} g={gamma} {rule.label}"] = (
            lambda o, d=drafters[drafter], g=gamma, r=rule: speculative_decode(main_policy, d, o, rule=r, gamma=g, tokenizer=tokenizer)
        )  # fmt: skip
    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
    samples = {k: [] for k in timed}
    traces = {k: [] for k in timed}
    n = min(args.latency_chunks, len(val))
    for i in range(n + 3):
        one = val.batch(torch.tensor([i % len(val)], device=dev), trunk_config=main_policy.config.trunk)[
            "obs"
        ]
        for name, fn in timed.items():
            sync()
            t0 = time.perf_counter()
            result = fn(one)
            sync()
            if i >= 3:  # warm-up
                samples[name].append(time.perf_counter() - t0)
                traces[name].append(result.traces[0])
    base = float(np.median(samples["rfsq_ar (plain)"]))
    for row in rows:
        ms = 1e3 * np.array(samples[row["setting"]])
        row |= {"latency_median_ms": float(np.median(ms)), "latency_p90_ms": float(np.percentile(ms, 90)),
                "speedup_vs_plain": base * 1e3 / float(np.median(ms))}  # fmt: skip
        if row["setting"].startswith("rsd"):
            s = summarize(traces[row["setting"]], baseline=traces["rfsq_ar (plain)"])
            row["predicted_speedup_time"] = s["predicted_speedup_time"]

    head = f"{'setting':<58} {'acc/layer':<24} {'acc.L':>5} {'pass':>5} {'pred':>5} {'p.t':>5} {'med ms':>7} {'p90':>7} {'x plain':>7} {'MAE demo':>9} {'vs plain':>9}"
    print(head)
    for r in rows:
        acc = " ".join("-" if a is None else f"{a:.2f}" for a in r.get("acceptance_per_layer", []))
        fmt = lambda k, f, r=r: (f % r[k]) if r.get(k) is not None else ""  # noqa: E731
        print(f"{r['setting']:<58} {acc:<24} {fmt('accepted_layers_per_chunk', '%.2f'):>5} "
              f"{r['main_passes_per_chunk']:>5.2f} {fmt('predicted_speedup_passes', '%.2f'):>5} "
              f"{fmt('predicted_speedup_time', '%.2f'):>5} {r['latency_median_ms']:>7.2f} {r['latency_p90_ms']:>7.2f} "
              f"{r['speedup_vs_plain']:>6.2f}x {r['mae_demo']:>9.4f} {fmt('mae_vs_plain', '%.4f'):>9}")  # fmt: skip
    print("acc/layer: drafted tokens accepted per RFSQ layer; acc.L: accepted layers per chunk; pass: main passes "
          "after the prefix; pred: L / expected passes; p.t: predicted from measured prefix, draft and pass times; "
          "x plain: measured median speedup over plain rfsq_ar; MAE: mean absolute action error, env units.")  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "device": describe_device(dev),
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "rows": rows,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
