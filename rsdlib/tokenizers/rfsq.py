"""RFSQ: residual finite scalar quantization of action chunks, coarse to fine.

A chunk (H, A) in normalised units is flattened and mapped by a small residual MLP to N latent
vectors of C = len(levels) channels. ``vector_quantize_pytorch.ResidualFSQ`` quantizes them
with L layers: layer l rounds what layers < l left over, divided by ``levels ** -l`` first, so
its grid is ``levels`` times finer than layer l-1's and the residual always spans it (the
earlier prototype's fixed grid after tanh left every layer after the first on the middle
index). Each layer gives one token per latent, an index into the product codebook of
``prod(levels)`` codes. The decoder maps the sum of the first k layers' codes back to a chunk,
for any k in 1..L; training with quantize dropout makes every such prefix a usable action.

Levels may differ per layer (``levels=[[2, 2, 2, 2], [4, 4, 4, 4], ...]``, the same number of
channels in each): coarse layers with few codes are easier to draft, since a drafted layer is
accepted only if all its tokens match (:class:`PerLayerResidualFSQ`). A policy's vocabulary is
then the largest layer's; each layer's logits past its own codes are masked
(``ActionSpace.layer_codebook_sizes``).

Tokens are all a chunk's code: the quantizer works on the encoder output as it is (no
per-vector statistics, which made the prototype's tokens undecodable), so
``decode(encode(x))`` equals the forward reconstruction bit for bit.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from vector_quantize_pytorch import FSQ

from rsdlib.actions import ACTION_DIM
from rsdlib.half_weights import dtype_name, replace_file, to_half
from rsdlib.progress import progress as progress_bar
from rsdlib.seeding import seeded
from rsdlib.tokenizers.base import ActionTokenizer
from rsdlib.tokenizers.errors import REGENERATE, TokenizerFileError
from rsdlib.tokenizers.normaliser import Normaliser

WEIGHTS_FILE = "model.safetensors"
#: Ten binary channels in every layer: 1024 codes per token (notebook 02's sweep).
DEFAULT_LEVELS = (2,) * 10
#: Chunks per forward pass inside encode/decode, bounding memory on large data sets.
_SLICE = 65536


def index_to_digits(ids: Tensor, levels: list[int] | tuple[int, ...] | Tensor) -> Tensor:
    """Split flat FSQ indices into per-channel level digits (mixed radix, channel 0 least significant).

    This is ``FSQ``'s own index layout: ``id = sum_c digit_c * prod(levels[:c])``.

    Args:
        ids: integer tensor of any shape (...), each in [0, prod(levels)).
        levels: FSQ levels per channel, e.g. [8, 5, 5, 5]; or a ``(..., C)`` tensor of levels per
            id (broadcast against ids), for ids of layers with different levels.

    Returns:
        (..., C) LongTensor; entry c is in [0, levels[c]).
    """
    levels_t = torch.as_tensor(levels, dtype=torch.long, device=ids.device)
    basis = torch.cumprod(torch.cat([torch.ones_like(levels_t[..., :1]), levels_t[..., :-1]], -1), -1)
    ids = ids.long()
    if (ids < 0).any() or (ids >= levels_t.prod(-1)).any():
        raise ValueError(
            f"FSQ indices must lie in [0, prod(levels)) for levels {levels_t.unique(dim=0).tolist()}"
        )
    return (ids.unsqueeze(-1) // basis) % levels_t


def digits_to_index(digits: Tensor, levels: list[int] | tuple[int, ...]) -> Tensor:
    """Inverse of :func:`index_to_digits`: (..., C) digits to (...) flat indices."""
    levels_t = torch.tensor(list(levels), dtype=torch.long, device=digits.device)
    if digits.shape[-1] != len(levels_t) or (digits < 0).any() or (digits >= levels_t).any():
        raise ValueError(
            f"digits must be (..., {len(levels_t)}) with entry c in [0, levels[c]) for {list(levels)}"
        )
    basis = torch.cumprod(torch.cat([levels_t.new_ones(1), levels_t[:-1]]), 0)
    return (digits.long() * basis).sum(-1)


class _ResidualMLP(nn.Module):
    """in -> hidden -> ``depth`` pre-norm residual blocks -> out."""

    def __init__(self, d_in: int, d_out: int, *, hidden: int, depth: int) -> None:
        super().__init__()
        self.inp = nn.Linear(d_in, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden)
            )
            for _ in range(depth)
        )
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, d_out))

    def forward(self, x: Tensor) -> Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


class PerLayerResidualFSQ(nn.Module):
    """Residual FSQ whose layers may each have their own levels (``vector_quantize_pytorch.FSQ`` each).

    ``ResidualFSQ``'s algorithm with one set of levels per layer: the input is soft-clamped to
    layer 0's range, and layer l quantizes the residual divided by ``prod_{j<l} levels_j ** -1``
    (per channel), so each layer's grid is its predecessor's levels times finer and the residual
    spans it. With the same levels at every layer its ids and codes are ``ResidualFSQ``'s, bit for
    bit (a test holds it to that); that library class takes one set of levels for all layers.

    Args:
        layer_levels: L lists of C levels (>= 2 each).
    """

    def __init__(self, layer_levels: list[list[int]]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            FSQ(levels=list(lv), dim=len(lv), preserve_symmetry=True, bound_hard_clamp=True)
            for lv in layer_levels
        )
        levels = torch.tensor(layer_levels, dtype=torch.float32)  # (L, C)
        finer = torch.cat([torch.ones_like(levels[:1]), levels[:-1]]).cumprod(0)  # prod_{j<l} levels_j
        self.register_buffer("scales", finer.reciprocal(), persistent=False)
        self.register_buffer("clamp_value", 1 + 1 / (levels[0] - 1), persistent=False)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def forward(self, x: Tensor, *, keep: int | None = None) -> tuple[Tensor, Tensor]:
        """Quantize ``x`` ``(B, N, C)`` with the first ``keep`` layers (default all; quantize dropout).

        Returns:
            ``(B, N, C)`` the sum of the kept layers' codes and ``(B, N, L)`` ids (-1 past ``keep``).
        """
        keep = self.num_layers if keep is None else keep
        x = (x / self.clamp_value).tanh() * self.clamp_value
        residual, out, ids = x, torch.zeros_like(x), []
        for layer, fsq in enumerate(self.layers):
            if layer >= keep:
                ids.append(torch.full(x.shape[:2], -1, dtype=torch.long, device=x.device))
                continue
            codes, index = fsq(residual / self.scales[layer])
            codes = codes * self.scales[layer]
            residual = residual - codes.detach()
            out = out + codes
            ids.append(index.long())
        return out, torch.stack(ids, dim=-1)

    def output_from_ids(self, ids: Tensor) -> Tensor:
        """``(B, N, k)`` ids of the first k layers (-1: a dropped layer) -> ``(B, N, C)`` sum of codes."""
        out = 0.0
        for layer in range(ids.shape[-1]):
            index = ids[..., layer]
            codes = self.layers[layer].indices_to_codes(index.clamp(min=0)) * self.scales[layer]
            out = out + codes * (index >= 0).unsqueeze(-1)
        return out


class RFSQAutoencoder(nn.Module):
    """Encoder, :class:`PerLayerResidualFSQ` and decoder; works on normalised chunks.

    Args:
        horizon: H, actions per chunk.
        action_dim: A.
        num_latents: N, latent vectors (tokens per layer).
        layer_levels: L lists of FSQ levels per latent channel (C each); layer l has
            prod(layer_levels[l]) codes.
        hidden: width of the encoder and decoder MLPs.
        depth: residual blocks in each MLP.
    """

    def __init__(
        self, *, horizon: int, action_dim: int, num_latents: int, layer_levels: list[list[int]], hidden: int,
        depth: int,
    ) -> None:  # fmt: skip
        super().__init__()
        self.horizon, self.action_dim, self.num_latents = horizon, action_dim, num_latents
        self.num_layers, self.channels = len(layer_levels), len(layer_levels[0])
        self.encoder = _ResidualMLP(
            horizon * action_dim, num_latents * self.channels, hidden=hidden, depth=depth
        )
        self.decoder = _ResidualMLP(
            num_latents * self.channels, horizon * action_dim, hidden=hidden, depth=depth
        )
        # No projections inside the quantizer: it has no parameters and its codes are exactly
        # what the decoder reads.
        self.quantizer = PerLayerResidualFSQ(layer_levels)

    def latents(self, x: Tensor) -> Tensor:
        """(B, H, A) normalised chunks -> (B, N, C) continuous latents."""
        return self.encoder(x.flatten(1)).view(-1, self.num_latents, self.channels)

    def decode_latents(self, z: Tensor) -> Tensor:
        """(B, N, C) quantized latents -> (B, H, A) normalised chunks."""
        return self.decoder(z.flatten(1)).view(-1, self.horizon, self.action_dim)

    def forward(self, x: Tensor, *, dropout_seed: int | None = None) -> tuple[Tensor, Tensor]:
        """Quantize and reconstruct.

        Args:
            x: (B, H, A) normalised chunks.
            dropout_seed: in training mode, the seed that picks how many layers are kept
                (quantize dropout); None keeps all L layers.

        Returns:
            (B, H, A) reconstruction and (B, N, L) ids (-1 for layers dropped).
        """
        z = self.latents(x)
        keep = None
        if dropout_seed is not None and self.training and torch.is_grad_enabled():
            # ResidualFSQ's draw: keep layers 0..i for i uniform in 0..L-1
            keep = random.Random(dropout_seed).randrange(self.num_layers) + 1
        quantized, ids = self.quantizer(z, keep=keep)
        return self.decode_latents(quantized), ids

    def quantized_from_ids(self, ids: Tensor) -> Tensor:
        """(B, N, k) ids of the first k layers -> (B, N, C) sum of their codes."""
        return self.quantizer.output_from_ids(ids)


class RFSQTokenizer(ActionTokenizer):
    """Residual FSQ action tokenizer: ``encode`` gives (B, N, L) ids, ``decode`` any k-layer prefix.

    Args:
        horizon: H, actions per chunk.
        action_dim: A.
        num_latents: N (<= H), tokens per layer.
        num_layers: L, layers (coarse to fine).
        levels: FSQ levels per latent channel, the same for every layer; or L lists of them, one
            per layer (each with the same number of channels). Layer l has prod(levels of l) codes;
            ``codebook_size`` is the largest layer's.
        hidden: MLP width of encoder and decoder.
        depth: residual blocks per MLP.
        steps: training steps of :meth:`fit`.
        batch_size: chunks per training step.
        lr: peak AdamW learning rate (linear warm-up, then cosine decay to 0).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps.
        seed: seeds the initial weights and the training generator (batches, quantize dropout).
        normaliser: a fitted normaliser to share; by default one is fitted in :meth:`fit`.

    The defaults (N=4, L=4, ten binary channels: 1024 codes per token, 16 tokens per chunk) are
    what notebook 02_action_tokenizers' sweep picked on the libero_spatial demonstrations.
    """

    kind = "rfsq"

    def __init__(
        self,
        *,
        horizon: int = 8,
        action_dim: int = ACTION_DIM,
        num_latents: int = 4,
        num_layers: int = 4,
        levels: Sequence[int] | Sequence[Sequence[int]] = DEFAULT_LEVELS,
        hidden: int = 256,
        depth: int = 2,
        steps: int = 3000,
        batch_size: int = 256,
        lr: float = 8e-3,
        weight_decay: float = 1e-4,
        warmup_steps: int = 100,
        seed: int = 0,
        normaliser: Normaliser | None = None,
    ) -> None:
        if not 1 <= num_latents <= horizon:
            raise ValueError(f"num_latents ({num_latents}) must be in 1..horizon ({horizon})")
        if num_layers < 1:
            raise ValueError(f"num_layers ({num_layers}) must be at least 1")
        levels, self.layer_levels = _layer_levels(levels, num_layers)
        if steps < 1 or batch_size < 1 or warmup_steps < 0 or lr <= 0:
            raise ValueError(f"bad training settings: steps={steps}, batch_size={batch_size}, lr={lr}")
        self.horizon, self.action_dim = horizon, action_dim
        self.num_latents, self.num_layers, self.levels = num_latents, num_layers, levels
        self.hidden, self.depth = hidden, depth
        self.steps, self.batch_size, self.lr = steps, batch_size, lr
        self.weight_decay, self.warmup_steps, self.seed = weight_decay, warmup_steps, seed
        self.normaliser = normaliser or Normaliser(action_dim=action_dim)
        if self.normaliser.action_dim != action_dim:
            raise ValueError(
                f"normaliser is for action_dim {self.normaliser.action_dim}, tokenizer for {action_dim}"
            )
        with seeded(seed):  # the initial weights depend on the seed alone
            self.model = RFSQAutoencoder(
                horizon=horizon, action_dim=action_dim, num_latents=num_latents,
                layer_levels=self.layer_levels, hidden=hidden, depth=depth,
            )  # fmt: skip
        self.model.eval()
        self._fitted = False
        #: Training loss per step of the last :meth:`fit` (full-depth MSE, prefix MSE).
        self.history: list[tuple[float, float]] = []

    # -- properties the policies rely on ---------------------------------------------------

    @property
    def layer_codebook_sizes(self) -> tuple[int, ...]:
        """Codes of each layer, prod(its levels)."""
        return tuple(math.prod(lv) for lv in self.layer_levels)

    @property
    def codebook_size(self) -> int:
        """The largest layer's codes: the vocabulary of one token."""
        return max(self.layer_codebook_sizes)

    @property
    def vocab_size(self) -> int:
        return self.codebook_size

    @property
    def fitted(self) -> bool:
        return self._fitted

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def config(self) -> dict[str, Any]:
        return {
            "horizon": self.horizon, "action_dim": self.action_dim, "num_latents": self.num_latents,
            "num_layers": self.num_layers, "levels": self.levels, "hidden": self.hidden, "depth": self.depth,
            "steps": self.steps, "batch_size": self.batch_size, "lr": self.lr, "weight_decay": self.weight_decay,
            "warmup_steps": self.warmup_steps, "seed": self.seed,
        }  # fmt: skip

    # -- training --------------------------------------------------------------------------

    def fit(self, chunks: Tensor | np.ndarray, *, progress: bool = True) -> RFSQTokenizer:
        """Train encoder and decoder on chunks (B, H, A) in environment units.

        Each step draws a batch with a seeded generator and sums two losses: the MSE of the
        full L-layer reconstruction and the MSE of a random k-layer prefix (quantize dropout,
        k uniform in 1..L), so the last layer and every prefix both decode well.
        """
        data = self._normalised(chunks, fit=True).float()
        generator = torch.Generator().manual_seed(self.seed)
        model = self.model.train()
        optimiser = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, _warmup_cosine(self.warmup_steps, self.steps))
        self.history = []
        bar = progress_bar(
            range(self.steps), desc=f"RFSQ N={self.num_latents} L={self.num_layers}", disable=not progress
        )
        for _ in bar:
            batch = data[torch.randint(len(data), (self.batch_size,), generator=generator)]
            dropout_seed = int(torch.randint(2**31 - 1, (), generator=generator))
            full, _ = model(batch)
            prefix, _ = model(batch, dropout_seed=dropout_seed)
            loss_full = nn.functional.mse_loss(full, batch)
            loss_prefix = nn.functional.mse_loss(prefix, batch)
            optimiser.zero_grad(set_to_none=True)
            (loss_full + loss_prefix).backward()
            optimiser.step()
            schedule.step()
            self.history.append((loss_full.item(), loss_prefix.item()))
            if len(self.history) % 50 == 0:
                bar.set_postfix(full=f"{loss_full.item():.2e}", prefix=f"{loss_prefix.item():.2e}")
        model.eval()
        self._fitted = True
        return self

    # -- tokens ----------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, chunks: Tensor | np.ndarray) -> Tensor:
        """Chunks (B, H, A) in environment units -> ids (B, N, L), LongTensor in [0, codebook_size)."""
        self._check_fitted()
        x = self._normalised(chunks).float()
        return torch.cat([self.model(part)[1] for part in x.split(_SLICE)])

    @torch.no_grad()
    def decode_normalised(self, ids: Tensor) -> Tensor:
        """Ids (B, N, k) of the first k layers (1 <= k <= L) -> chunks (B, H, A) in normalised units.

        The gripper channel is the decoder's raw output here; :meth:`decode` thresholds it.
        """
        self._check_fitted()
        ids = self._check_ids(ids)
        here = next(self.model.parameters()).device  # ids may come from a policy on another device
        out = torch.cat(
            [
                self.model.decode_latents(self.model.quantized_from_ids(part.to(here)))
                for part in ids.split(_SLICE)
            ]
        )
        return out.to(ids.device)

    def decode(self, ids: Tensor) -> Tensor:
        """Ids (B, N, k) of the first k layers (1 <= k <= L) -> chunks (B, H, A) in environment units
        (on the ids' device; the tokenizer itself computes on its own, the CPU by default)."""
        return self.normaliser.denormalise(self.decode_normalised(ids).cpu()).to(ids.device)

    @torch.no_grad()
    def reconstruct(self, chunks: Tensor | np.ndarray) -> Tensor:
        """The forward pass with all L layers (quantizer included): chunks (B, H, A) in environment units.

        Equals ``decode(encode(chunks))`` exactly; a test holds it to that.
        """
        self._check_fitted()
        x = self._normalised(chunks).float()
        return self.normaliser.denormalise(torch.cat([self.model(part)[0] for part in x.split(_SLICE)]))

    def truncated(self, num_layers: int) -> RFSQTokenizer:
        """The same tokenizer keeping only its first ``num_layers`` layers (same weights, exact).

        Layer l's grid depends on l alone, so the first k layers' ids and their decodes are the
        same in the truncated tokenizer as in this one, for every k <= ``num_layers``.
        """
        self._check_fitted()
        if not 1 <= num_layers <= self.num_layers:
            raise ValueError(f"num_layers ({num_layers}) must be in 1..{self.num_layers}")
        levels = self.levels if self.uniform_levels else self.layer_levels[:num_layers]
        out = RFSQTokenizer(
            **{**self.config(), "num_layers": num_layers, "levels": levels}, normaliser=self.normaliser
        )
        out.model.load_state_dict(self.model.state_dict())
        out._fitted, out.history = True, list(self.history)
        return out

    @property
    def uniform_levels(self) -> bool:
        """Whether every layer has the same levels (``levels`` is one list)."""
        return all(lv == self.layer_levels[0] for lv in self.layer_levels)

    def index_to_digits(self, ids: Tensor, layer: int | Tensor | None = None) -> Tensor:
        """Ids (...) -> per-channel level digits (..., C); see the module's :func:`index_to_digits`.

        Args:
            layer: the layer of the ids (an int, or a tensor broadcast against ids); needed only
                when the layers' levels differ.
        """
        if self.uniform_levels:
            return index_to_digits(ids, self.layer_levels[0])
        if layer is None:
            raise ValueError(
                f"the layers' levels differ ({self.layer_levels}): say which layer the ids are of"
            )
        table = torch.tensor(self.layer_levels, dtype=torch.long, device=ids.device)  # (L, C)
        return index_to_digits(ids, table[torch.as_tensor(layer, device=ids.device).expand_as(ids)])

    def _check_ids(self, ids: Tensor) -> Tensor:
        if not isinstance(ids, Tensor) or ids.dtype not in (
            torch.int64,
            torch.int32,
            torch.int16,
            torch.uint8,
        ):
            raise TypeError(f"RFSQ ids must be an integer tensor (B, N, k), got {type(ids).__name__}")
        if ids.ndim != 3 or ids.shape[1] != self.num_latents or not 1 <= ids.shape[2] <= self.num_layers:
            raise ValueError(
                f"RFSQ ids must have shape (B, N={self.num_latents}, k) with 1 <= k <= L={self.num_layers}, "
                f"got {tuple(ids.shape)}"
            )
        sizes = torch.tensor(self.layer_codebook_sizes[: ids.shape[2]], device=ids.device)
        if ids.numel() and (int(ids.min()) < 0 or bool((ids >= sizes).any())):
            codes = (
                self.codebook_size
                if self.uniform_levels
                else f"codes of their layer, {list(self.layer_codebook_sizes)}"
            )
            raise ValueError(
                f"RFSQ ids must lie in [0, {codes}); got values in [{int(ids.min())}, {int(ids.max())}]"
            )
        return ids.long()

    # -- persistence -----------------------------------------------------------------------

    def _save_state(self, directory: Path) -> None:
        save_file(
            {k: v.contiguous() for k, v in self.model.state_dict().items()}, str(directory / WEIGHTS_FILE)
        )

    def _load_state(self, directory: Path) -> None:  # half-precision weights (see compact) upcast here
        path = directory / WEIGHTS_FILE
        if not path.exists():
            raise FileNotFoundError(f"RFSQ weights {path} are missing; re-run notebook 02_action_tokenizers")
        try:
            weights = load_file(str(path))
        except SafetensorError as err:
            raise TokenizerFileError(
                f"RFSQ weights {path} are unreadable (truncated?): {err}; {REGENERATE}"
            ) from err
        try:
            self.model.load_state_dict(weights)
        except RuntimeError as err:  # missing keys or other shapes: weights of another config
            raise TokenizerFileError(
                f"RFSQ weights {path} do not fit the config beside them ({err}); {REGENERATE}"
            ) from err
        self.model.eval()
        self._fitted = True

    @classmethod
    def load(cls, directory: str | Path) -> RFSQTokenizer:
        return super().load(directory)  # type: ignore[return-value]


