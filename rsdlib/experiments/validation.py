"""Validation of trained models on held-out chunks: losses, token accuracy per RFSQ layer, the
decoded action error, and how often each drafter agrees with the main policy.

Used while training (the log's validation rows), by the model cards, and by notebook
``04_load_models``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rsdlib.decoding import acceptance_per_layer, make_rule, speculative_decode
from rsdlib.decoding.plain import (
    FastLengthConstraint,
    decode_fast_ar,
    decode_l1_regression,
    decode_rfsq_ar,
    decode_rfsq_parallel,
)
from rsdlib.policies.data import Item, collate
from rsdlib.policies.drafters import PolicyDrafter, head_drafter_loss
from rsdlib.policies.heads import FastAutoregressive, L1Regression, Policy, RFSQAutoregressive, RFSQParallel
from rsdlib.policies.packed import PackedChunks
from rsdlib.tokenizers.fast import MalformedTokens

if TYPE_CHECKING:
    from rsdlib.tokenizers.base import ActionTokenizer


@torch.no_grad()
def evaluate_policy(
    policy: Policy,
    data: Sequence[Item] | PackedChunks,
    *,
    tokenizer: ActionTokenizer | None = None,
    fast_tokenizer: ActionTokenizer | None = None,
    denormalize: Callable[[np.ndarray], np.ndarray] | None = None,
    batch_size: int = 64,
) -> dict[str, float]:
    """Validation metrics: the loss's own metrics (per-layer token accuracy for the token heads)
    and the action error after greedy decoding.

    ``action_mae`` is the mean absolute error of the decoded chunk against ``actions_raw`` over
    valid steps, in environment units: the RFSQ heads decode with ``tokenizer``, ``fast_ar`` with
    ``fast_tokenizer`` under the length constraint it acts with (every chunk decodes), the L1
    head's normalised output goes through ``denormalize`` (e.g. ``Normaliser.denormalise``).
    ``fast_malformed`` is the share of chunks that the free, unconstrained decode would not have
    decoded: what the constraint saves. Without the needed tokenizer the error is left out.

    Args:
        data: demonstration items (targets encoded here with ``tokenizer``) or packed chunks
            (targets already encoded).

    Returns:
        ``{"loss", "acc_layer0", ..., "action_mae"}`` as applicable.
    """
    needs_tokens = isinstance(policy, (RFSQAutoregressive, RFSQParallel))
    if isinstance(data, PackedChunks):
        batches = data.batches(batch_size, trunk_config=policy.config.trunk, dtype=policy.dtype)
    else:
        if needs_tokens and tokenizer is None:
            raise ValueError(f"evaluating {policy.config.head} on items needs the RFSQ tokenizer")
        batches = (
            collate(
                [data[i] for i in range(start, min(start + batch_size, len(data)))],
                policy=policy,
                tokenizer=tokenizer if needs_tokens else None,
            )
            for start in range(0, len(data), batch_size)
        )
    constraint = None
    if isinstance(policy, FastAutoregressive) and fast_tokenizer is not None:
        constraint = FastLengthConstraint.for_tokenizer(fast_tokenizer, policy)
    sums: dict[str, float] = {}
    count = malformed = 0
    abs_err, steps = 0.0, 0.0
    for batch in batches:
        n = batch["obs"].batch_size
        _, metrics = policy.loss(batch)
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + v * n
        count += n
        raw = batch["actions_raw"].double().cpu()
        keep = torch.ones(n, dtype=torch.bool)
        if isinstance(policy, RFSQAutoregressive) and tokenizer is not None:
            pred = decode_rfsq_ar(policy, batch["obs"], tokenizer=tokenizer).actions
        elif isinstance(policy, RFSQParallel) and tokenizer is not None:
            pred = decode_rfsq_parallel(policy, batch["obs"], tokenizer=tokenizer).actions
        elif isinstance(policy, L1Regression) and denormalize is not None:
            out = decode_l1_regression(policy, batch["obs"]).actions.double().cpu().numpy()
            pred = torch.as_tensor(denormalize(out))
        elif isinstance(policy, FastAutoregressive) and fast_tokenizer is not None:
            _, free = _decode_fast(
                decode_fast_ar(policy, batch["obs"]).tokens, fast_tokenizer, raw, MalformedTokens
            )
            malformed += int((~free).sum())
            tokens = decode_fast_ar(policy, batch["obs"], constraint=constraint).tokens
            pred, keep = _decode_fast(tokens, fast_tokenizer, raw, MalformedTokens)
        else:
            continue
        valid = batch["valid"].cpu() & keep[:, None]
        err = (pred.double().cpu() - raw).abs().mean(-1)  # (B, H)
        abs_err += float(err[valid].sum())
        steps += float(valid.sum())
    out = {k: v / count for k, v in sums.items()}
    if steps:
        out["action_mae"] = abs_err / steps
    if isinstance(policy, FastAutoregressive) and fast_tokenizer is not None:
        out["fast_malformed"] = malformed / count
    return out


def _decode_fast(
    tokens: torch.Tensor, fast_tokenizer: ActionTokenizer, like: torch.Tensor, malformed: type
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode FAST rows one by one; a row that does not decode is marked and left as zeros."""
    pred = torch.zeros_like(like)
    keep = torch.zeros(like.shape[0], dtype=torch.bool)
    for i, row in enumerate(tokens.cpu().tolist()):
        try:
            pred[i] = fast_tokenizer.decode([[v for v in row if v >= 0]])[0].double()
            keep[i] = True
        except malformed:
            pass
    return pred, keep


