"""Greedy ``rfsq_ar`` decoding on fixed shapes, plain or RSD ``exact``: CUDA graphs on a GPU.

The eager engine (:mod:`~rsdlib.decoding.plain`, :mod:`~rsdlib.decoding.speculative_loop`) serves
every rule, drafter, monitor and trace, and asks the host questions as it goes (how many blocks
this pass, which layers are present, crop the cache where). On a GPU a small main model is
launch bound, so those questions cost more than the passes: a verify pass over 4 blocks costs
what one block costs, and the host syncs eat RSD's saving. This path decodes the same greedy
tokens with every pass on fixed shapes, so each can be captured as a CUDA graph and replayed:

- **Block slots instead of an appended cache.** The KV cache is preallocated with one slot per
  prefix position and ``N`` slots per block id 0 .. L + gamma (``P + (L + gamma + 1) * N``); block b always
  writes slots ``P + b*N ..``. A query in block b attends valid keys of blocks <= b (the trunk's
  rule), and every slot of a block <= b was written in this chunk by the time block b is queried,
  so a rejected draft needs no cropping: its blocks are rewritten by the next round before
  anyone attends them. Slots past block L-1 take the padding blocks of a round near the end (or of an item done).
- **Fixed rounds.** A verify pass always runs ``gamma + 1`` blocks from the committed count (a
  device tensor); blocks past L are padding whose outputs nobody reads. Acceptance, commit and
  the next start are tensor ops. Under the ``exact`` rule a committed layer is the main argmax
  wherever the draft was accepted (they are equal) as well as at the correction or bonus, so a
  round commits ``m[c .. c + a]`` (``a`` leading accepted layers).
- **One read per round.** Plain decoding runs the prefix graph and L-1 block graphs with no host
  sync until the tokens are read. RSD reads one flag after each round (are all items done?),
  which the host needs to decide whether to replay another round; at most L-1 rounds.

The drafter is the ``head`` (:meth:`HeadDrafter.greedy_tokens`: argmax drafts, no q, which
``exact`` never reads; a ``reads_blocks`` head gets the main states of the block that produced
the newest committed layer, kept on the device from pass to pass) or ``replay`` (given tokens: with the main model's own greedy output, the
oracle). Tokens equal the eager engine's, and so do the main passes per item (tests on CPU,
where the same code runs without capture; ``scripts/bench_graphed.py`` checks both on the GPU
before it times anything). The attention is the trunk's own modules (norms, projections, rotary
embedding, MLP) around :func:`torch.nn.functional.scaled_dot_product_attention` on the slots.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from rsdlib.decoding.trace import DecodeTrace, RoundRecord
from rsdlib.policies.drafters import HeadDrafter
from rsdlib.policies.heads import RFSQAutoregressive
from rsdlib.policies.processor import ObservationBatch
from rsdlib.policies.trunk import PREFIX_BLOCK, LlamaTrunk


@dataclass
class GraphedResult:
    """What a fixed-shape decode returns.

    Attributes:
        tokens: ``(B, L, N)`` greedy tokens (on the policy's device).
        main_passes: ``(B,)`` sequential main passes after the prefix (as a trace counts them).
        seconds: wall time per step: ``prefix``, and ``plain`` (block passes) or ``verify``
            (RSD rounds: the head's draft and the verify pass run as one step).
        rounds: with ``record=True``, per RSD round the device tensors :func:`traces` reads
            (``start``, ``drafted``, ``draft``, ``main``, ``accepted``, ``active``), copied on the
            device as the decode goes and read only when the traces are built.
    """

    tokens: torch.Tensor
    main_passes: torch.Tensor
    seconds: dict[str, float] = field(default_factory=dict)
    rounds: list[dict[str, torch.Tensor]] = field(default_factory=list)


class StepClock:
    """Wall time per named step with no host sync between steps: CUDA events on a GPU, read once
    after the decode; ``perf_counter`` on a CPU, where each op has run when its call returns."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list[tuple[str, object, object]] = []

    def _now(self) -> object:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = self._now()
        yield
        self.marks.append((name, start, self._now()))

    def seconds(self) -> dict[str, float]:
        """Seconds per step name (waits for the device once, on a GPU)."""
        if self.cuda:
            torch.cuda.synchronize()
        out: dict[str, float] = {}
        for name, a, b in self.marks:
            s = a.elapsed_time(b) / 1e3 if self.cuda else b - a  # type: ignore[attr-defined,operator]
            out[name] = out.get(name, 0.0) + s
        return out


class SlotCache:
    """The main trunk's Llama body over a preallocated KV cache of block slots.

    Args:
        trunk: the main policy's :class:`LlamaTrunk`.
        batch: B.
        slots: cache length S.
    """

    def __init__(self, trunk: LlamaTrunk, *, batch: int, slots: int) -> None:
        model = trunk.body_model
        config = model.config
        if config.num_key_value_heads != config.num_attention_heads:
            raise ValueError("the slot cache expects as many key/value heads as query heads")
        self.model = model
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        param = next(model.parameters())
        shape = (batch, config.num_key_value_heads, slots, head_dim)
        self.keys = [param.new_zeros(shape) for _ in model.layers]
        self.values = [param.new_zeros(shape) for _ in model.layers]

    def forward(
        self, x: torch.Tensor, *, positions: torch.Tensor, slots: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Hidden states ``(B, q, D)`` of inputs ``x`` ``(B, q, D)`` at rotary ``positions``
        ``(B, q)``, whose keys and values are written to ``slots`` ``(B, q)`` before attending
        with ``mask`` ``(B, 1, q, S)``."""
        cos, sin = self.model.rotary_emb(x, position_ids=positions)
        B, q, _ = x.shape
        for layer, keys, values in zip(self.model.layers, self.keys, self.values, strict=True):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            heads = (B, q, -1, attn.head_dim)
            query = attn.q_proj(h).view(heads).transpose(1, 2)  # (B, heads, q, head_dim)
            key = attn.k_proj(h).view(heads).transpose(1, 2)
            value = attn.v_proj(h).view(heads).transpose(1, 2)
            query, key = apply_rotary_pos_emb(query, key, cos, sin)
            at = slots[:, None, :, None].expand_as(key)
            keys.scatter_(2, at, key)
            values.scatter_(2, at, value)
            out = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=attn.scaling)
            x = x + attn.o_proj(out.transpose(1, 2).reshape(B, q, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.model.norm(x)


class GraphedDecoder:
    """Greedy ``rfsq_ar`` decoding, plain or RSD ``exact``, on fixed shapes (module docstring).

    Buffers are made, and on a GPU the graphs captured, for the first batch's shapes, and again
    when a batch of other shapes comes.

    Args:
        main: the ``rfsq_ar`` main policy on a ``llama`` trunk.
        drafter: a :class:`HeadDrafter`, ``"replay"`` (tokens given per call), or None (plain only).
        gamma: layers drafted per round.
        graphs: capture CUDA graphs (default: when ``main`` is on a CUDA device).
    """

    def __init__(
        self,
        main: RFSQAutoregressive,
        drafter: HeadDrafter | str | None = None,
        *,
        gamma: int = 2,
        graphs: bool | None = None,
    ) -> None:
        if not isinstance(main, RFSQAutoregressive) or not isinstance(main.trunk, LlamaTrunk):
            raise ValueError(
                f"the fixed-shape path decodes an rfsq_ar policy on a llama trunk; got {type(main).__name__} "
                f"on {type(main.trunk).__name__} (use the eager engine, rsdlib.decoding.decode)"
            )
        if drafter is not None and drafter != "replay" and not isinstance(drafter, HeadDrafter):
            raise ValueError(f"drafter must be a HeadDrafter, 'replay' or None; got {drafter!r}")
        if gamma < 1:
            raise ValueError(f"gamma ({gamma}) must be at least 1 layer per round")
        on_cuda = main.device.type == "cuda"
        if graphs and not on_cuda:
            raise ValueError(f"CUDA graphs need the policy on a CUDA device; it is on {main.device}")
        self.main, self.drafter, self.gamma = main, drafter, gamma
        self.graphs = on_cuda if graphs is None else graphs
        self.L, self.N, self.P = main.L, main.N, main.trunk.prefix_length
        self._shapes: tuple | None = None
        self._runs: dict[str, Callable[[], None]] = {}

    # -- public -----------------------------------------------------------------------------------

    @torch.no_grad()
    def plain(self, obs: ObservationBatch) -> GraphedResult:
        """Plain greedy decoding: the prefix pass (layer 0 in it), then L-1 block passes."""
        self._load(obs)
        clock = StepClock(self.main.device)
        with clock.step("prefix"):
            self._runs["prefix"]()
        with clock.step("plain"):
            for _ in range(self.L - 1):
                self._runs["block"]()
        tokens, passes = self.tokens.clone(), self.passes.clone()
        return GraphedResult(tokens=tokens, main_passes=passes, seconds=clock.seconds())

    @torch.no_grad()
    def floor(self, obs: ObservationBatch) -> None:
        """The prefix pass and one block pass: what any decoding of this main model costs."""
        self._load(obs)
        self._runs["prefix"]()
        self._runs["block"]()

    @torch.no_grad()
    def rsd(
        self, obs: ObservationBatch, *, replay: torch.Tensor | None = None, record: bool = False
    ) -> GraphedResult:
        """RSD with the ``exact`` rule: the greedy tokens in fewer passes when drafts are right.

        Args:
            obs: a prepared batch.
            replay: ``(B, L, N)`` tokens to propose, for the ``replay`` drafter only.
            record: keep each round's drafts, main tokens and verdicts (device copies, no host
                read) for :func:`traces`.
        """
        if self.drafter is None:
            raise ValueError("this GraphedDecoder has no drafter: build it with a HeadDrafter or 'replay'")
        if (replay is not None) != (self.drafter == "replay"):
            raise ValueError("pass replay= tokens exactly when the drafter is 'replay'")
        self._load(obs, replay)
        clock, rounds = StepClock(self.main.device), []
        with clock.step("prefix"):
            self._runs["prefix"]()
        with clock.step("verify"):
            for _ in range(self.L - 1):  # each round commits at least one layer of every active item
                start = self.committed.clone() if record else None
                self._runs["round"]()
                if record:  # the round's outputs are rewritten by the next replay: copy them now
                    rounds.append({"start": start, **{k: v.clone() for k, v in self._round_out.items()}})
                if bool((self.committed >= self.L).all()):  # the one host read per round
                    break
        tokens, passes = self.tokens.clone(), self.passes.clone()
        return GraphedResult(tokens=tokens, main_passes=passes, seconds=clock.seconds(), rounds=rounds)

    # -- buffers and graphs -----------------------------------------------------------------------

    def _load(self, obs: ObservationBatch, replay: torch.Tensor | None = None) -> None:
        """Copy the inputs into the static buffers, making buffers and graphs for new shapes."""
        obs = obs.to(self.main.device, self.main.dtype)
        shapes = tuple(None if (x := getattr(obs, f.name)) is None else tuple(x.shape) for f in fields(obs))
        if shapes != self._shapes:
            self._setup(obs)
            self._shapes = shapes
        for f in fields(obs):
            if (x := getattr(obs, f.name)) is not None:
                getattr(self.obs, f.name).copy_(x)
        if replay is not None:
            if tuple(replay.shape) != tuple(self.replay.shape):
                raise ValueError(f"replay tokens {tuple(replay.shape)}, expected {tuple(self.replay.shape)}")
            self.replay.copy_(replay)

    def _setup(self, obs: ObservationBatch) -> None:
        main, L, N, P = self.main, self.L, self.N, self.P
        B, dev = obs.batch_size, main.device
        self.obs = ObservationBatch(
            *(None if (x := getattr(obs, f.name)) is None else x.clone() for f in fields(obs))
        )
        blocks = L + self.gamma + 1  # a done item's round runs padding blocks L .. L + gamma
        slots = P + blocks * N
        self.cache = SlotCache(main.trunk, batch=B, slots=slots)
        #: Block id of each slot (the prefix's are PREFIX_BLOCK) and whether it may be attended.
        self.slot_block = torch.cat(
            [
                torch.full((P,), PREFIX_BLOCK, device=dev),
                torch.arange(blocks, device=dev).repeat_interleave(N),
            ]
        )
        self.slot_valid = torch.ones(B, slots, dtype=torch.bool, device=dev)
        self.tokens = torch.zeros(B, L, N, dtype=torch.long, device=dev)
        self.committed = torch.zeros(B, dtype=torch.long, device=dev)  # layers held (RSD)
        self.next_block = torch.zeros(B, dtype=torch.long, device=dev)  # the next block (plain)
        self.passes = torch.zeros(B, dtype=torch.long, device=dev)
        self.replay = torch.zeros(B, L, N, dtype=torch.long, device=dev)
        #: The main states of the block that produced each item's newest committed layer (only
        #: for a head that reads them) and the head's pooled prefix.
        self.main_hidden = self.pooled = None
        if isinstance(self.drafter, HeadDrafter):
            self.pooled = torch.zeros(B, N, self.drafter.config.hidden_size, dtype=main.dtype, device=dev)
            if self.drafter.reads_main_hidden:
                self.main_hidden = torch.zeros(B, N, main.trunk.hidden_size, dtype=main.dtype, device=dev)
        steps = {"prefix": self._prefix, "block": self._plain_block}
        if self.drafter is not None:
            steps["round"] = self._round
        self._runs = steps if not self.graphs else self._capture(steps)

    def _capture(self, steps: dict[str, Callable[[], None]]) -> dict[str, Callable[[], None]]:
        """Each step as a CUDA graph's replay (warmed up on a side stream first, as capture needs)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                for step in steps.values():
                    step()
        torch.cuda.current_stream().wait_stream(side)
        pool = torch.cuda.graph_pool_handle()
        self._graphs = {}
        for name, step in steps.items():
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                step()
            self._graphs[name] = graph
        return {name: graph.replay for name, graph in self._graphs.items()}

    # -- the steps (fixed shapes, no host reads) --------------------------------------------------

    def _mask(self, query_block: torch.Tensor) -> torch.Tensor:
        """``(B, 1, q, S)``: a query in block b sees valid slots of blocks <= b."""
        return (self.slot_valid[:, None, :] & (self.slot_block <= query_block[:, :, None]))[:, None]

    def _blocks(self, tokens: torch.Tensor, start: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One main pass over blocks ``start .. start + k - 1`` (block b reads layer b-1 of
        ``tokens``); returns their greedy tokens ``(B, k, N)`` and hidden states ``(B, k, N, D)``."""
        main, N = self.main, self.N
        block = start[:, None] + torch.arange(k, device=start.device)  # (B, k); >= L is padding
        B = block.shape[0]
        x = main.block_inputs(tokens, block).reshape(B, k * N, -1)
        slots = (self.P + block[:, :, None] * N + torch.arange(N, device=block.device)).flatten(1)
        query_block = block.repeat_interleave(N, dim=1)
        hidden = self.cache.forward(
            x,
            positions=main._positions(block.clamp(max=self.L - 1)),
            slots=slots,
            mask=self._mask(query_block),
        )
        hidden = hidden.reshape(B, k, N, -1)
        return main.block_outputs_fixed(hidden, block).argmax(-1), hidden

    def _prefix(self) -> None:
        """The prefix pass with block 0 in it: layer 0's tokens, the drafter's pooled summary."""
        main, trunk, N, P = self.main, self.main.trunk, self.N, self.P
        embeds, valid = trunk.embed_prefix(self.obs)  # (B, P, D), (B, P)
        B, dev = embeds.shape[0], embeds.device
        block0 = torch.zeros(B, 1, dtype=torch.long, device=dev)
        x = torch.cat([embeds, main.block_inputs(self.tokens, block0).reshape(B, N, -1)], dim=1)
        positions = torch.cat([trunk.prefix_positions(B, P, dev), main._positions(block0)], dim=1)
        self.slot_valid[:, :P].copy_(valid)
        query_block = torch.cat([torch.full((B, P), PREFIX_BLOCK, device=dev), block0.expand(B, N)], dim=1)
        slots = torch.arange(P + N, device=dev).expand(B, -1)
        hidden = self.cache.forward(x, positions=positions, slots=slots, mask=self._mask(query_block))
        logits = main.block_outputs_fixed(hidden[:, P:].reshape(B, 1, N, -1), block0)
        self.tokens.zero_()
        self.tokens[:, 0] = logits[:, 0].argmax(-1)
        self.committed.fill_(1)
        self.next_block.fill_(1)
        self.passes.zero_()
        if self.main_hidden is not None:
            self.main_hidden.copy_(hidden[:, P:])
        if self.pooled is not None:
            self.pooled.copy_(self.drafter.pool(hidden[:, :P], valid))

    def _plain_block(self) -> None:
        """Plain decoding's next block pass: layer ``next_block``'s greedy tokens."""
        at = self.next_block
        layer, _ = self._blocks(self.tokens, at, 1)  # (B, 1, N)
        self.tokens.scatter_(1, at[:, None, None].expand(-1, 1, self.N), layer)
        self.next_block.add_(1)
        self.passes.add_(1)

    def _round(self) -> None:
        """One RSD round under ``exact``: draft, verify ``gamma + 1`` blocks, commit."""
        L, N, G = self.L, self.N, self.gamma
        c = self.committed
        active = c < L
        g = (L - c).clamp(max=G)  # (B,) layers drafted (0 when done)
        if isinstance(self.drafter, HeadDrafter):
            prev = self.tokens.gather(1, (c - 1).clamp(min=0)[:, None, None].expand(-1, 1, N))[:, 0]
            draft = self.drafter.greedy_tokens(self.pooled, c, prev, G, self.main_hidden)  # (B, G, N)
        else:
            at = (c[:, None] + torch.arange(G, device=c.device)).clamp(max=L - 1)
            draft = self.replay.gather(1, at[:, :, None].expand(-1, -1, N))
        layers = torch.arange(L, device=c.device)[None, :]  # (1, L)
        offset = layers - c[:, None]  # (B, L) each layer's offset in this round
        in_draft = (offset >= 0) & (offset < g[:, None])
        drafted = draft.gather(1, offset.clamp(0, G - 1)[:, :, None].expand(-1, -1, N))
        work = torch.where(in_draft[:, :, None], drafted, self.tokens)  # committed + drafted layers
        main_tokens, hidden = self._blocks(work, c, G + 1)  # (B, G + 1, N) the main argmax per block
        right = (draft == main_tokens[:, :G]).all(-1) & (torch.arange(G, device=c.device) < g[:, None])
        accepted = right.long().cumprod(1).sum(1)  # (B,) leading accepted layers
        take = (offset >= 0) & (offset <= accepted[:, None]) & active[:, None]
        chosen = main_tokens.gather(1, offset.clamp(0, G)[:, :, None].expand(-1, -1, N))
        self.tokens.copy_(torch.where(take[:, :, None], chosen, self.tokens))
        self.committed.copy_(torch.where(active, (c + accepted + 1).clamp(max=L), c))
        self.passes.add_(active.long())
        # What a trace needs of this round. Under capture these are the graph's static outputs:
        # each replay rewrites them in place, and rsd(record=True) copies them after each one.
        self._round_out = {
            "drafted": g,
            "draft": draft,
            "main": main_tokens,
            "accepted": accepted,
            "active": active,
        }
        if self.main_hidden is not None:
            newest = hidden.gather(1, accepted[:, None, None, None].expand(-1, 1, *hidden.shape[2:]))[:, 0]
            self.main_hidden.copy_(torch.where(active[:, None, None], newest, self.main_hidden))


def traces(
    result: GraphedResult,
    *,
    prefix_layers: int,
    gamma: int | None = None,
    drafter: str | None = None,
    timings: dict[str, float] | None = None,
) -> list[DecodeTrace]:
    """One :class:`DecodeTrace` per item, built after the decode from what it kept on the device.

    A plain result (no rounds) gives ``rfsq_ar`` traces; an RSD result recorded with
    ``record=True`` gives ``rsd`` traces whose rounds, verdicts, corrections, bonus layers, sources
    and main passes are the eager engine's (tests/unit/test_graphed.py compares them). Only the
    probabilities are left empty (``draft_probs``, ``main_probs``, ``main_top_*``): this path
    computes none, since ``exact`` reads none; the eager engine records them.
    """
    tokens = result.tokens.tolist()
    B, L, N = result.tokens.shape
    passes = result.main_passes.tolist()
    common = {"num_layers": L, "num_latents": N, "prefix_layers": prefix_layers, "batch_size": B}
    timings = dict(timings or {})
    if not result.rounds:
        if gamma is not None:
            raise ValueError(
                "an RSD result has no rounds to build traces from: decode with rsd(..., record=True)"
            )
        return [
            DecodeTrace(
                method="rfsq_ar",
                tokens=tokens[i],
                sources=[["plain"] * N for _ in range(L)],
                main_passes=passes[i],
                timings=dict(timings),
                **common,
            )  # fmt: skip
            for i in range(B)
        ]
    rounds = [{k: v.tolist() for k, v in r.items()} for r in result.rounds]  # the host reads, once
    out = []
    for i in range(B):
        # The prefix pass committed layer 0 as a round without a draft (as the eager engine records it).
        records = [_round(0, [], [], 0, None, tokens[i][0])]
        for r in rounds:
            if not r["active"][i]:
                continue
            c, g, a = r["start"][i], r["drafted"][i], r["accepted"][i]
            draft, main = r["draft"][i][:g], r["main"][i]
            judged = min(a + 1, g)  # every accepted layer and the first rejected one
            verdicts = [[d == m for d, m in zip(draft[j], main[j], strict=True)] for j in range(judged)]
            correction = main[a] if a < g else None
            bonus = main[g] if a == g and c + g < L else None
            records.append(_round(c, draft, verdicts, a, correction, bonus))
        trace = DecodeTrace(
            method="rsd", tokens=tokens[i], sources=[], main_passes=passes[i], rounds=records,
            timings=dict(timings), rule="exact", lossless=True, gamma=gamma, drafter=drafter,
            draft_steps=len(rounds), **common,
        )  # fmt: skip
        trace.sources = trace.sources_from_rounds()
        out.append(trace)
    return out


def _round(start, draft, verdicts, accepted, correction, bonus) -> RoundRecord:
    return RoundRecord(
        start_layer=start, draft_tokens=draft, draft_probs=[], main_probs=[], main_top_tokens=[],
        main_top_probs=[], token_accepted=verdicts, accepted_layers=accepted, correction=correction, bonus=bonus,
    )  # fmt: skip
