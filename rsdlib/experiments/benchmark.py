"""Every decoding method of a trained models folder on the same observations: what it accepts,
what it costs, how far its actions are from the demonstration and from plain decoding.

:class:`ModelSet` loads a models folder (the training recipe's layout) onto a device;
:func:`quality_rows` decodes a batch of validation chunks with each method (acceptance per layer,
passes, predicted speedup, action error); :func:`latency_rows` decodes chunks one at a time,
round robin over the methods so that drifting load hits all of them alike, and reports median
and p90 latency, the ratio to plain ``rfsq_ar`` and to the physical floor (one prefix pass plus
one block pass). Methods are :class:`~rsdlib.decoding.spec.MethodSpec` s and rows are named by
their text. ``scripts/bench_rsd.py`` and notebook ``07_latency`` print and plot them.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsdlib.decoding.methods import Decoder
from rsdlib.decoding.result import DecodeResult
from rsdlib.decoding.spec import PLAIN_METHODS, MethodSpec
from rsdlib.decoding.trace import summarize
from rsdlib.experiments.comparison import DEPTH_HEAD_DIR, DRAFTER_DIRS, load_drafters, missing_drafter
from rsdlib.experiments.prepare import FAST_DIR, RFSQ_DIR
from rsdlib.policies import checkpoints

#: What a decoder on the fixed-shape engine adds to its method's name in the tables.
FIXED_SUFFIX = " [fixed]"


class ModelSet:
    """The models of a folder written by :func:`rsdlib.experiments.train_models.train_models`, on a device."""

    def __init__(self, folder: str | Path, device: str = "cpu") -> None:
        folder = Path(folder)
        self.device = device
        load = lambda name: checkpoints.load(folder / name).to(device).eval()  # noqa: E731
        self.heads = {name: load(name) for name in PLAIN_METHODS}
        self.main = self.heads["rfsq_ar"]
        self.folder = folder
        self.drafters = load_drafters(
            folder, device, self.main
        )  # lowdim folders no longer hold the tiny policy
        # the learned depth monitor's head, where the folder has one (older folders do not)
        has_depth_head = (folder / DEPTH_HEAD_DIR / checkpoints.CONFIG).is_file()
        self.depth_head = load(DEPTH_HEAD_DIR) if has_depth_head else None
        try:
            from rsdlib.tokenizers import load_tokenizer
        except ImportError as err:  # a bare GPU machine: tokens, acceptance and timings, no actions
            warnings.warn(
                f"no tokenizer code ({err}): actions, action errors and action_tolerance are left out",
                stacklevel=2,
            )
            self.tokenizer = self.fast_tokenizer = None
        else:
            self.tokenizer = load_tokenizer(folder / RFSQ_DIR)
            self.fast_tokenizer = load_tokenizer(folder / FAST_DIR)

    @property
    def trunk(self) -> Any:
        return self.main.config.trunk

    def describe(self) -> dict[str, Any]:
        """What a latency table's caption names: the weights' dtype and each model's parameters."""
        drafters = {DRAFTER_DIRS[name]: getattr(d, "policy", d) for name, d in self.drafters.items()}
        models = {**self.heads, **drafters}
        dtypes = sorted(
            {str(p.dtype).removeprefix("torch.") for m in models.values() for p in m.parameters()}
        )
        return {
            "dtype": "/".join(dtypes),
            "parameters": {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()},
        }

    def decoder(self, spec: MethodSpec | str, engine: str = "eager") -> Decoder | None:
        """The decoder of one method (None where it needs a tokenizer this machine cannot load);
        ``engine`` as :class:`~rsdlib.decoding.methods.Decoder` takes it."""
        spec = MethodSpec.parse(spec)
        if self.tokenizer is None and spec.method != "l1_regression":
            return None
        tokenizer = self.fast_tokenizer if spec.method == "fast_ar" else self.tokenizer
        if spec.is_rsd and spec.drafter not in self.drafters:
            raise ValueError(missing_drafter(spec, self.folder))
        drafter = self.drafters[spec.drafter] if spec.is_rsd else None
        return Decoder(
            spec, self.heads[spec.head], drafter, tokenizer, self.tokenizer and self.tokenizer.normaliser,
            self.depth_head, engine=engine,
        )  # fmt: skip

    def decoders(
        self, specs: Sequence[MethodSpec | str], *, fixed: Sequence[MethodSpec | str] = ()
    ) -> dict[str, Decoder]:
        """``{spec text: decoder}`` for the plain methods and each given RSD spec, and
        ``{spec text + FIXED_SUFFIX: decoder}`` for each spec in ``fixed`` on the fixed-shape engine."""
        specs = [MethodSpec(method=m) for m in PLAIN_METHODS] + [MethodSpec.parse(s) for s in specs]
        out = {str(s): self.decoder(s) for s in specs}
        out |= {f"{MethodSpec.parse(s)}{FIXED_SUFFIX}": self.decoder(s, engine="fixed") for s in fixed}
        return {name: d for name, d in out.items() if d is not None}

    def env_actions(self, decoder: Decoder, result: DecodeResult) -> torch.Tensor | None:
        """``(B, H, A)`` chunks in environment units (None for FAST sequences that do not decode)."""
        from rsdlib.tokenizers.fast import MalformedTokens

        try:
            return decoder.env_actions(result)
        except MalformedTokens:
            return None


def _mae(pred: torch.Tensor | None, target: torch.Tensor, valid: torch.Tensor) -> float | None:
    if pred is None:
        return None
    err = (pred.double().cpu() - target.double().cpu()).abs().mean(-1)  # (B, H)
    return float(err[valid.cpu()].mean())


