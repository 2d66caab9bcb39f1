"""What every decoding loop returns, and the shared bookkeeping around it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from rsdlib.decoding.trace import DecodeTrace

if TYPE_CHECKING:
    from rsdlib.policies.configuration import ActionSpace
    from rsdlib.tokenizers.base import ActionTokenizer


@dataclass
class DecodeResult:
    """Decoded chunks for a batch.

    Attributes:
        tokens: ``(B, L, N)`` RFSQ tokens (``(B, T)`` FAST tokens padded with -1 for ``fast_ar``;
            None for ``l1_regression``).
        actions: ``(B, H, A)`` chunks, when a tokenizer was given: its ``decode`` output (environment
            units for ``rsdlib.tokenizers.RFSQTokenizer``); for ``l1_regression`` the head's output
            in the units it was trained on (the demonstrations' normalised units); else None.
        traces: one :class:`DecodeTrace` per item.
        pooled_prefix: ``(B, D)`` the main trunk's pooled prefix state, kept when a depth monitor
            ran (its history of the episode remembers it).
    """

    tokens: torch.Tensor | None
    actions: torch.Tensor | None
    traces: list[DecodeTrace]
    pooled_prefix: torch.Tensor | None = None

    def with_layer_actions(self, tokenizer: ActionTokenizer) -> DecodeResult:
        """Fill each RFSQ trace's ``layer_actions`` (the chunk decoded from the first k layers,
        k = 1..L) and return self.

        Kept out of decoding: the coarse-to-fine chunks are for looking at, and their L extra
        tokenizer calls (about 3 ms a chunk on a CPU) would otherwise count in every latency.
        """
        per_item = layer_actions(tokenizer, self.tokens)
        if per_item is not None:
            for trace, actions in zip(self.traces, per_item, strict=True):
                trace.layer_actions = actions
        return self


class Stopwatch:
    """Accumulates wall time per named step (``torch.cuda.synchronize`` first on a GPU)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def timings(self, *names: str) -> dict[str, float]:
        """Named steps (0 for unused ones) and their ``total``."""
        out = {n: self.seconds.get(n, 0.0) for n in names}
        out["total"] = sum(self.seconds.values())
        return out


def check_tokenizer(tokenizer: ActionTokenizer | None, actions: ActionSpace) -> None:
    """Raise if ``tokenizer`` does not fit the policy's token shape (``policy.config.actions``)."""
    if tokenizer is None:
        return
    num_layers, num_latents, codebook_size = actions.num_layers, actions.num_latents, actions.codebook_size
    have = (
        getattr(tokenizer, "num_layers", None),
        getattr(tokenizer, "num_latents", None),
        getattr(tokenizer, "codebook_size", None),
    )
    if have != (num_layers, num_latents, codebook_size):
        raise ValueError(
            f"tokenizer has (num_layers, num_latents, codebook_size) = {have}, the policy was built "
            f"for {(num_layers, num_latents, codebook_size)}: load the tokenizer the policy was trained with"
        )
    every = (codebook_size,) * num_layers
    have_sizes = tuple(getattr(tokenizer, "layer_codebook_sizes", every))
    if have_sizes != (actions.layer_codebook_sizes or every):
        raise ValueError(
            f"the tokenizer's layers have {list(have_sizes)} codes, the policy's "
            f"{list(actions.layer_codebook_sizes or every)}: load the tokenizer the policy was trained with"
        )


def layer_actions(tokenizer: ActionTokenizer, tokens: torch.Tensor) -> list[list[list[list[float]]]] | None:
    """Per item, the chunk decoded from the first k layers for k = 1..depth (``[B][depth][H][A]``;
    an item's depth ends at its first layer of -1 tokens, L when it has none)."""
    if tokenizer is None:
        return None
    L = tokens.shape[1]
    depth = (
        (tokens >= 0).all(dim=-1).long().cumprod(dim=1).sum(dim=1).cpu()
    )  # (B,) layers before the first -1
    usable = tokens.clamp(min=0)  # rows past an item's depth are decoded and dropped below
    per_k = [tokenizer.decode(usable[:, :k].transpose(1, 2)).double().tolist() for k in range(1, L + 1)]
    return [[per_k[k][i] for k in range(int(depth[i]))] for i in range(tokens.shape[0])]


def decode_actions(
    tokenizer: ActionTokenizer,
    tokens: torch.Tensor,
    depth: torch.Tensor | None = None,
    *,
    normalised: bool = False,
) -> torch.Tensor | None:
    """``(B, H, A)`` from ``(B, L, N)`` tokens (the contract's ``decode`` takes ``(B, N, k)``).

    With ``depth`` ``(B,)``, item i is the decode of its first ``depth[i]`` layers (one call per
    distinct depth), exactly what decoding those layers alone gives. ``normalised``: in the
    tokenizer's normalised units where it has them (``decode_normalised``)."""
    if tokenizer is None:
        return None
    decode = (getattr(tokenizer, "decode_normalised", None) if normalised else None) or tokenizer.decode
    if depth is None or bool((depth == tokens.shape[1]).all()):
        return decode(tokens.transpose(1, 2))
    out = None
    for k in sorted(set(depth.tolist())):
        rows = (depth == k).nonzero()[:, 0].to(tokens.device)
        part = decode(tokens[rows, :k].transpose(1, 2))
        if out is None:
            out = part.new_zeros((tokens.shape[0], *part.shape[1:]))
        out[rows.to(out.device)] = part
    return out


def mask_past_depth(tokens: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """``tokens`` ``(B, L, N)`` with the layers at and past each item's depth set to -1 (not decoded)."""
    layers = torch.arange(tokens.shape[1])[None, :]  # (1, L)
    past = (layers >= depth[:, None]).to(tokens.device)  # (B, L)
    return torch.where(past[:, :, None], torch.full_like(tokens, -1), tokens)
