"""From demonstration items to training batches and validation metrics, for every head.

Items are dicts as :class:`rsdlib.libero.dataset.DemoDataset` yields them: camera images
``agentview_rgb`` / ``eye_in_hand_rgb`` (S, S, 3) uint8, ``proprio`` (8,), ``instruction``,
``actions`` (H, A) normalised, ``actions_raw`` (H, A) in environment units, ``valid`` (H,).
RFSQ targets are the tokenizer's ``encode(actions_raw)`` (it normalises with its own
statistics), moved to the ``(B, L, N)`` layout.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rsdlib.policies.heads import FastAutoregressive, L1Regression, Policy, RFSQAutoregressive, RFSQParallel
from rsdlib.policies.packed import PackedChunks

Item = Mapping[str, Any]


def augment_images(
    images: torch.Tensor, generator: torch.Generator, *, crop_area: float = 0.9
) -> torch.Tensor:
    """OpenVLA-OFT-style augmentation: a random crop of ``crop_area`` of the image, resized back,
    and mild brightness/contrast jitter; one draw per image.

    Args:
        images: ``(B, C, 3, S, S)`` in [0, 1].
        generator: the source of every draw.
        crop_area: kept fraction of the area.

    Returns:
        ``(B, C, 3, S, S)`` in [0, 1].
    """
    B, C, _, S, _ = images.shape
    flat = images.flatten(0, 1)  # (B*C, 3, S, S)
    side = max(int(round(S * crop_area**0.5)), 1)
    offs = torch.randint(0, S - side + 1, (B * C, 2), generator=generator).to(images.device, images.dtype)
    # One batched resampling instead of a crop per image: an affine grid that maps the output
    # square onto the crop window (normalised coordinates, pixel centres as in align_corners=False).
    theta = torch.zeros(B * C, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = side / S
    theta[:, 0, 2] = (2 * offs[:, 1] + side) / S - 1  # x centre of the window
    theta[:, 1, 2] = (2 * offs[:, 0] + side) / S - 1  # y centre
    grid = F.affine_grid(theta, [B * C, 3, S, S], align_corners=False)
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="border", align_corners=False)
    u = torch.rand(B * C, 2, generator=generator, dtype=torch.float64).to(out.device, out.dtype)
    brightness = (u[:, 0] - 0.5) * 0.2  # +-0.1
    contrast = 1 + (u[:, 1] - 0.5) * 0.2  # x0.9 .. x1.1
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast[:, None, None, None] + mean + brightness[:, None, None, None]
    return out.clamp(0, 1).unflatten(0, (B, C))


def collate(items: Sequence[Item], *, policy: Policy, tokenizer: Any = None) -> dict[str, Any]:
    """A batch for ``policy.loss``: ``obs``, ``actions`` (B, H, A), ``valid`` and, with a tokenizer,
    ``tokens`` (B, L, N)."""
    obs = policy.prepare(items)
    batch: dict[str, Any] = {
        "obs": obs,
        "actions": torch.as_tensor(np.stack([it["actions"] for it in items]), dtype=policy.dtype),
    }
    raw = torch.as_tensor(np.stack([it["actions_raw"] for it in items]), dtype=torch.float32)
    batch["actions_raw"] = raw
    batch["valid"] = (
        torch.as_tensor(np.stack([it["valid"] for it in items]))
        if "valid" in items[0]
        else torch.ones(raw.shape[:2], dtype=torch.bool)
    )
    if tokenizer is not None:
        batch["tokens"] = tokenizer.encode(raw).transpose(1, 2).contiguous().to(policy.device)  # (B, L, N)
    return batch


class ChunkBatches:
    """``batches(step, generator)`` for :func:`rsdlib.train.train`: random items, augmented.

    Args:
        items: a dataset (``__len__``/``__getitem__``) of demonstration items.
        policy: the policy being trained (its processor shapes the observations).
        batch_size: items per batch.
        tokenizer: the RFSQ tokenizer (for the token heads and drafters).
        augment: apply :func:`augment_images`.
    """

    def __init__(
        self,
        *,
        items: Sequence[Item],
        policy: Policy,
        batch_size: int,
        tokenizer: Any = None,
        augment: bool = True,
    ) -> None:
        if len(items) == 0:
            raise ValueError("ChunkBatches got no items: is the training split empty?")
        if batch_size < 1:
            raise ValueError(f"batch_size ({batch_size}) must be at least 1")
        self.items, self.policy, self.batch_size = items, policy, batch_size
        self.tokenizer, self.augment = tokenizer, augment

    def __call__(self, step: int, generator: torch.Generator) -> dict[str, Any]:
        idx = torch.randint(0, len(self.items), (self.batch_size,), generator=generator).tolist()
        batch = collate([self.items[i] for i in idx], policy=self.policy, tokenizer=self.tokenizer)
        if self.augment:
            batch["obs"].images = augment_images(batch["obs"].images, generator)
        return batch


@torch.no_grad()
def evaluate_policy(
    policy: Policy,
    data: Sequence[Item] | PackedChunks,
    *,
    tokenizer: Any = None,
    fast_tokenizer: Any = None,
    denormalize: Callable[[np.ndarray], np.ndarray] | None = None,
    batch_size: int = 64,
) -> dict[str, float]:
    """Validation metrics: the loss's own metrics (per-layer token accuracy for the token heads)
    and the action error after greedy decoding.

    ``action_mae`` is the mean absolute error of the decoded chunk against ``actions_raw`` over
    valid steps, in environment units: the RFSQ heads decode with ``tokenizer``, ``fast_ar`` with
    ``fast_tokenizer`` (a sequence that does not decode counts in ``fast_malformed``, the share of
    such chunks, and not in the error), the L1 head's normalised output goes through ``denormalize``
    (e.g. ``Normaliser.denormalise``). Without the needed tokenizer the error is left out.

    Args:
        data: demonstration items (targets encoded here with ``tokenizer``) or packed chunks
            (targets already encoded).

    Returns:
        ``{"loss", "acc_layer0", ..., "action_mae"}`` as applicable.
    """
    from rsdlib.decoding.plain import (
        decode_fast_ar,
        decode_l1_regression,
        decode_rfsq_ar,
        decode_rfsq_parallel,
    )
    from rsdlib.tokenizers.fast import MalformedTokens

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
            pred, keep = _decode_fast(
                decode_fast_ar(policy, batch["obs"]).tokens, fast_tokenizer, raw, MalformedTokens
            )
            malformed += int((~keep).sum())
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
    tokens: torch.Tensor, fast_tokenizer: Any, like: torch.Tensor, malformed: type
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