def compact(directory: str | Path, storage_dtype: torch.dtype = torch.float16) -> Path:
    """Rewrite a saved RFSQ tokenizer's weights in half precision, in place, to shrink what ships.

    Loading upcasts them to float32. Measured on the shipped lowdim tokenizers (4000 validation
    chunks each): decoded actions move by at most 7e-4 in normalised units (the reconstruction
    error is ~0.09), and 0.2-0.3% of encoded tokens change (values on a level's boundary), which is
    why the recipe encodes its training data with the float32 tokenizer and compacts the copy it
    ships. The file is written beside the old one and renamed over it, so an interruption loses
    nothing.

    Raises:
        FileNotFoundError | TokenizerFileError: ``directory`` holds no readable RFSQ tokenizer.
        ValueError: ``storage_dtype`` is not a half type, or a weight does not fit in it.
    """
    dtype_name(storage_dtype)  # refuses a type that is not a half one before anything is read
    directory = Path(directory)
    RFSQTokenizer.load(directory)  # refuses a missing, corrupt or mismatched tokenizer before rewriting
    path = directory / WEIGHTS_FILE
    replace_file(path, to_half(load_file(str(path)), storage_dtype, where=str(path)), check=load_file)
    return directory


def _layer_levels(
    levels: Sequence[int] | Sequence[Sequence[int]], num_layers: int
) -> tuple[list[int] | list[list[int]], list[list[int]]]:
    """``levels`` as configured (a list, or one list per layer) and as L lists, checked."""
    per_layer = bool(levels) and all(isinstance(lv, (list, tuple)) for lv in levels)
    layer_levels = (
        [[int(v) for v in lv] for lv in levels] if per_layer else [[int(v) for v in levels]] * num_layers
    )
    if len(layer_levels) != num_layers:
        raise ValueError(f"levels gives {len(layer_levels)} layers' levels, num_layers is {num_layers}")
    channels = {len(lv) for lv in layer_levels}
    if len(channels) != 1 or not layer_levels[0] or any(v < 2 for lv in layer_levels for v in lv):
        raise ValueError(
            f"levels ({list(levels)}) must be a non-empty list of ints >= 2, or one such list per layer, "
            "all with the same number of channels"
        )
    return (layer_levels if per_layer else layer_levels[0]), layer_levels


def _warmup_cosine(warmup: int, total: int):
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor
