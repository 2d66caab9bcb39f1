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

from rsdlib.policies.heads import L1Regression, Policy, RFSQAutoregressive, RFSQParallel

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
    offs = torch.randint(0, S - side + 1, (B * C, 2), generator=generator)
    crops = torch.stack([flat[i, :, y : y + side, x : x + side] for i, (y, x) in enumerate(offs.tolist())])
    out = F.interpolate(crops, size=(S, S), mode="bilinear", align_corners=False)
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
    if "valid" in items[0]:
        batch["valid"] = torch.as_tensor(np.stack([it["valid"] for it in items]))
    if tokenizer is not None:
        raw = torch.as_tensor(np.stack([it["actions_raw"] for it in items]), dtype=torch.float32)
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
    items: Sequence[Item],
    *,
    tokenizer: Any = None,
    denormalize: Callable[[np.ndarray], np.ndarray] | None = None,
    batch_size: int = 64,
) -> dict[str, float]:
    """Validation metrics: per-layer token accuracy (token heads) and action error after decoding.

    ``action_mae`` is the mean absolute error of the greedy decoded chunk against ``actions_raw``
    over valid steps, in environment units (the token heads decode with the tokenizer; the L1
    head's normalised output goes through ``denormalize``, e.g. the dataset's ``Normaliser.denormalise``).

    Returns:
        ``{"loss", "acc_layer0", ..., "action_mae"}`` as applicable.
    """
    from rsdlib.decoding.plain import decode_l1_regression, decode_rfsq_ar, decode_rfsq_parallel

    needs_tokens = isinstance(policy, (RFSQAutoregressive, RFSQParallel))
    if needs_tokens and tokenizer is None:
        raise ValueError(f"evaluating {policy.config.head} needs the RFSQ tokenizer")
    sums: dict[str, float] = {}
    count = 0
    abs_err, steps = 0.0, 0.0
    for start in range(0, len(items), batch_size):
        chunk = [items[i] for i in range(start, min(start + batch_size, len(items)))]
        batch = collate(chunk, policy=policy, tokenizer=tokenizer if needs_tokens else None)
        _, metrics = policy.loss(batch)
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + v * len(chunk)
        count += len(chunk)
        if isinstance(policy, RFSQAutoregressive):
            pred = decode_rfsq_ar(policy, batch["obs"], tokenizer=tokenizer).actions
        elif isinstance(policy, RFSQParallel):
            pred = decode_rfsq_parallel(policy, batch["obs"], tokenizer=tokenizer).actions
        elif isinstance(policy, L1Regression) and denormalize is not None:
            pred = torch.as_tensor(
                denormalize(decode_l1_regression(policy, batch["obs"]).actions.double().numpy())
            )
        else:
            continue
        raw = torch.as_tensor(np.stack([it["actions_raw"] for it in chunk]), dtype=torch.float64)
        valid = batch.get("valid", torch.ones(raw.shape[:2], dtype=torch.bool))
        err = (pred.double().cpu() - raw).abs().mean(-1)  # (B, H)
        abs_err += float(err[valid].sum())
        steps += float(valid.sum())
    out = {k: v / count for k, v in sums.items()}
    if steps:
        out["action_mae"] = abs_err / steps
    return out
