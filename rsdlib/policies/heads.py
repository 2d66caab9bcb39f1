"""Heads on the trunk: the RSD main policy and the baselines that share its trunk.

- :class:`RFSQAutoregressive` (``rfsq_ar``): block l reads layer l-1's N tokens (block 0 a learned
  start) and predicts layer l's N tokens; autoregressive across layers, parallel within one.
- :class:`RFSQParallel` (``rfsq_parallel``): all L*N tokens in one block, one pass.
- :class:`L1Regression` (``l1_regression``): H action queries, one pass, L1 loss.
- :class:`FastAutoregressive` (``fast_ar``): FAST tokens one per block with an end token.

Token layout everywhere in ``rsdlib.policies`` and ``rsdlib.decoding`` is ``(B, L, N)``
(layer-major); the tokenizer contract's ``(B, N, L)`` is converted at its boundary.
Action position j of block b sits at rotary position ``P + b * block_size + j``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from rsdlib.policies.configuration import PolicyConfig, TrunkConfig
from rsdlib.policies.processor import InstructionTokenizer, ObservationBatch, prepare_observations
from rsdlib.policies.trunk import LlamaTrunk, Trunk, TrunkState


class BlockOutput(NamedTuple):
    """What a main pass over action blocks gives.

    Attributes:
        logits: ``(B, k, N, V)``.
        hidden: ``(B, k, N, D)`` the trunk's final states of those blocks: free by-products of the
            pass, which a drafter reading the main model's features (``HeadDrafter`` with
            ``reads_blocks``) takes as its input.
    """

    logits: torch.Tensor
    hidden: torch.Tensor


def per_layer_logits(
    x: torch.Tensor, out_weight: torch.Tensor, out_bias: torch.Tensor, layer: torch.Tensor
) -> torch.Tensor:
    """``x @ out_weight[layer] + out_bias[layer]`` row by row, without copying weights.

    Every layer's logits come from views of the ``(L, D, V)`` weights, then each row keeps its
    own layer's: L small matmuls instead of a gather of a ``(D, V)`` matrix per row, which costs
    a copy of the weights per row (most of a pass on a CPU), and no host sync (graph capturable).

    Args:
        x: ``(..., D)`` rows.
        out_weight: ``(L, D, V)``; out_bias: ``(L, V)``.
        layer: ``(...)`` each row's layer (in range).

    Returns:
        ``(..., V)``.
    """
    every = torch.stack([x @ out_weight[i] + out_bias[i] for i in range(out_weight.shape[0])], dim=-2)
    at = layer[..., None, None].expand(*layer.shape, 1, every.shape[-1])  # (..., 1, V)
    return every.gather(-2, at).squeeze(-2)


def output_bias(out_bias: torch.Tensor, code_mask: torch.Tensor | None) -> torch.Tensor:
    """``(L, V)`` output bias with each layer's codes past its own masked (``ActionSpace.code_mask``)."""
    return out_bias if code_mask is None else out_bias + code_mask


def build_trunk(config: TrunkConfig) -> Trunk:
    """The trunk ``config.kind`` names: the default small ``llama`` trunk or a ``llava`` VLM."""
    if config.kind == "llava":
        from rsdlib.policies.vlm_trunk import LlavaTrunk

        return LlavaTrunk(config=config)
    return LlamaTrunk(config=config)