@torch.no_grad()
def layer_accuracy(
    models: dict[str, Any], chunks: PackedChunks, *, batch_size: int = 64
) -> dict[str, list[float]]:
    """Per RFSQ layer: teacher-forced token accuracy of the main policy and the drafters against
    the demonstrations' tokens, and each drafter's agreement with the main policy's greedy tokens.

    Agreement drafts all L layers from the drafter's own earlier choices (as one RSD round with
    gamma = L does) and compares them with plain greedy decoding of the main policy: the share
    the ``exact`` rule would accept at each layer if every earlier layer had been accepted.

    Args:
        models: ``rfsq_ar`` (required), and any of ``tiny_policy``, ``head_drafter``.
        chunks: packed chunks with RFSQ tokens.

    Returns:
        ``{"<model> (teacher-forced)": [acc per layer], "<drafter> (agrees with main)": [...]}``.
    """
    main = models["rfsq_ar"]
    trunk = main.config.trunk
    drafters = {name: models[name] for name in ("head_drafter", "tiny_policy") if name in models}
    L = main.L
    forced = {name: np.zeros(L) for name in ["rfsq_ar", *drafters]}
    agree = {name: np.zeros(L) for name in drafters}
    count = 0
    for batch in chunks.batches(batch_size, trunk_config=trunk):
        n = batch["obs"].batch_size
        for name in forced:
            model = models[name]
            loss_fn = head_drafter_loss(main, model) if name == "head_drafter" else model.loss
            metrics = loss_fn(batch)[1]
            forced[name] += n * np.array([metrics[f"acc_layer{i}"] for i in range(L)])
        greedy = decode_rfsq_ar(main, batch["obs"]).tokens  # (n, L, N)
        state = main.prefix(batch["obs"])
        for name, model in drafters.items():
            drafter = model if name == "head_drafter" else PolicyDrafter(policy=model)
            drafter.begin(obs=batch["obs"], main_state=state)
            zeros = torch.zeros_like(greedy)
            draft = drafter.propose(
                tokens=zeros, committed=torch.zeros(n, dtype=torch.long, device=zeros.device),
                gamma=L, temperature=0.0, generator=None,
            )  # fmt: skip
            agree[name] += (draft.tokens == greedy).float().mean(-1).sum(0).cpu().numpy()
        count += n
    out = {f"{k} (teacher-forced)": (v / count).tolist() for k, v in forced.items()}
    return out | {f"{k} (agrees with main)": (v / count).tolist() for k, v in agree.items()}


@torch.no_grad()
def validation_loss(model: Any, val_set: PackedChunks, trunk: Any, loss_fn: Any = None) -> dict[str, float]:
    """Teacher-forced validation metrics (the loss's own: loss, per-layer token accuracy)."""
    loss_fn = loss_fn or model.loss
    sums: dict[str, float] = {}
    for batch in val_set.batches(256, trunk_config=trunk):
        n = batch["obs"].batch_size
        for k, v in loss_fn(batch)[1].items():
            sums[k] = sums.get(k, 0.0) + v * n
    return {k: v / len(val_set) for k, v in sums.items()}


@torch.no_grad()
def rsd_on_chunks(
    main, head, chunks: PackedChunks, *, gammas: Sequence[int], batch_size: int
) -> dict[str, Any]:
    """``exact`` RSD with ``head`` on every chunk at each gamma: acceptance per layer and main
    passes per chunk; raises if a token differs from plain greedy decoding (lossless by design)."""
    out: dict[str, Any] = {}
    observations = [
        main.prepare(b["obs"]) for b in chunks.batches(batch_size, trunk_config=main.config.trunk)
    ]
    greedy = [decode_rfsq_ar(main, obs).tokens for obs in observations]
    for gamma in gammas:
        traces = []
        for obs, plain in zip(observations, greedy, strict=True):
            result = speculative_decode(main, head, obs, rule=make_rule("exact"), gamma=gamma)
            if not torch.equal(result.tokens, plain):
                raise AssertionError(f"exact RSD at gamma {gamma} returned tokens other than greedy decoding")
            traces += result.traces
        out[f"g{gamma}"] = {
            "acceptance": acceptance_per_layer(traces),
            "main_passes": sum(t.main_passes for t in traces) / len(traces),
        }
    return out


@torch.no_grad()
def main_token_accuracy(main, chunks: PackedChunks, *, batch_size: int) -> list[float]:
    """Teacher-forced token accuracy per layer on the chunks' demonstration tokens."""
    sums, n = None, 0
    for batch in chunks.batches(batch_size, trunk_config=main.config.trunk):
        logits = main.teacher_forced_logits(main.prepare(batch["obs"]), batch["tokens"])
        right = (logits.argmax(-1) == batch["tokens"]).double().sum(dim=(0, 2))  # (L,)
        sums = right if sums is None else sums + right
        n += batch["tokens"].shape[0] * batch["tokens"].shape[2]
    return (sums / n).tolist()
