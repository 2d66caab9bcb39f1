"""Binning: OpenVLA's tokenizer, 256 uniform bins per dimension over [-1, 1].

Each normalised action value becomes the index of its bin; a chunk is H * A tokens, time
major (all of step 0's dimensions, then step 1's). Decoding returns bin centres, so the
error per value is at most half a bin, 1/256 in normalised units.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from rsdlib.actions import ACTION_DIM
from rsdlib.tokenizers.base import ActionTokenizer
from rsdlib.tokenizers.normaliser import Normaliser


class BinningTokenizer(ActionTokenizer):
    """Uniform per-dimension bins over normalised [-1, 1]; ids (B, H*A) in [0, bins).

    Args:
        horizon: H, actions per chunk.
        action_dim: A.
        bins: bins per dimension (OpenVLA: 256).
        normaliser: a fitted normaliser to share; by default one is fitted in :meth:`fit`.
    """

    kind = "binning"

    def __init__(
        self,
        *,
        horizon: int = 8,
        action_dim: int = ACTION_DIM,
        bins: int = 256,
        normaliser: Normaliser | None = None,
    ) -> None:
        if bins < 2:
            raise ValueError(f"bins ({bins}) must be at least 2")
        self.horizon, self.action_dim, self.bins = horizon, action_dim, bins
        self.normaliser = normaliser or Normaliser(action_dim=action_dim)

    @property
    def vocab_size(self) -> int:
        return self.bins

    @property
    def fitted(self) -> bool:
        return self.normaliser.fitted

    def config(self) -> dict[str, Any]:
        return {"horizon": self.horizon, "action_dim": self.action_dim, "bins": self.bins}

    def fit(self, chunks: Tensor | np.ndarray) -> BinningTokenizer:
        """Only the normaliser learns anything (if it is not fitted yet)."""
        self._normalised(chunks, fit=True)
        return self

    def encode(self, chunks: Tensor | np.ndarray) -> Tensor:
        """Chunks (B, H, A) in environment units -> ids (B, H*A)."""
        self._check_fitted()
        y = self._normalised(chunks)
        ids = torch.floor((y + 1) / 2 * self.bins).long().clamp(0, self.bins - 1)  # +1 lands in the top bin
        return ids.flatten(1)

    def decode_normalised(self, ids: Tensor) -> Tensor:
        """Ids (B, H*A) -> bin centres (B, H, A) in normalised units (float64)."""
        self._check_fitted()
        expected = self.horizon * self.action_dim
        if (
            not isinstance(ids, Tensor)
            or ids.ndim != 2
            or ids.shape[1] != expected
            or ids.is_floating_point()
        ):
            raise ValueError(
                f"binning ids must be an integer tensor (B, H*A={expected}), got {_describe(ids)}"
            )
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.bins):
            raise ValueError(f"binning ids must lie in [0, {self.bins})")
        centres = (ids.double() + 0.5) / self.bins * 2 - 1
        return centres.view(-1, self.horizon, self.action_dim)

    def decode(self, ids: Tensor) -> Tensor:
        """Ids (B, H*A) -> chunks (B, H, A) in environment units (float32)."""
        return self.normaliser.denormalise(self.decode_normalised(ids)).float()


def _describe(ids: object) -> str:
    if isinstance(ids, Tensor):
        return f"{ids.dtype} tensor of shape {tuple(ids.shape)}"
    return type(ids).__name__