class Policy(nn.Module):
    """A trunk plus one head; subclasses add the head.

    Args:
        config: the policy's config (the trunk's vocabulary included).
    """

    def __init__(self, *, config: PolicyConfig) -> None:
        super().__init__()
        self.config = config
        self.trunk = build_trunk(config.trunk)
        self.instruction_tokenizer = InstructionTokenizer(
            vocab=config.trunk.instruction_vocab, max_tokens=config.trunk.max_instruction_tokens
        )

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def prepare(self, observations: Sequence[Mapping[str, Any]] | ObservationBatch) -> ObservationBatch:
        """Observation dicts (or a batch) as trunk inputs on this policy's device and dtype."""
        if not isinstance(observations, ObservationBatch):
            observations = prepare_observations(
                observations, config=self.config.trunk, tokenizer=self.instruction_tokenizer
            )
        return observations.to(self.device, self.dtype)

    def prefix(self, obs: ObservationBatch) -> TrunkState:
        """The prefix pass (one sequential main pass)."""
        return self.trunk.prefix(obs)

    def loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss and metrics for a batch (``obs`` plus the head's targets)."""
        raise NotImplementedError


class RFSQAutoregressive(Policy):
    """``rfsq_ar``: the RSD main policy (and, smaller, the ``tiny_policy`` drafter)."""

    def __init__(self, *, config: PolicyConfig) -> None:
        super().__init__(config=config)
        a, D = config.actions, config.trunk.hidden_size
        self.L, self.N, self.V = a.num_layers, a.num_latents, a.codebook_size
        #: Layers the prefix pass decodes (:meth:`prefix_and_first_block`): a chunk costs
        #: ``L - prefix_layers`` main passes after it when decoded plainly.
        self.prefix_layers = 1
        self.start = nn.Parameter(torch.randn(self.N, D) * 0.02)  # block 0's input
        self.token_embed = nn.Embedding(max(self.L - 1, 1) * self.V, D)  # layer l's code, l < L-1
        self.block_embed = nn.Parameter(torch.randn(self.L, D) * 0.02)
        self.latent_embed = nn.Parameter(torch.randn(self.N, D) * 0.02)
        self.out_weight = nn.Parameter(torch.randn(self.L, D, self.V) * D**-0.5)
        self.out_bias = nn.Parameter(torch.zeros(self.L, self.V))
        self.register_buffer("code_mask", a.code_mask(), persistent=False)
        nn.init.normal_(self.token_embed.weight, std=0.02)

    # -- block inputs and outputs -----------------------------------------------------------------

    def block_inputs(self, tokens: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
        """Input embeddings of blocks.

        Args:
            tokens: ``(B, L, N)`` layer tokens (only layers < block are read).
            block: ``(B, k)`` block ids; ids >= L are padding (their input is clamped).

        Returns:
            ``(B, k, N, D)``.
        """
        b = block.clamp(0, self.L - 1)  # (B, k)
        prev = (b - 1).clamp(min=0)  # (B, k) the layer each block reads
        prev_tokens = torch.gather(tokens, 1, prev[:, :, None].expand(-1, -1, self.N))  # (B, k, N)
        embeds = self.token_embed(prev_tokens + (prev * self.V)[:, :, None])  # (B, k, N, D)
        start = self.start.to(embeds.dtype).expand_as(embeds)
        x = torch.where((b == 0)[:, :, None, None], start, embeds)
        return x + self.block_embed[b][:, :, None] + self.latent_embed  # (B, k, N, D)

    def block_outputs(self, hidden: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, k, N, V)`` from hidden ``(B, k, N, D)`` of blocks ``(B, k)``."""
        b = block.clamp(0, self.L - 1)  # (B, k)
        B, k, N, D = hidden.shape
        flat_b = b.reshape(-1)
        flat_h = hidden.reshape(B * k, N, D)
        out = hidden.new_empty(B * k, N, self.V)
        bias = output_bias(self.out_bias, self.code_mask)
        layers = flat_b.unique().tolist()
        if len(layers) == 1:
            return hidden @ self.out_weight[layers[0]] + bias[layers[0]]
        # One matmul per layer present (at most gamma + 1): no per-block copy of the (D, V) weights.
        for layer in layers:
            rows = (flat_b == layer).nonzero()[:, 0]
            out[rows] = flat_h[rows] @ self.out_weight[layer] + bias[layer]
        return out.reshape(B, k, N, self.V)

    def block_outputs_fixed(self, hidden: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
        """:meth:`block_outputs` without reading block ids on the host (:func:`per_layer_logits`):
        fixed work and no sync, so a CUDA graph can hold it (:mod:`rsdlib.decoding.graphed`)."""
        b = block.clamp(0, self.L - 1)[:, :, None].expand(hidden.shape[:3])  # (B, k, N)
        return per_layer_logits(hidden, self.out_weight, output_bias(self.out_bias, self.code_mask), b)

    def _positions(self, block: torch.Tensor) -> torch.Tensor:
        P = self.trunk.prefix_length
        j = torch.arange(self.N, device=block.device)
        return (P + block[:, :, None] * self.N + j).flatten(1)  # (B, k*N)

    def block_logits(
        self, state: TrunkState, tokens: torch.Tensor, start: torch.Tensor, count: torch.Tensor
    ) -> torch.Tensor:
        """The logits ``(B, k, N, V)`` of :meth:`run_blocks`."""
        return self.run_blocks(state, tokens, start, count).logits

    def run_blocks(
        self, state: TrunkState, tokens: torch.Tensor, start: torch.Tensor, count: torch.Tensor
    ) -> BlockOutput:
        """One main pass over blocks ``start[i] .. start[i] + count[i] - 1`` of every item.

        The blocks are appended to ``state``'s cache; the caller truncates what it rejects.

        Args:
            state: trunk state holding blocks ``< start[i]`` for item i.
            tokens: ``(B, L, N)`` layer tokens; block b reads layer b-1.
            start: ``(B,)`` first block per item.
            count: ``(B,)`` blocks per item (0 for an item with nothing to run); blocks >= L are
                never run.

        Returns:
            logits and hidden states of k = max(count) blocks; entries past an item's count are
            padding.
        """
        k = max(int(count.max()), 1)
        offs = torch.arange(k, device=start.device)
        block = start[:, None] + offs  # (B, k)
        valid = (offs < count[:, None]) & (block < self.L)  # (B, k)
        x = self.block_inputs(tokens, block)  # (B, k, N, D)
        B = x.shape[0]
        hidden = self.trunk.extend(
            state,
            x.reshape(B, k * self.N, -1),
            block=block.clamp(max=self.L - 1).repeat_interleave(self.N, dim=1),
            valid=valid.repeat_interleave(self.N, dim=1),
            positions=self._positions(block.clamp(max=self.L - 1)),
        ).reshape(B, k, self.N, -1)
        return BlockOutput(self.block_outputs(hidden, block), hidden)

    def prefix_and_first_block(self, obs: ObservationBatch) -> tuple[TrunkState, torch.Tensor]:
        """The state and layer 0's logits ``(B, N, V)`` of :meth:`prefix_with_first_block`."""
        state, out = self.prefix_with_first_block(obs)
        return state, out.logits[:, 0]

    def prefix_with_first_block(self, obs: ObservationBatch) -> tuple[TrunkState, BlockOutput]:
        """The prefix pass with block 0 in it: layer 0 reads no token (its input is ``start``),
        so decoding it needs no main pass of its own, in plain decoding and RSD alike.

        Returns:
            the state holding the prefix and block 0, and block 0's output (k = 1).
        """
        B = obs.batch_size
        block = torch.zeros(B, 1, dtype=torch.long, device=self.device)
        x = self.block_inputs(torch.zeros(B, self.L, self.N, dtype=torch.long, device=self.device), block)
        state, hidden = self.trunk.prefix_and_blocks(
            obs,
            x.reshape(B, self.N, -1),
            block=block.expand(B, self.N),
            valid=torch.ones(B, self.N, dtype=torch.bool, device=self.device),
            positions=self._positions(block),
        )
        hidden = hidden.reshape(B, 1, self.N, -1)
        return state, BlockOutput(self.block_outputs(hidden, block), hidden)

    def teacher_forced_logits(self, obs: ObservationBatch, tokens: torch.Tensor) -> torch.Tensor:
        """The logits ``(B, L, N, V)`` of :meth:`teacher_forced`."""
        return self.teacher_forced(obs, tokens).logits

    def teacher_forced(self, obs: ObservationBatch, tokens: torch.Tensor) -> BlockOutput:
        """All L blocks in one pass without a cache (training; the parity reference; a drafter's
        distillation targets).

        Args:
            obs: B observations.
            tokens: ``(B, L, N)`` target tokens (block l reads layer l-1).

        Returns:
            logits and hidden states of the L blocks.
        """
        B = tokens.shape[0]
        block = torch.arange(self.L, device=tokens.device).expand(B, self.L)  # (B, L)
        x = self.block_inputs(tokens, block)  # (B, L, N, D)
        _, hidden = self.trunk.full(
            obs,
            x.reshape(B, self.L * self.N, -1),
            block=block.repeat_interleave(self.N, dim=1),
            valid=torch.ones(B, self.L * self.N, dtype=torch.bool, device=tokens.device),
            positions=self._positions(block),
        )
        hidden = hidden.reshape(B, self.L, self.N, -1)
        return BlockOutput(self.block_outputs(hidden, block), hidden)

    def loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy over every layer's tokens.

        Args:
            batch: ``obs`` (:class:`ObservationBatch`) and ``tokens`` ``(B, L, N)``.
        """
        tokens = batch["tokens"]
        logits = self.teacher_forced_logits(batch["obs"], tokens)  # (B, L, N, V)
        loss = F.cross_entropy(logits.flatten(0, 2), tokens.flatten())
        acc = (logits.argmax(-1) == tokens).float().mean(dim=(0, 2))  # (L,)
        metrics = {"loss": loss.item()} | {f"acc_layer{i}": float(a) for i, a in enumerate(acc)}
        return loss, metrics


class RFSQParallel(Policy):
    """``rfsq_parallel``: every layer's tokens from learned queries in one block (one pass)."""

    def __init__(self, *, config: PolicyConfig) -> None:
        super().__init__(config=config)
        a, D = config.actions, config.trunk.hidden_size
        self.L, self.N, self.V = a.num_layers, a.num_latents, a.codebook_size
        self.queries = nn.Parameter(torch.randn(self.L, self.N, D) * 0.02)
        self.out_weight = nn.Parameter(torch.randn(self.L, D, self.V) * D**-0.5)
        self.out_bias = nn.Parameter(torch.zeros(self.L, self.V))
        self.register_buffer("code_mask", a.code_mask(), persistent=False)

    def _run(self, obs: ObservationBatch, state: TrunkState | None) -> torch.Tensor:
        B = obs.batch_size
        x = self.queries.expand(B, -1, -1, -1).reshape(B, self.L * self.N, -1)  # (B, L*N, D)
        block = torch.zeros(B, self.L * self.N, dtype=torch.long, device=x.device)
        valid = torch.ones_like(block, dtype=torch.bool)
        pos = self.trunk.prefix_length + torch.arange(self.L * self.N, device=x.device).expand(B, -1)
        if state is None:
            _, hidden = self.trunk.full(obs, x, block=block, valid=valid, positions=pos)
        else:
            hidden = self.trunk.extend(state, x, block=block, valid=valid, positions=pos)
        hidden = hidden.reshape(B, self.L, self.N, -1)  # (B, L, N, D)
        bias = output_bias(self.out_bias, self.code_mask)
        return torch.einsum("blnd,ldv->blnv", hidden, self.out_weight) + bias[:, None]

    def logits(self, state: TrunkState, obs: ObservationBatch) -> torch.Tensor:
        """One pass after the prefix: ``(B, L, N, V)`` logits, tokens independent."""
        return self._run(obs, state)

    def loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy over every layer's tokens (``obs``, ``tokens`` ``(B, L, N)``)."""
        tokens = batch["tokens"]
        logits = self._run(batch["obs"], None)
        loss = F.cross_entropy(logits.flatten(0, 2), tokens.flatten())
        acc = (logits.argmax(-1) == tokens).float().mean(dim=(0, 2))
        return loss, {"loss": loss.item()} | {f"acc_layer{i}": float(a) for i, a in enumerate(acc)}


class L1Regression(Policy):
    """``l1_regression``: H learned action queries in one block, a linear map to A dims, L1 loss."""

    def __init__(self, *, config: PolicyConfig) -> None:
        super().__init__(config=config)
        a, D = config.actions, config.trunk.hidden_size
        self.H, self.A = a.horizon, a.action_dim
        self.queries = nn.Parameter(torch.randn(self.H, D) * 0.02)
        self.out = nn.Linear(D, self.A)

    def _run(self, obs: ObservationBatch, state: TrunkState | None) -> torch.Tensor:
        B = obs.batch_size
        x = self.queries.expand(B, -1, -1)  # (B, H, D)
        block = torch.zeros(B, self.H, dtype=torch.long, device=x.device)
        valid = torch.ones_like(block, dtype=torch.bool)
        pos = self.trunk.prefix_length + torch.arange(self.H, device=x.device).expand(B, -1)
        if state is None:
            _, hidden = self.trunk.full(obs, x, block=block, valid=valid, positions=pos)
        else:
            hidden = self.trunk.extend(state, x, block=block, valid=valid, positions=pos)
        return self.out(hidden)  # (B, H, A)

    def predict(self, state: TrunkState, obs: ObservationBatch) -> torch.Tensor:
        """One pass after the prefix: the chunk ``(B, H, A)`` in normalised units."""
        return self._run(obs, state)

    def loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """L1 to the normalised chunk (``obs``, ``actions`` ``(B, H, A)``)."""
        pred = self._run(batch["obs"], None)
        loss = F.l1_loss(pred, batch["actions"])
        return loss, {"loss": loss.item()}


class FastAutoregressive(Policy):
    """``fast_ar``: FAST tokens one at a time (block b = token b), ending at the end token.

    The vocabulary is ``actions.fast_vocab`` ids; the last id is the end token and ids below it
    are the FAST tokenizer's. Sequences are at most ``actions.fast_max_tokens`` long, end token
    included; training targets are padded with ``-100`` after the end token.
    """

    def __init__(self, *, config: PolicyConfig) -> None:
        super().__init__(config=config)
        a, D = config.actions, config.trunk.hidden_size
        self.V, self.T = a.fast_vocab, a.fast_max_tokens
        self.end_token = self.V - 1
        self.start = nn.Parameter(torch.randn(D) * 0.02)
        self.token_embed = nn.Embedding(self.V, D)
        self.out = nn.Linear(D, self.V)

    def _inputs(self, tokens: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
        """``(B, k, D)`` inputs of blocks ``(B, k)``: token b-1, or the start for b = 0."""
        prev = torch.gather(tokens, 1, (block - 1).clamp(min=0)).clamp(min=0)
        x = self.token_embed(prev)
        return torch.where((block == 0)[:, :, None], self.start.to(x.dtype).expand_as(x), x)

    def step_logits(self, state: TrunkState, tokens: torch.Tensor, step: int) -> torch.Tensor:
        """One main pass for position ``step`` (reads token step-1): logits ``(B, V)``."""
        B = tokens.shape[0]
        block = torch.full((B, 1), step, dtype=torch.long, device=tokens.device)
        hidden = self.trunk.extend(
            state,
            self._inputs(tokens, block),
            block=block,
            valid=torch.ones_like(block, dtype=torch.bool),
            positions=self.trunk.prefix_length + block,
        )
        return self.out(hidden[:, 0])

    def loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Next-token cross-entropy (``obs``, ``fast_tokens`` ``(B, T)`` padded with -100)."""
        targets = batch["fast_tokens"]  # (B, T)
        B, T = targets.shape
        block = torch.arange(T, device=targets.device).expand(B, T)
        x = self._inputs(targets, block)  # (B, T, D)
        # Causal: block b sees blocks <= b (one token per block).
        _, hidden = self.trunk.full(
            batch["obs"],
            x,
            block=block,
            valid=targets >= 0,
            positions=self.trunk.prefix_length + block,
        )
        logits = self.out(hidden)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        return loss, {"loss": loss.item()}


HEADS: dict[str, type[Policy]] = {
    "rfsq_ar": RFSQAutoregressive,
    "rfsq_parallel": RFSQParallel,
    "l1_regression": L1Regression,
    "fast_ar": FastAutoregressive,
}


def build_policy(config: PolicyConfig) -> Policy:
    """The policy class named by ``config.head``, freshly initialised."""
    return HEADS[config.head](config=config)
