"""Reconstruction error against tokens per chunk, code usage per RFSQ layer, and the RFSQ sweep.

Every function returns plain dicts and lists (tidy rows), so the notebook writes them to
``metrics.json`` as they are and figures are drawn from that file alone. Errors are measured
on what :meth:`~rsdlib.tokenizers.base.ActionTokenizer.decode` returns, i.e. what a robot would
execute: in environment units against the original chunk, and in normalised units against the
normalised (clamped) chunk.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rsdlib.tokenizers.base import ActionTokenizer
from rsdlib.tokenizers.normaliser import Normaliser
from rsdlib.tokenizers.rfsq import RFSQTokenizer


def error_metrics(original: Tensor | np.ndarray, decoded: Tensor, normaliser: Normaliser) -> dict[str, Any]:
    """Reconstruction error of decoded chunks (B, H, A) against the originals, both in environment units.

    Returns:
        ``mse_normalised`` (overall), ``max_abs_normalised``, ``mse_env`` / ``max_abs_env`` overall and
        ``*_per_dim`` lists of length A.
    """
    x = torch.as_tensor(original, dtype=torch.float64)
    d = decoded.to(torch.float64)
    err_env = (d - x).reshape(-1, x.shape[-1])
    err_norm = (normaliser.normalise(d) - normaliser.normalise(x)).reshape(-1, x.shape[-1])
    return {
        "mse_normalised": err_norm.pow(2).mean().item(),
        "max_abs_normalised": err_norm.abs().max().item(),
        "mse_normalised_per_dim": err_norm.pow(2).mean(0).tolist(),
        "mse_env": err_env.pow(2).mean().item(),
        "max_abs_env": err_env.abs().max().item(),
        "mse_env_per_dim": err_env.pow(2).mean(0).tolist(),
        "max_abs_env_per_dim": err_env.abs().max(0).values.tolist(),
    }


def evaluate_tokenizer(
    tokenizer: ActionTokenizer, chunks: Tensor | np.ndarray, **labels: Any
) -> list[dict[str, Any]]:
    """Error rows for one tokenizer on chunks (B, H, A); an RFSQ tokenizer gives one row per prefix k = 1..L.

    Each row holds ``tokens_per_chunk`` (mean), ``bits_per_chunk`` (tokens x log2 vocabulary),
    ``sequential_steps`` (decoding steps a policy needs: L prefix layers for RFSQ, tokens for the
    others), the metrics of :func:`error_metrics`, and the given labels.
    """
    ids = tokenizer.encode(chunks)
    if isinstance(tokenizer, RFSQTokenizer):
        rows = []
        for k in range(1, tokenizer.num_layers + 1):
            tokens = tokenizer.num_latents * k
            rows.append({
                **labels, "tokenizer": "rfsq", "setting": f"k={k}", "layers": k, "tokens_per_chunk": float(tokens),
                "bits_per_chunk": tokenizer.num_latents * sum(math.log2(v) for v in tokenizer.layer_codebook_sizes[:k]),
                "sequential_steps": float(k),
                **error_metrics(chunks, tokenizer.decode(ids[:, :, :k]), tokenizer.normaliser),
            })  # fmt: skip
        return rows
    tokens = tokenizer.num_tokens(ids).double().mean().item()
    return [{
        **labels, "tokenizer": tokenizer.kind, "setting": _setting(tokenizer), "tokens_per_chunk": tokens,
        "bits_per_chunk": tokens * tokenizer.bits_per_token(), "sequential_steps": tokens,
        **error_metrics(chunks, tokenizer.decode(ids), tokenizer.normaliser),
    }]  # fmt: skip


def _setting(tokenizer: ActionTokenizer) -> str:
    config = tokenizer.config()
    if tokenizer.kind == "fast":
        return f"scale={config['scale']:g}"
    if tokenizer.kind == "binning":
        return f"bins={config['bins']}"
    return ""


def code_usage(tokenizer: RFSQTokenizer, chunks: Tensor | np.ndarray) -> list[dict[str, Any]]:
    """Per RFSQ layer: entropy of the code distribution (bits), codes used, and the histogram.

    A layer stuck on one code (the prototype's flaw) has entropy 0; a uniform layer has
    log2(codebook_size).
    """
    ids = tokenizer.encode(chunks)  # (B, N, L)
    rows = []
    for layer in range(tokenizer.num_layers):
        counts = torch.bincount(ids[:, :, layer].flatten(), minlength=tokenizer.codebook_size)
        p = counts[counts > 0].double() / counts.sum()
        rows.append({
            "layer": layer, "entropy_bits": float(-(p * p.log2()).sum()), "max_entropy_bits": tokenizer.bits_per_token(),
            "codes_used": int((counts > 0).sum()), "codebook_size": tokenizer.codebook_size, "counts": counts.tolist(),
        })  # fmt: skip
    return rows


def sweep_rfsq(
    grid: list[dict[str, Any]],
    train: np.ndarray,
    validation: np.ndarray,
    *,
    normaliser: Normaliser,
    base: dict[str, Any],
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train one RFSQ tokenizer per grid entry and measure validation error at every prefix.

    Args:
        grid: settings that differ per entry (e.g. ``{"num_latents": 8, "levels": [8, 5, 5, 5]}``).
        train: (B, H, A) training chunks; validation: chunks of other episodes (not the held-out test set).
        normaliser: the shared fitted normaliser.
        base: settings common to all entries (horizon, num_layers, steps, seed, ...).

    Returns:
        One row per entry with its settings, ``mse_normalised`` per prefix k (list), fit seconds,
        parameter count, and the final training losses.
    """
    rows = []
    for entry in grid:
        settings = {**base, **entry}
        tokenizer = RFSQTokenizer(**settings, normaliser=normaliser)
        start = time.perf_counter()
        tokenizer.fit(train, progress=progress)
        seconds = time.perf_counter() - start
        prefix_rows = evaluate_tokenizer(tokenizer, validation)
        rows.append({
            **{k: v for k, v in settings.items()}, "codebook_size": tokenizer.codebook_size,
            "mse_normalised": [r["mse_normalised"] for r in prefix_rows],
            "tokens_per_chunk": [r["tokens_per_chunk"] for r in prefix_rows],
            "fit_seconds": seconds, "parameters": tokenizer.num_parameters(),
            "train_loss_full": float(np.mean([h[0] for h in tokenizer.history[-50:]])),
        })  # fmt: skip
    return rows


def choose_default(
    sweep: list[dict[str, Any]],
    *,
    full_target: float = 1e-3,
    two_layer_target: float = 1e-2,
    min_layers: int = 2,
) -> dict[str, Any]:
    """Pick (N, levels, L) from a sweep: the fewest tokens per chunk that meet both targets.

    A candidate is an entry of the sweep cut to its first L layers (quantize dropout trains
    every prefix, so a prefix of an L_max model stands for an L-layer model; the notebook
    retrains the pick with L layers and reports its own held-out numbers). It meets the
    targets when its L-layer validation MSE is below ``full_target`` and its 2-layer MSE below
    ``two_layer_target``. Ties go to the lower L-layer error. With no candidate meeting both,
    the lowest L-layer error wins and ``meets_targets`` is False.

    Returns:
        ``{"num_latents", "levels", "num_layers", "mse_full", "mse_two_layers", "tokens_per_chunk",
        "meets_targets", "rule"}``.
    """
    candidates = []
    for row in sweep:
        mse = row["mse_normalised"]
        for layers in range(max(min_layers, 1), len(mse) + 1):
            two = mse[min(2, layers) - 1]
            candidates.append({
                "num_latents": row["num_latents"], "levels": list(row["levels"]), "num_layers": layers,
                "mse_full": mse[layers - 1], "mse_two_layers": two,
                "tokens_per_chunk": row["num_latents"] * layers,
                "meets_targets": mse[layers - 1] < full_target and two < two_layer_target,
            })  # fmt: skip
    if not candidates:
        raise ValueError(
            f"no sweep entry has min_layers={min_layers} layers to choose from; "
            "raise the sweep's num_layers (sweep_max_layers) or lower min_layers (rfsq_min_layers)"
        )
    meeting = [c for c in candidates if c["meets_targets"]]
    if meeting:
        pick = min(meeting, key=lambda c: (c["tokens_per_chunk"], c["mse_full"]))
        rule = (f"fewest tokens per chunk with validation MSE < {full_target:g} at L layers "
                f"and < {two_layer_target:g} at 2 layers")  # fmt: skip
    else:
        pick = min(candidates, key=lambda c: (c["mse_full"], c["tokens_per_chunk"]))
        rule = f"no setting met the targets ({full_target:g} / {two_layer_target:g}); lowest L-layer error"
    return {**pick, "rule": rule}


def equal_token_comparison(rows: list[dict[str, Any]], data: str) -> list[dict[str, Any]]:
    """For each FAST row on ``data``, the RFSQ prefix with the nearest tokens per chunk not above it.

    Returns rows ``{"fast_setting", "fast_tokens", "fast_mse", "rfsq_setting", "rfsq_tokens",
    "rfsq_mse", "rfsq_no_worse"}`` (normalised MSE), for the notebook's statement about equal budgets.
    """
    rfsq = [r for r in rows if r["tokenizer"] == "rfsq" and r["data"] == data]
    out = []
    for f in (r for r in rows if r["tokenizer"] == "fast" and r["data"] == data):
        within = [r for r in rfsq if r["tokens_per_chunk"] <= f["tokens_per_chunk"] + 1e-9]
        if not within:
            continue
        best = min(within, key=lambda r: r["mse_normalised"])
        out.append({
            "fast_setting": f["setting"], "fast_tokens": f["tokens_per_chunk"], "fast_mse": f["mse_normalised"],
            "rfsq_setting": best["setting"], "rfsq_tokens": best["tokens_per_chunk"],
            "rfsq_mse": best["mse_normalised"], "rfsq_no_worse": best["mse_normalised"] <= f["mse_normalised"],
        })  # fmt: skip
    return out
