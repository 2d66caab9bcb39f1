"""From demonstration items to training batches and validation metrics, for every head.

Items are dicts as :class:`rsdlib.libero.dataset.DemoDataset` yields them: camera images
``agentview_rgb`` / ``eye_in_hand_rgb`` (S, S, 3) uint8, ``proprio`` (8,), ``instruction``,
``actions`` (H, A) normalised, ``actions_raw`` (H, A) in environment units, ``valid`` (H,).
RFSQ targets are the tokenizer's ``encode(actions_raw)`` (it normalises with its own
statistics), moved to the ``(B, L, N)`` layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from rsdlib.policies.heads import Policy

if TYPE_CHECKING:
    from rsdlib.tokenizers.base import ActionTokenizer

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


def jitter_objects(
    rows: torch.Tensor, kinds: torch.Tensor, generator: torch.Generator, *, std: float = 0.003
) -> torch.Tensor:
    """The lowdim counterpart of :func:`augment_images`: Gaussian noise of ``std`` metres on every
    real object's position (padding rows stay zero), so a policy does not key on millimetres.

    Args:
        rows: ``(B, K, OBJECT_DIM)`` object rows.
        kinds: ``(B, K)`` kind ids, 0 on padding.
        generator: the source of every draw.
    """
    noise = torch.randn(rows.shape[:-1] + (3,), generator=generator, dtype=torch.float64)
    noise = noise.to(rows.device, rows.dtype) * std * (kinds > 0)[..., None]
    return torch.cat([rows[..., :3] + noise, rows[..., 3:]], dim=-1)


def collate(
    items: Sequence[Item], *, policy: Policy, tokenizer: ActionTokenizer | None = None
) -> dict[str, Any]:
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
        tokenizer: ActionTokenizer | None = None,
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
