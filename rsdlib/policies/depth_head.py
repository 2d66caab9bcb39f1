"""The learned depth monitor's model: a tiny head that predicts how much the finer RFSQ layers still add.

After the first k of L layers are decoded, layers k..L-1 still move the chunk by some amount;
where that amount is small, decoding may stop at k. :class:`ResidualNormHead` predicts it for
every k at once from the main policy's pooled prefix state (the trunk computes that state anyway,
so asking costs one small MLP per chunk). It is trained on the demonstrations with the main trunk
frozen (:func:`depth_head_loss`), against :func:`remaining_residual` of the demonstrations' tokens;
the ``learned`` monitor (:mod:`rsdlib.decoding.monitors`) reads its predictions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from rsdlib.policies.configuration import _build
from rsdlib.policies.heads import RFSQAutoregressive
from rsdlib.policies.packed import PackedChunks
from rsdlib.policies.trunk import pooled_prefix

if TYPE_CHECKING:
    from rsdlib.tokenizers.base import ActionTokenizer

#: The head predicts ``log(size + EPS)``: sizes span decades, and the 0 at k = L stays finite.
EPS = 1e-3


@dataclass(frozen=True)
class DepthHeadConfig:
    """The residual-norm head that reads the main trunk's pooled prefix state.

    Attributes:
        trunk_hidden_size: width of the main trunk's states it reads.
        hidden_size: its own width.
        num_layers: L, the RFSQ layers of the main policy.
        metadata: free JSON (training run, which main policy, which tokenizer).
    """

    trunk_hidden_size: int = 128
    hidden_size: int = 64
    num_layers: int = 4
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("trunk_hidden_size", "hidden_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"DepthHeadConfig.{name} ({getattr(self, name)}) must be at least 1")
        if self.num_layers < 2:
            raise ValueError(
                f"DepthHeadConfig.num_layers ({self.num_layers}) must be at least 2: with one RFSQ "
                "layer there is no depth to choose"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DepthHeadConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise."""
        return _build(cls, data)


