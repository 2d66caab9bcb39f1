"""Plain decoding with the main model alone: the baselines RSD is measured against.

- :func:`decode_rfsq_ar`: one prefix pass, then L block passes, layer by layer (coarse to fine).
- :func:`decode_rfsq_parallel`: one prefix pass and one pass for all layers.
- :func:`decode_l1_regression`: one prefix pass and one pass for the continuous chunk.
- :func:`decode_fast_ar`: one prefix pass, then one pass per FAST token until the end token;
  with a :class:`FastLengthConstraint` every sequence decodes to exactly one chunk.

All return a :class:`DecodeResult` with one :class:`DecodeTrace` per item.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rsdlib.decoding.monitors import DepthHistory, DepthMonitor, judge_depth, pooled_prefix
from rsdlib.decoding.result import (
    DecodeResult,
    Stopwatch,
    check_tokenizer,
    decode_actions,
    mask_past_depth,
)
from rsdlib.decoding.trace import DecodeTrace
from rsdlib.policies.heads import FastAutoregressive, L1Regression, RFSQAutoregressive, RFSQParallel
from rsdlib.policies.processor import ObservationBatch
from rsdlib.policies.sampling import probabilities, sample

if TYPE_CHECKING:
    from rsdlib.tokenizers.base import ActionTokenizer

Observations = Sequence[Mapping[str, Any]] | ObservationBatch


def _plain_traces(
    method: str,
    tokens: torch.Tensor,
    passes: int,
    timings: dict[str, float],
    temperature: float,
    prefix_layers: int = 0,
) -> list[DecodeTrace]:
    B, L, N = tokens.shape
    rows = tokens.tolist()
    return [
        DecodeTrace(
            method=method,
            num_layers=L,
            num_latents=N,
            tokens=rows[i],
            sources=[["plain"] * N for _ in range(L)],
            main_passes=passes,
            prefix_layers=prefix_layers,
            timings=dict(timings),
            temperature=temperature,
            batch_size=B,
        )
        for i in range(B)
    ]


@torch.no_grad()
def decode_rfsq_ar(
    policy: RFSQAutoregressive,
    observations: Observations,
    *,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    tokenizer: ActionTokenizer | None = None,
    monitor: DepthMonitor | None = None,
    history: DepthHistory | None = None,
) -> DecodeResult:
    """Plain coarse-to-fine decoding: the prefix pass (which also gives layer 0), then block l
    for l = 1..L-1 with the KV cache: L - 1 main passes after the prefix.

    With a depth ``monitor``, an item stops after the first layer k where the monitor says the
    finer layers are not needed: its chunk is the RFSQ decode of its first k layers, its tokens
    past k are -1, and its trace records the depth and the monitor's value at each layer asked.

    Args:
        policy: the ``rfsq_ar`` main policy.
        observations: observation dicts or a prepared batch.
        temperature: 0 for greedy, else sampling with ``generator``.
        generator: required when ``temperature > 0``.
        tokenizer: the RFSQ tokenizer, to decode actions (optional).
        monitor: stops decoding early (None: all L layers).
        history: what the monitor remembers of the episode's earlier chunks.
    """
    check_tokenizer(tokenizer, policy.config.actions)
    obs = policy.prepare(observations)
    B, L, N = obs.batch_size, policy.L, policy.N
    clock = Stopwatch(policy.device)
    tokens = torch.zeros(B, L, N, dtype=torch.long, device=policy.device)
    depth = torch.full((B,), L, dtype=torch.long)
    values: list[list[float]] = [[] for _ in range(B)]
    with clock.step("prefix"):
        state, first = policy.prefix_and_first_block(obs)  # layer 0's logits come with the prefix
    hidden = None if monitor is None else pooled_prefix(state.prefix_hidden, state.prefix_valid)
    remaining = None if monitor is None else monitor.predict(hidden)
    with clock.step("plain"):
        active = torch.ones(B, dtype=torch.bool)
        for layer in range(L):
            if layer == 0:
                logits = first
            else:
                at = torch.full((B,), layer, dtype=torch.long, device=policy.device)
                logits = policy.block_logits(state, tokens, at, torch.ones_like(at))[:, 0]  # (B, N, V)
            probs = probabilities(logits, temperature)
            tokens[:, layer] = sample(probs, temperature=temperature, generator=generator)
            if monitor is None or layer + 1 == L:
                continue
            # Ask the monitor whether the moment needs more than layer + 1 layers.
            go_on, value = judge_depth(
                monitor, layers=layer + 1, probs=probs, hidden=hidden, tokens=tokens, tokenizer=tokenizer,
                history=history or DepthHistory(), remaining=remaining,
            )  # fmt: skip
            for i in active.nonzero()[:, 0].tolist():
                values[i].append(float(value[i]))
            stop = active & ~go_on
            depth[stop] = layer + 1
            active &= go_on
            if not bool(active.any()):
                break
    if monitor is not None:  # plain full-depth decoding keeps its hot path as it was
        tokens = mask_past_depth(tokens, depth)
    with clock.step("detokenize"):
        actions = decode_actions(tokenizer, tokens, None if monitor is None else depth)
    timings = clock.timings("prefix", "draft", "verify", "plain", "detokenize")
    traces = _plain_traces(
        "rfsq_ar", tokens, L - policy.prefix_layers, timings, temperature, policy.prefix_layers
    )
    if monitor is not None:
        for i, trace in enumerate(traces):
            trace.main_passes = int(depth[i]) - policy.prefix_layers
            trace.set_depth(int(depth[i]), monitor.name, monitor.threshold, values[i])
    return DecodeResult(tokens=tokens, actions=actions, traces=traces, pooled_prefix=hidden)


@torch.no_grad()
def decode_rfsq_parallel(
    policy: RFSQParallel,
    observations: Observations,
    *,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    tokenizer: ActionTokenizer | None = None,
) -> DecodeResult:
    """All layers in one pass after the prefix (tokens independent given the observation)."""
    check_tokenizer(tokenizer, policy.config.actions)
    obs = policy.prepare(observations)
    clock = Stopwatch(policy.device)
    with clock.step("prefix"):
        state = policy.prefix(obs)
    with clock.step("plain"):
        logits = policy.logits(state, obs)  # (B, L, N, V)
        tokens = sample(probabilities(logits, temperature), temperature=temperature, generator=generator)
    with clock.step("detokenize"):
        actions = decode_actions(tokenizer, tokens)
    timings = clock.timings("prefix", "draft", "verify", "plain", "detokenize")
    traces = _plain_traces("rfsq_parallel", tokens, 1, timings, temperature)
    return DecodeResult(tokens=tokens, actions=actions, traces=traces)


@torch.no_grad()
def decode_l1_regression(policy: L1Regression, observations: Observations) -> DecodeResult:
    """The continuous chunk in one pass after the prefix (deterministic)."""
    obs = policy.prepare(observations)
    clock = Stopwatch(policy.device)
    with clock.step("prefix"):
        state = policy.prefix(obs)
    with clock.step("plain"):
        actions = policy.predict(state, obs)  # (B, H, A)
    timings = clock.timings("prefix", "draft", "verify", "plain", "detokenize")
    traces = [
        DecodeTrace(
            method="l1_regression",
            num_layers=0,
            num_latents=0,
            tokens=[],
            sources=[],
            main_passes=1,
            layer_actions=[actions[i].double().tolist()],
            timings=dict(timings),
            batch_size=obs.batch_size,
        )
        for i in range(obs.batch_size)
    ]
    return DecodeResult(tokens=None, actions=actions, traces=traces)


@dataclass(frozen=True)
class FastLengthConstraint:
    """Which FAST ids keep a sequence on course for exactly H*A coefficients within the length cap.

    FAST only decodes a sequence whose tokens expand to exactly H*A DCT coefficients; a model left
    alone overshoots, or ends too early or too late. Before each token, :meth:`allowed` keeps the
    content ids that do not overshoot the coefficients still missing *and* leave a remainder that
    the positions left before the cap can still spell (``fewest_tokens``), allows the end token
    only when nothing is missing, and so forces it once the chunk is complete. Every sequence
    decoded under it therefore detokenises.

    Attributes:
        counts: ``(V,)`` long, coefficients per policy id (the end token's is 0).
        fewest_tokens: ``(H*A + 1,)`` long, the fewest ids that spell exactly r coefficients
            (``H*A + 1``, more than any cap allows, where no combination does).
        chunk_coefficients: H*A.
        max_content_tokens: ids before the end token at most (``fast_max_tokens - 1``).
        end_token: the policy's end id.
    """

    counts: torch.Tensor
    fewest_tokens: torch.Tensor
    chunk_coefficients: int
    max_content_tokens: int
    end_token: int

    @classmethod
    def build(cls, tokenizer: Any, policy: FastAutoregressive) -> FastLengthConstraint:
        """The constraint for ``policy`` decoding the ids of ``tokenizer`` (a fitted FAST tokenizer).

        Raises:
            ValueError: the tokenizer and policy disagree on the vocabulary or the chunk shape, or
                the policy's length cap cannot hold any complete chunk (or the tokenizer's own
                errors from ``coefficients_per_token``).
        """
        per_token = np.asarray(tokenizer.coefficients_per_token, dtype=np.int64)
        a = policy.config.actions
        chunk = a.horizon * a.action_dim
        if len(per_token) != policy.V - 1:
            raise ValueError(
                f"the FAST tokenizer has {len(per_token)} ids, the policy was built for {policy.V - 1} "
                "(plus its end token): load the tokenizer it was trained with"
            )
        if tokenizer.horizon * tokenizer.action_dim != chunk:
            raise ValueError(
                f"the FAST tokenizer spells chunks of {tokenizer.horizon}x{tokenizer.action_dim} "
                f"coefficients, the policy's chunks are {a.horizon}x{a.action_dim}"
            )
        fewest = _fewest_tokens(per_token, chunk)
        max_content = policy.T - 1
        if fewest[chunk] > max_content:
            raise ValueError(
                f"fast_max_tokens={policy.T} leaves {max_content} ids before the end token, but the "
                f"shortest FAST sequence of {chunk} coefficients takes {fewest[chunk]}: no chunk fits"
            )
        counts = torch.from_numpy(np.append(per_token, 0))  # the end token spells nothing
        return cls(
            counts=counts.to(policy.device),
            fewest_tokens=torch.from_numpy(fewest).to(policy.device),
            chunk_coefficients=chunk,
            max_content_tokens=max_content,
            end_token=policy.end_token,
        )

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, policy: FastAutoregressive) -> FastLengthConstraint | None:
        """:meth:`build` for a tokenizer that can count its ids' coefficients; None for one that
        cannot (a test double), whose sequences then decode freely and may be malformed."""
        return cls.build(tokenizer, policy) if hasattr(tokenizer, "coefficients_per_token") else None

    def to(self, device: torch.device) -> FastLengthConstraint:
        """This constraint with its tensors on ``device`` (itself when they are there already)."""
        if self.counts.device == torch.device(device):
            return self
        return FastLengthConstraint(
            self.counts.to(device), self.fewest_tokens.to(device), self.chunk_coefficients,
            self.max_content_tokens, self.end_token,
        )  # fmt: skip

    def allowed(self, missing: torch.Tensor, step: int) -> torch.Tensor:
        """``(B, V)`` bool: the ids item b may emit at position ``step`` with ``missing[b]``
        coefficients still to spell (never empty when every earlier choice was allowed)."""
        left_after = missing[:, None] - self.counts[None, :]  # (B, V)
        positions_after = self.max_content_tokens - step - 1  # content positions after this one
        reachable = self.fewest_tokens[left_after.clamp(min=0)] <= positions_after
        ok = (left_after >= 0) & reachable
        ok[:, self.end_token] = missing == 0
        return ok


def _fewest_tokens(per_token: np.ndarray, chunk: int) -> np.ndarray:
    """``(chunk + 1,)``: the fewest ids whose counts sum to exactly r, for r = 0..chunk (a
    coin-change table over the distinct counts; ``chunk + 1`` where r cannot be spelt)."""
    unreachable = chunk + 1
    fewest = np.full(chunk + 1, unreachable, dtype=np.int64)
    fewest[0] = 0
    lengths = np.unique(per_token[(per_token >= 1) & (per_token <= chunk)])
    for r in range(1, chunk + 1):
        usable = lengths[lengths <= r]
        if usable.size:
            fewest[r] = min(unreachable, int(fewest[r - usable].min()) + 1)
    return fewest


@torch.no_grad()
def decode_fast_ar(
    policy: FastAutoregressive,
    observations: Observations,
    *,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    constraint: FastLengthConstraint | None = None,
) -> DecodeResult:
    """FAST tokens one pass each until every item has emitted the end token (or the length cap).

    With ``constraint`` (built from the FAST tokenizer), ids that would make the sequence
    undecodable are masked before each greedy or sampled choice, so every row spells exactly one
    chunk; without it the model decodes freely and may emit a malformed sequence.

    Returns tokens ``(B, T)`` padded with -1 after each item's end token (the end token itself is
    not included); detokenising FAST ids is the FAST tokenizer's job.
    """
    obs = policy.prepare(observations)
    B, T = obs.batch_size, policy.T
    clock = Stopwatch(policy.device)
    tokens = torch.full((B, T), -1, dtype=torch.long, device=policy.device)
    ended = torch.zeros(B, dtype=torch.bool, device=policy.device)
    passes = torch.zeros(B, dtype=torch.long)
    if constraint is not None:
        constraint = constraint.to(policy.device)
        missing = torch.full((B,), constraint.chunk_coefficients, dtype=torch.long, device=policy.device)
    with clock.step("prefix"):
        state = policy.prefix(obs)
    with clock.step("plain"):
        for t in range(T):
            logits = policy.step_logits(state, tokens.clamp(min=0), t)  # (B, V)
            if constraint is not None:
                logits = logits.masked_fill(~constraint.allowed(missing, t), float("-inf"))
            x = sample(probabilities(logits, temperature), temperature=temperature, generator=generator)
            passes += (~ended).long().cpu()
            if t == T - 1:
                x = torch.full_like(x, policy.end_token)  # the cap ends every sequence
            x = torch.where(ended, tokens[:, t], x)
            tokens[:, t] = x
            if constraint is not None:
                missing = missing - torch.where(ended, 0, constraint.counts[x.clamp(min=0)])
            ended |= x == policy.end_token
            if bool(ended.all()):
                break
    tokens = torch.where(tokens == policy.end_token, torch.full_like(tokens, -1), tokens)
    timings = clock.timings("prefix", "draft", "verify", "plain", "detokenize")
    rows = tokens.tolist()
    traces = []
    for i in range(B):
        seq = [v for v in rows[i] if v >= 0]
        traces.append(
            DecodeTrace(
                method="fast_ar",
                num_layers=1,
                num_latents=len(seq),
                tokens=[seq],
                sources=[["plain"] * len(seq)],
                main_passes=int(passes[i]),
                timings=dict(timings),
                temperature=temperature,
                batch_size=B,
            )
        )
    return DecodeResult(tokens=tokens, actions=None, traces=traces)
