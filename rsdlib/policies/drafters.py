"""Drafters: cheap proposers of the next RFSQ layers, behind one small interface.

A drafter is told the observation batch and the main trunk's prefix state once per chunk
(:meth:`Drafter.begin`), then asked for ``gamma`` layers after each item's committed ones
(:meth:`Drafter.propose`, which also gets the main trunk's final states of the last verified
block), returning the tokens and the distributions q they were drawn from.

- :class:`HeadDrafter` (``head``): an MLP head reading the main trunk's prefix states and, with
  ``reads_blocks``, the last verified block's states (EAGLE-style; near free, the main model
  computes those states anyway).
- :class:`PolicyDrafter` (``tiny_policy``): any :class:`RFSQAutoregressive` with its own trunk and
  cache; wrapping the main policy itself gives the "main as its own drafter" check.
- :class:`RandomDrafter`: random distributions from its own seeded generator (a test baseline).
- :class:`ReplayDrafter`: proposes given tokens (an oracle when they are the greedy output).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rsdlib.policies.configuration import HeadDrafterConfig
from rsdlib.policies.heads import RFSQAutoregressive, output_bias, per_layer_logits
from rsdlib.policies.processor import ObservationBatch
from rsdlib.policies.sampling import probabilities, sample
from rsdlib.policies.trunk import TrunkState


@dataclass
class Draft:
    """Proposed layers.

    Attributes:
        tokens: ``(B, G, N)``; ``tokens[i, g]`` is for layer ``committed[i] + g`` (entries for
            layers >= L are padding).
        q: ``(B, G, N, V)`` the distributions the tokens were drawn from.
    """

    tokens: torch.Tensor
    q: torch.Tensor


class Drafter(ABC):
    """Proposes tokens for the next layers with their probabilities."""

    name: str = "drafter"
    #: Whether :meth:`propose` reads ``main_hidden`` (the loops skip gathering it otherwise).
    reads_main_hidden: bool = False

    @abstractmethod
    def begin(self, *, obs: ObservationBatch, main_state: TrunkState) -> None:
        """Start a chunk for a batch (after the main prefix pass)."""

    @abstractmethod
    def propose(
        self,
        *,
        tokens: torch.Tensor,
        committed: torch.Tensor,
        gamma: int,
        temperature: float,
        generator: torch.Generator | None,
        main_hidden: torch.Tensor | None = None,
    ) -> Draft:
        """Propose layers ``committed[i] .. committed[i] + gamma - 1`` for each item.

        Args:
            tokens: ``(B, L, N)`` committed tokens (layers ``< committed[i]`` are meaningful).
            committed: ``(B,)`` layers committed per item.
            gamma: layers to propose.
            temperature: 0 for greedy drafts.
            generator: for draws at temperature > 0.
            main_hidden: ``(B, N, D)`` the main trunk's final states of block ``committed - 1``
                (the pass that produced the newest committed layer); drafters that do not read
                it ignore it.
        """


class HeadDrafter(nn.Module, Drafter):
    """EAGLE-style draft head over the main trunk's prefix states.

    Per latent, a learned query pools the prefix states (single-head attention); layer l then
    adds layer l-1's drafted tokens (all N, flattened, so latents see each other) and runs a
    few residual MLP blocks to layer l's logits. With ``reads_blocks`` it also adds a projection
    of the main trunk's states of the last verified block b (latent n to latent n) and how many
    layers back that block is (``l - 1 - b``: 0 for the first layer of a round, more for the
    layers drafted after it on the same states).

    With ``shares_main_io`` the token embedding and output layer are the main policy's, read
    through :meth:`attach` and never registered here: the head's state holds only what it learns.
    """

    name = "head"

    def __init__(self, *, config: HeadDrafterConfig) -> None:
        super().__init__()
        self.config = config
        a, H = config.actions, config.hidden_size
        self.L, self.N, self.V = a.num_layers, a.num_latents, a.codebook_size
        self.proj = nn.Linear(config.trunk_hidden_size, H)
        self.pool_queries = nn.Parameter(torch.randn(self.N, H) * 0.02)
        self.layer_embed = nn.Parameter(torch.randn(self.L, H) * 0.02)
        self.__dict__["_main"] = None  # the main policy a shares_main_io head reads (not a submodule)
        if not config.shares_main_io:
            self.token_embed = nn.Embedding(max(self.L - 1, 1) * self.V, H)
        self.mix = nn.Linear(self.N * H, H)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(H), nn.Linear(H, 2 * H), nn.GELU(), nn.Linear(2 * H, H))
            for _ in range(config.num_blocks)
        )
        if config.reads_blocks:
            self.block_proj = nn.Linear(config.trunk_hidden_size, H)
            self.stale_embed = nn.Embedding(self.L, H)
        self.norm = nn.LayerNorm(H)
        if not config.shares_main_io:
            self.out_weight = nn.Parameter(torch.randn(self.L, H, self.V) * H**-0.5)
            self.out_bias = nn.Parameter(torch.zeros(self.L, self.V))
        self.register_buffer("code_mask", a.code_mask(), persistent=False)
        self._pooled: torch.Tensor | None = None

    def attach(self, main: RFSQAutoregressive) -> HeadDrafter:
        """Read ``main``'s token embedding and output layer (a ``shares_main_io`` head); returns self.

        Raises:
            ValueError: the head has its own, or ``main`` decodes another token shape or width.
        """
        if not self.config.shares_main_io:
            raise ValueError("this head has its own token embedding and output layer: nothing to attach")
        width = main.config.trunk.hidden_size
        if (main.L, main.N, main.V, width) != (self.L, self.N, self.V, self.config.hidden_size):
            raise ValueError(
                f"the head drafts (L, N, V) = {(self.L, self.N, self.V)} at width {self.config.hidden_size}; "
                f"the main policy decodes {(main.L, main.N, main.V)} at width {width}"
            )
        self.__dict__["_main"] = main
        return self

    @property
    def attached_to(self) -> RFSQAutoregressive | None:
        """The main policy whose token embedding and output layer this head reads, if it shares them."""
        return self.__dict__["_main"]

    def _io(self) -> tuple[nn.Embedding, torch.Tensor, torch.Tensor]:
        """Token embedding, output weight and output bias: the head's own or its main policy's."""
        owner = self.__dict__["_main"] if self.config.shares_main_io else self
        if owner is None:
            raise RuntimeError(
                "this head shares the main policy's token embedding and output layer and is not "
                "attached to one: head.attach(main), or load it with load_drafter(path, main=main)"
            )
        return owner.token_embed, owner.out_weight, owner.out_bias

    def pool(self, prefix_hidden: torch.Tensor, prefix_valid: torch.Tensor) -> torch.Tensor:
        """``(B, P, D_trunk)`` prefix states -> ``(B, N, H)`` per-latent summaries."""
        kv = self.proj(prefix_hidden)  # (B, P, H)
        scores = torch.einsum("nh,bph->bnp", self.pool_queries, kv) * kv.shape[-1] ** -0.5
        scores = scores.masked_fill(~prefix_valid[:, None, :], float("-inf"))
        return torch.einsum("bnp,bph->bnh", scores.softmax(-1), kv)  # (B, N, H)

    def layer_logits(
        self,
        pooled: torch.Tensor,
        layer: torch.Tensor,
        prev: torch.Tensor,
        *,
        block_hidden: torch.Tensor | None = None,
        stale: torch.Tensor | None = None,
        fixed: bool = False,
    ) -> torch.Tensor:
        """Logits ``(B, N, V)`` of ``layer`` ``(B,)`` given layer-1's tokens ``prev`` ``(B, N)``.

        ``block_hidden`` ``(B, N, D)`` and ``stale`` ``(B,)`` (layers between that block and
        ``layer - 1``): the main trunk's states a ``reads_blocks`` head reads.

        ``fixed``: never ask the host whether the batch shares one layer; every item takes its own
        layer's outputs (:func:`per_layer_logits`: no sync, for :mod:`rsdlib.decoding.graphed`)."""
        token_embed, out_weight, out_bias = self._io()
        layer = layer.clamp(0, self.L - 1)
        prev_layer = (layer - 1).clamp(min=0)
        emb = token_embed(prev + (prev_layer * self.V)[:, None])  # (B, N, H)
        emb = emb * (layer > 0)[:, None, None].to(emb.dtype)  # layer 0 reads no tokens
        x = pooled + self.layer_embed[layer][:, None] + self.mix(emb.flatten(1))[:, None]  # (B, N, H)
        if self.config.reads_blocks:
            if block_hidden is None or stale is None:
                raise ValueError("this head reads the main trunk's block states: pass block_hidden and stale")
            x = x + self.block_proj(block_hidden) + self.stale_embed(stale.clamp(0, self.L - 1))[:, None]
        for block in self.blocks:
            x = x + block(x)
        x = self.norm(x)
        bias = output_bias(out_bias, self.code_mask)
        if not fixed and bool((layer == layer[0]).all()):  # one layer for the batch: one matmul
            return x @ out_weight[layer[0]] + bias[layer[0]]
        return per_layer_logits(x, out_weight, bias, layer[:, None].expand(x.shape[:2]))

    def loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy on target tokens (demonstrations, or the main policy's greedy ones),
        teacher forced. Metrics per layer l: ``acc_layer{l}``, the share of tokens right, and
        ``match_layer{l}``, the share of layers with all N right (what ``exact`` accepts).

        A ``reads_blocks`` head is trained on layers 1..L-1 (layer 0 comes with the prefix pass,
        never drafted), each from every block it can be drafted on: the block just before it
        (metrics) and older ones (``acc_stale``: a round's later layers).

        Args:
            batch: ``prefix_hidden`` ``(B, P, D)`` and ``prefix_valid`` ``(B, P)`` (the main
                trunk's, computed without gradient), ``tokens`` ``(B, L, N)`` and, for a
                ``reads_blocks`` head, ``block_hidden`` ``(B, L, N, D)`` (the main trunk's
                states of each block, teacher forced on ``tokens``).
        """
        tokens = batch["tokens"]
        pooled = self.pool(batch["prefix_hidden"], batch["prefix_valid"])
        B = tokens.shape[0]
        # (layer, block read, logits) for every pairing trained on
        cases: list[tuple[int, int | None, torch.Tensor]] = []
        for li in range(1 if self.config.reads_blocks else 0, self.L):
            layer = torch.full((B,), li, dtype=torch.long, device=tokens.device)
            prev = tokens[:, max(li - 1, 0)]
            if not self.config.reads_blocks:
                cases.append((li, None, self.layer_logits(pooled, layer, prev)))
                continue
            for b in range(li - 1, -1, -1):
                stale = torch.full_like(layer, li - 1 - b)
                logits = self.layer_logits(
                    pooled, layer, prev, block_hidden=batch["block_hidden"][:, b], stale=stale
                )
                cases.append((li, b, logits))
        loss = torch.stack(
            [F.cross_entropy(lg.flatten(0, 1), tokens[:, li].flatten()) for li, _, lg in cases]
        ).mean()
        metrics = {"loss": loss.item()}
        stale_right = []
        for li, b, lg in cases:
            right = lg.argmax(-1) == tokens[:, li]  # (B, N)
            if b is None or b == li - 1:
                metrics[f"acc_layer{li}"] = float(right.float().mean())
                metrics[f"match_layer{li}"] = float(right.all(-1).float().mean())
            else:
                stale_right.append(right.float().mean())
        if stale_right:
            metrics["acc_stale"] = float(torch.stack(stale_right).mean())
        return loss, metrics

    @property
    def reads_main_hidden(self) -> bool:
        return self.config.reads_blocks

    def begin(self, *, obs: ObservationBatch, main_state: TrunkState) -> None:
        self._pooled = self.pool(main_state.prefix_hidden, main_state.prefix_valid)

    def _block_inputs(self, main_hidden: torch.Tensor | None, g: int, batch: int) -> dict[str, Any]:
        """The keywords of :meth:`layer_logits` for the g-th layer of a round (none for a head
        that reads no block states)."""
        if not self.config.reads_blocks:
            return {}
        if main_hidden is None:
            raise ValueError(
                "this head reads the main trunk's block states: the decoder must pass main_hidden"
            )
        return {"block_hidden": main_hidden, "stale": torch.full((batch,), g, device=main_hidden.device)}

    @torch.no_grad()
    def propose(
        self,
        *,
        tokens: torch.Tensor,
        committed: torch.Tensor,
        gamma: int,
        temperature: float,
        generator: torch.Generator | None,
        main_hidden: torch.Tensor | None = None,
    ) -> Draft:
        if self._pooled is None:
            raise RuntimeError("HeadDrafter.propose called before begin()")
        B = tokens.shape[0]
        prev = torch.gather(tokens, 1, (committed - 1).clamp(min=0)[:, None, None].expand(B, 1, self.N))[:, 0]
        out_tokens, out_q = [], []
        for g in range(gamma):
            layer = committed + g
            logits = self.layer_logits(self._pooled, layer, prev, **self._block_inputs(main_hidden, g, B))
            q = probabilities(logits, temperature)  # (B, N, V)
            x = sample(q, temperature=temperature, generator=generator)  # (B, N)
            out_tokens.append(x)
            out_q.append(q)
            prev = x
        return Draft(tokens=torch.stack(out_tokens, 1), q=torch.stack(out_q, 1))

    def greedy_tokens(
        self,
        pooled: torch.Tensor,
        committed: torch.Tensor,
        prev: torch.Tensor,
        gamma: int,
        main_hidden: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, gamma, N)`` greedy drafts of layers ``committed .. committed + gamma - 1`` after
        layer ``committed - 1``'s tokens ``prev`` ``(B, N)`` (and the main states of its block,
        ``main_hidden``, for a ``reads_blocks`` head): what the ``exact`` rule reads and nothing
        more (no q), without a host sync. Layers past L are padding."""
        drafts = []
        for g in range(gamma):
            extra = self._block_inputs(main_hidden, g, prev.shape[0])
            prev = self.layer_logits(pooled, committed + g, prev, fixed=True, **extra).argmax(-1)  # (B, N)
            drafts.append(prev)
        return torch.stack(drafts, 1)


class PolicyDrafter(Drafter):
    """``tiny``: an independent RFSQ autoregressive policy drafting with its own cache.

    It keeps the blocks it has run whose inputs match the committed tokens, runs any block it is
    behind by in the same pass as the first draft step (at most one, after a fully accepted
    round), then one block per further drafted layer.

    Args:
        policy: the drafting policy (its trunk may differ from the main one; its L, N, V may not).
    """

    name = "tiny"

    def __init__(self, *, policy: RFSQAutoregressive, name: str | None = None) -> None:
        self.policy = policy
        if name is not None:
            self.name = name  # e.g. "self": the main policy drafting for itself
        self._obs: ObservationBatch | None = None
        self._state: TrunkState | None = None
        self._fed: torch.Tensor | None = None  # (B, L, N) tokens its cached blocks read

    def begin(self, *, obs: ObservationBatch, main_state: TrunkState) -> None:
        p = self.policy
        self._obs = obs.to(p.device, p.dtype)
        with torch.no_grad():
            self._state = p.prefix(self._obs)
        self._fed = torch.zeros(obs.batch_size, p.L, p.N, dtype=torch.long, device=p.device)

    @torch.no_grad()
    def propose(
        self,
        *,
        tokens: torch.Tensor,
        committed: torch.Tensor,
        gamma: int,
        temperature: float,
        generator: torch.Generator | None,
        main_hidden: torch.Tensor | None = None,
    ) -> Draft:
        if self._state is None:
            raise RuntimeError("PolicyDrafter.propose called before begin()")
        p, state = self.policy, self._state
        held = state.blocks_held()  # (B,)
        # Block b read layer b-1: it stays valid while that layer equals the committed one.
        layers = torch.arange(p.L, device=tokens.device)
        same = (self._fed == tokens).all(-1) & (layers < committed[:, None])  # (B, L)
        first_bad = torch.where(~same, layers, torch.full_like(layers, p.L)).min(dim=1).values  # (B,)
        keep = torch.minimum(torch.minimum(held, committed), first_bad + 1)
        p.trunk.truncate(state, keep)
        work = tokens.clone()
        self._fed = torch.where((layers < committed[:, None])[:, :, None], tokens, self._fed)
        # First step: catch up blocks keep..committed-1 and run block `committed` in one pass.
        # Items already done (committed == L) run nothing; their drafts are padding.
        count = torch.where(committed < p.L, committed - keep + 1, torch.zeros_like(committed))
        logits = p.block_logits(state, work, keep, count)  # (B, k, N, V)
        at = (count - 1).clamp(min=0)[:, None, None, None].expand(-1, 1, p.N, p.V)
        last = torch.gather(logits, 1, at)[:, 0]  # (B, N, V)
        out_tokens, out_q = [], []
        for g in range(gamma):
            q = probabilities(last, temperature)  # (B, N, V)
            x = sample(q, temperature=temperature, generator=generator)  # (B, N)
            out_tokens.append(x)
            out_q.append(q)
            layer = committed + g
            inside = layer < p.L
            idx = layer.clamp(max=p.L - 1)[:, None, None].expand(-1, 1, p.N)
            work.scatter_(1, idx, torch.where(inside[:, None], x, work.gather(1, idx)[:, 0])[:, None])
            self._fed.scatter_(1, idx, work.gather(1, idx))
            if g + 1 < gamma:
                last = p.block_logits(state, work, layer + 1, torch.ones_like(layer))[:, 0]
        return Draft(tokens=torch.stack(out_tokens, 1), q=torch.stack(out_q, 1))


class RandomDrafter(Drafter):
    """Random draft distributions from its own seeded generator (a worst-case baseline).

    Sampling from them uses the decode's generator when one is given, so a sampled decode is
    reproducible from its seed like with any other drafter.

    Args:
        num_layers: L.
        num_latents: N.
        codebook_size: V.
        seed: seeds its generator.
        sharpness: scale of the random logits (0 gives uniform q).
    """

    name = "random"

    def __init__(
        self, *, num_layers: int, num_latents: int, codebook_size: int, seed: int = 0, sharpness: float = 2.0
    ) -> None:
        self.L, self.N, self.V, self.sharpness = num_layers, num_latents, codebook_size, sharpness
        self.generator = torch.Generator().manual_seed(seed)

    def begin(self, *, obs: ObservationBatch, main_state: TrunkState) -> None:
        self._dtype, self._device = main_state.prefix_hidden.dtype, main_state.prefix_hidden.device

    def propose(
        self,
        *,
        tokens: torch.Tensor,
        committed: torch.Tensor,
        gamma: int,
        temperature: float,
        generator: torch.Generator | None,
        main_hidden: torch.Tensor | None = None,
    ) -> Draft:
        B = tokens.shape[0]
        logits = torch.randn(B, gamma, self.N, self.V, generator=self.generator, dtype=torch.float64)
        q = torch.softmax(logits * self.sharpness, dim=-1)  # (B, G, N, V)
        draw = generator if generator is not None and generator.device.type == "cpu" else self.generator
        x = torch.multinomial(q.reshape(-1, self.V), 1, generator=draw).reshape(B, gamma, self.N)
        return Draft(tokens=x.to(self._device), q=q.to(self._device, self._dtype))


class ReplayDrafter(Drafter):
    """Proposes fixed tokens (one-hot q): an oracle when given the main model's own greedy output.

    With the greedy tokens of plain decoding it is a free drafter that is always right, so RSD's
    measured time with it is the ceiling that pass reduction alone allows.

    Args:
        tokens: ``(B, L, N)`` tokens to propose, per item.
        codebook_size: V.
    """

    name = "replay"

    def __init__(self, *, tokens: torch.Tensor, codebook_size: int) -> None:
        self.tokens, self.V = tokens, codebook_size

    def begin(self, *, obs: ObservationBatch, main_state: TrunkState) -> None:
        if self.tokens.shape[0] != obs.batch_size:
            raise ValueError(
                f"ReplayDrafter holds {self.tokens.shape[0]} items, the batch has {obs.batch_size}"
            )
        self._dtype = main_state.prefix_hidden.dtype

    def propose(
        self,
        *,
        tokens: torch.Tensor,
        committed: torch.Tensor,
        gamma: int,
        temperature: float,
        generator: torch.Generator | None,
        main_hidden: torch.Tensor | None = None,
    ) -> Draft:
        L, N = self.tokens.shape[1:]
        layer = (committed[:, None] + torch.arange(gamma, device=committed.device)).clamp(max=L - 1)  # (B, G)
        x = torch.gather(self.tokens, 1, layer[:, :, None].expand(-1, -1, N))  # (B, G, N)
        q = F.one_hot(x, self.V).to(self._dtype)
        return Draft(tokens=x, q=q)


def head_drafter_loss(
    main: RFSQAutoregressive, head: HeadDrafter
) -> Callable[[Mapping[str, Any]], tuple[torch.Tensor, dict[str, float]]]:
    """The training loss of a draft head on a frozen main trunk, for :func:`rsdlib.train.train`.

    The batch holds ``obs`` and ``tokens`` ``(B, L, N)``: demonstration tokens (imitation) or the
    main policy's own greedy tokens (distillation, which targets acceptance directly).
    """
    if head.config.trunk_hidden_size != main.trunk.hidden_size:
        raise ValueError(
            f"head drafter reads trunk states of width {head.config.trunk_hidden_size}, "
            f"the main trunk's are {main.trunk.hidden_size}"
        )

    def loss_fn(batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad():
            state = main.trunk.prefix(batch["obs"], use_cache=False)
        return head.loss(
            {
                "prefix_hidden": state.prefix_hidden,
                "prefix_valid": state.prefix_valid,
                "tokens": batch["tokens"],
            }
        )

    return loss_fn