@torch.no_grad()
def quality_rows(
    models: ModelSet, batch: dict[str, Any], specs: Sequence[MethodSpec | str]
) -> list[dict[str, Any]]:
    """Decode one batch of chunks with every method.

    Returns:
        One row per method: ``method``, ``mae_demo`` (against the demonstration), ``mae_vs_plain``
        (against plain greedy ``rfsq_ar``), ``main_passes_per_chunk``, ``tokens_per_chunk``; RSD
        rows also ``acceptance_per_layer``, ``accepted_layers_per_chunk``, ``expected_main_passes``,
        ``predicted_speedup_passes``, ``same_tokens_as_plain``, ``lossless``.
    """
    obs, target, valid = batch["obs"], batch["actions_raw"], batch["valid"]
    decoders = models.decoders(specs)
    plain = decoders["rfsq_ar"].decode(obs)
    rows = []
    for name, decoder in decoders.items():
        result = plain if name == "rfsq_ar" else decoder.decode(obs)
        actions = models.env_actions(decoder, result)
        traces = result.traces
        row: dict[str, Any] = {
            "method": name,
            "mae_demo": _mae(actions, target, valid),
            "mae_vs_plain": _mae(actions, plain.actions, valid),
            "main_passes_per_chunk": float(np.mean([t.main_passes for t in traces])),
            "tokens_per_chunk": float(np.mean([sum(len(layer) for layer in t.tokens) for t in traces])),
            "layers_per_chunk": float(np.mean([t.layers_used for t in traces])),
        }
        if decoder.spec.is_rsd:
            s = summarize(traces)
            keys = (
                "acceptance_per_layer",
                "accepted_layers_per_chunk",
                "expected_main_passes",
                "predicted_speedup_passes",
                "lossless",
            )
            row |= {k: s[k] for k in keys} | {
                "same_tokens_as_plain": bool(torch.equal(result.tokens, plain.tokens))
            }
        rows.append(row)
    return rows


@torch.no_grad()
def latency_rows(
    models: ModelSet,
    observations: Sequence[Any],
    specs: Sequence[MethodSpec | str],
    *,
    warmup: int = 3,
    fixed: Sequence[MethodSpec | str] = (),
) -> list[dict[str, Any]]:
    """Decode each observation alone (batch 1) with every method, round robin; time each decode.

    Args:
        observations: prepared single observations (``ObservationBatch`` of size 1) on the device.
        warmup: rounds run first and not timed.
        fixed: specs also decoded on the fixed-shape engine (rows named ``<spec> [fixed]``,
            timed in the same rounds as the eager ones, so their ratio is side by side).

    Returns:
        One row per method: ``latency_median_ms``, ``latency_p90_ms``, ``actions_per_s`` (H over
        the median), ``speedup_vs_plain`` (median over median), ``ratio_to_floor`` (median over the
        median of one prefix pass, which decodes layer 0, plus one block pass of the main policy), ``step_ms`` (where the
        time goes: the median per decode of each timed step, such as prefix, draft, verify, plain
        and detokenize), and for RSD the ``predicted_speedup_time`` from its measured prefix, draft
        and pass times.
    """
    decoders = models.decoders(specs, fixed=fixed)
    cuda = str(models.device).startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    main = models.main
    samples: dict[str, list[float]] = {name: [] for name in [*decoders, "floor"]}
    traces: dict[str, list[Any]] = {name: [] for name in decoders}
    zeros = torch.zeros(1, main.L, main.N, dtype=torch.long, device=main.device)
    one = torch.ones(1, dtype=torch.long, device=main.device)
    for i in range(warmup + len(observations)):
        obs = observations[i % len(observations)]
        for name, decoder in decoders.items():
            sync()
            t0 = time.perf_counter()
            result = decoder.decode(obs)
            sync()
            if i >= warmup:
                samples[name].append(time.perf_counter() - t0)
                traces[name].append(result.traces[0])
        sync()
        t0 = time.perf_counter()
        state, _ = main.prefix_and_first_block(obs)  # the floor: layer 0 with the prefix, then
        main.block_logits(state, zeros, one, one)  # one pass for the rest (RSD at full acceptance)
        sync()
        if i >= warmup:
            samples["floor"].append(time.perf_counter() - t0)
    floor = float(np.median(samples["floor"]))
    base = float(np.median(samples["rfsq_ar"]))
    horizon = main.config.actions.horizon
    rows = []
    for name in decoders:
        median = float(np.median(samples[name]))
        row = {
            "method": name,
            "latency_median_ms": 1e3 * median,
            "latency_p90_ms": 1e3 * float(np.percentile(samples[name], 90)),
            "actions_per_s": horizon / median,
            "speedup_vs_plain": base / median,
            "ratio_to_floor": median / floor,
            "floor_ms": 1e3 * floor,
            "step_ms": _step_medians_ms(traces[name]),
        }
        if decoders[name].spec.is_rsd:
            row["predicted_speedup_time"] = summarize(traces[name], baseline=traces["rfsq_ar"])[
                "predicted_speedup_time"
            ]
        rows.append(row)
    return rows


def _step_medians_ms(traces: Sequence[Any]) -> dict[str, float]:
    """The median over decodes of each step's wall time (ms), for the steps a method used."""
    steps = {k for t in traces for k, v in t.timings.items() if v > 0 and k != "total"}
    return {k: 1e3 * float(np.median([t.timings.get(k, 0.0) for t in traces])) for k in sorted(steps)}


def merge_rows(quality: Sequence[dict[str, Any]], latency: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method with both the quality and the latency figures."""
    by_name = {r["method"]: dict(r) for r in quality}
    for r in latency:
        by_name.setdefault(r["method"], {"method": r["method"]}).update(r)
    return list(by_name.values())