class ResidualNormHead(nn.Module):
    """An MLP from the pooled prefix state ``(B, D)`` to ``(B, L)`` log remaining-residual sizes.

    Entry k-1 is ``log(size + EPS)`` of what layers k..L-1 still add once the first k layers are
    decoded (see :func:`remaining_residual`); the last entry (k = L, nothing left) is fixed at
    ``log(EPS)``, so only L-1 values are learned.
    """

    def __init__(self, *, config: DepthHeadConfig) -> None:
        super().__init__()
        self.config = config
        D, H, self.L = config.trunk_hidden_size, config.hidden_size, config.num_layers
        self.net = nn.Sequential(
            nn.LayerNorm(D), nn.Linear(D, H), nn.GELU(), nn.Linear(H, H), nn.GELU(), nn.Linear(H, self.L - 1)
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` pooled prefix states -> ``(B, L)`` predicted ``log(size + EPS)``."""
        out = self.net(pooled.to(self.net[1].weight.dtype))
        last = out.new_full((out.shape[0], 1), math.log(EPS))
        return torch.cat([out, last], dim=1)

    @torch.no_grad()
    def predict_remaining(self, pooled: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` predicted remaining residual sizes (normalised action units; the last is 0)."""
        sizes = (self(pooled).exp() - EPS).clamp(min=0)
        sizes[:, -1] = 0
        return sizes

    def start_at(self, targets: torch.Tensor) -> None:
        """Set the output bias to the targets' mean log size per layer, so that a short training
        run starts from the per-layer average and spends its steps on what differs per moment."""
        with torch.no_grad():
            self.net[-1].bias.copy_(log_size(targets)[:, :-1].mean(dim=0))

    def loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Squared error of the predicted log sizes for k = 1..L-1.

        Args:
            batch: ``pooled`` ``(B, D)`` (the main trunk's, computed without gradient) and
                ``remaining`` ``(B, L)`` (:func:`remaining_residual` of the batch's tokens).
        """
        pred = self(batch["pooled"])[:, :-1]
        target = log_size(batch["remaining"])[:, :-1].to(pred.dtype)
        loss = F.mse_loss(pred, target)
        return loss, {"loss": loss.item(), "log_mae": (pred - target).abs().mean().item()}


def log_size(sizes: torch.Tensor) -> torch.Tensor:
    """What the head predicts for a remaining size: ``log(size + EPS)``."""
    return (sizes.double().clamp(min=0) + EPS).log()


@torch.no_grad()
def remaining_residual(
    tokenizer: ActionTokenizer, tokens: torch.Tensor, *, batch_size: int = 4096
) -> torch.Tensor:
    """What the finer layers still add: the head's training target.

    Entry ``[i, k-1]`` is the mean absolute difference, over the chunk's H steps and A action
    dimensions, between chunk i decoded from all L layers and from its first k layers (k = 1..L),
    in the tokenizer's normalised action units (``decode_normalised`` where it has one, as the
    ``plan_instability`` monitor measures). Entry ``[i, L-1]`` is 0 by definition.

    Args:
        tokenizer: the RFSQ tokenizer the tokens came from (its ``decode`` takes ``(B, N, k)``).
        tokens: ``(M, L, N)`` RFSQ ids.
        batch_size: chunks decoded at a time.

    Returns:
        ``(M, L)`` float32 on the CPU.
    """
    if tokens.dim() != 3:
        raise ValueError(f"tokens must be (M, L, N) RFSQ ids, got shape {tuple(tokens.shape)}")
    M, L, _ = tokens.shape
    have = getattr(tokenizer, "num_layers", L)
    if have != L:
        raise ValueError(f"the tokens hold {L} layers, the tokenizer decodes {have}")
    decode: Callable[[torch.Tensor], torch.Tensor] = (
        getattr(tokenizer, "decode_normalised", None) or tokenizer.decode
    )
    out = torch.zeros(M, L, dtype=torch.float64)
    for start in range(0, M, batch_size):
        ids = tokens[start : start + batch_size].cpu().transpose(1, 2)  # (b, N, L)
        full = decode(ids).double()
        for k in range(1, L):
            out[start : start + len(ids), k - 1] = (
                (full - decode(ids[..., :k]).double()).abs().mean(dim=(1, 2))
            )
    return out.float()


def depth_head_loss(
    main: RFSQAutoregressive, head: ResidualNormHead
) -> Callable[[Mapping[str, Any]], tuple[torch.Tensor, dict[str, float]]]:
    """The training loss of a depth head on a frozen main trunk, for :func:`rsdlib.train.train`.

    The batch holds ``obs`` and ``remaining`` ``(B, L)`` (:func:`remaining_residual` of its tokens).
    """
    check_depth_head(head, main)

    def loss_fn(batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad():
            state = main.trunk.prefix(batch["obs"], use_cache=False)
            pooled = pooled_prefix(state.prefix_hidden, state.prefix_valid)
        return head.loss({"pooled": pooled, "remaining": batch["remaining"]})

    return loss_fn


def check_depth_head(head: ResidualNormHead, main: RFSQAutoregressive) -> None:
    """Raise ValueError when the head does not read this main policy's trunk or layers."""
    if head.config.trunk_hidden_size != main.trunk.hidden_size:
        raise ValueError(
            f"the depth head reads trunk states of width {head.config.trunk_hidden_size}, the main "
            f"trunk's are {main.trunk.hidden_size}: load the depth head trained on this main policy"
        )
    if head.L != main.L:
        raise ValueError(
            f"the depth head predicts for {head.L} RFSQ layers, the main policy decodes {main.L}"
        )


@torch.no_grad()
def evaluate_depth_head(
    head: ResidualNormHead,
    main: RFSQAutoregressive,
    data: PackedChunks,
    remaining: torch.Tensor,
    *,
    batch_size: int = 256,
) -> dict[str, float]:
    """How well the head predicts the remaining residual of held-out chunks (k = 1..L-1).

    Returns:
        ``loss`` (squared error of the log size, as trained), ``log_mae`` (mean absolute error
        of the log size), ``log_corr`` (Pearson correlation of predicted and true log sizes over
        every chunk and layer: mostly says the head knows that coarser prefixes leave more),
        ``log_corr_within_layer`` (the correlation across chunks per k, averaged over k: whether
        it tells moments apart, which is what the monitor needs; NaN where no layer's target
        varies) and ``size_mae`` (the error of the size itself, normalised action units).
    """
    check_depth_head(head, main)
    if len(remaining) != len(data):
        raise ValueError(f"{len(remaining)} targets for {len(data)} chunks")
    preds = []
    for batch in data.batches(batch_size, trunk_config=main.config.trunk, dtype=main.dtype):
        state = main.trunk.prefix(batch["obs"], use_cache=False)
        preds.append(head(pooled_prefix(state.prefix_hidden, state.prefix_valid))[:, :-1].double().cpu())
    pred = torch.cat(preds)  # (M, L-1), in the order of the chunks
    target = log_size(remaining.cpu())[:, :-1]
    err = pred - target
    within = [_pearson(pred[:, k], target[:, k]) for k in range(pred.shape[1])]
    within = [c for c in within if not math.isnan(c)]
    return {
        "loss": float((err**2).mean()),
        "log_mae": float(err.abs().mean()),
        "log_corr": _pearson(pred.flatten(), target.flatten()),
        "log_corr_within_layer": float(sum(within) / len(within)) if within else float("nan"),
        "size_mae": float(((pred.exp() - EPS).clamp(min=0) - remaining.cpu().double()[:, :-1]).abs().mean()),
    }


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation (NaN when either side is constant)."""
    a, b = a - a.mean(), b - b.mean()
    denom = float(a.norm() * b.norm())
    return float((a * b).sum()) / denom if denom > 0 else float("nan")
