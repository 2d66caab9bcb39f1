"""Plain decoding with the main model alone: the baselines RSD is measured against.

- :func:`decode_rfsq_ar`: one prefix pass, then L block passes, layer by layer (coarse to fine).
- :func:`decode_rfsq_parallel`: one prefix pass and one pass for all layers.
- :func:`decode_l1_regression`: one prefix pass and one pass for the continuous chunk.
- :func:`decode_fast_ar`: one prefix pass, then one pass per FAST token until the end token.

All return a :class:`DecodeResult` with one :class:`DecodeTrace` per item.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

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
    """Plain coarse-to-fine decoding: prefix pass, then block l for l = 0..L-1 with the KV cache.

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
    check_tokenizer(tokenizer, num_layers=policy.L, num_latents=policy.N, codebook_size=policy.V)
    obs = policy.prepare(observations)
    B, L, N = obs.batch_size, policy.L, policy.N
    clock = Stopwatch(policy.device)
    tokens = torch.zeros(B, L, N, dtype=torch.long, device=policy.device)
    depth = torch.full((B,), L, dtype=torch.long)
    values: list[list[float]] = [[] for _ in range(B)]
    with clock.step("prefix"):
        state = policy.prefix(obs)
    hidden = None if monitor is None else pooled_prefix(state.prefix_hidden, state.prefix_valid)
    with clock.step("plain"):
        active = torch.ones(B, dtype=torch.bool)
        for layer in range(L):
            at = torch.full((B,), layer, dtype=torch.long, device=policy.device)
            logits = policy.block_logits(state, tokens, at, torch.ones_like(at))[:, 0]  # (B, N, V)
            probs = probabilities(logits, temperature)
            tokens[:, layer] = sample(probs, temperature=temperature, generator=generator)
            if monitor is None or layer + 1 == L:
                continue
            # Ask the monitor whether the moment needs more than layer + 1 layers.
            go_on, value = judge_depth(
                monitor, layers=layer + 1, probs=probs, hidden=hidden, tokens=tokens, tokenizer=tokenizer,
                history=history or DepthHistory(),
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
    traces = _plain_traces("rfsq_ar", tokens, L, timings, temperature)
    if monitor is not None:
        for i, trace in enumerate(traces):
            trace.main_passes = int(depth[i])
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
    check_tokenizer(tokenizer, num_layers=policy.L, num_latents=policy.N, codebook_size=policy.V)
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


@torch.no_grad()
def decode_fast_ar(
    policy: FastAutoregressive,
    observations: Observations,
    *,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> DecodeResult:
    """FAST tokens one pass each until every item has emitted the end token (or the length cap).

    Returns tokens ``(B, T)`` padded with -1 after each item's end token (the end token itself is
    not included); detokenising FAST ids is the FAST tokenizer's job.
    """
    obs = policy.prepare(observations)
    B, T = obs.batch_size, policy.T
    clock = Stopwatch(policy.device)
    tokens = torch.full((B, T), -1, dtype=torch.long, device=policy.device)
    ended = torch.zeros(B, dtype=torch.bool, device=policy.device)
    passes = torch.zeros(B, dtype=torch.long)
    with clock.step("prefix"):
        state = policy.prefix(obs)
    with clock.step("plain"):
        for t in range(T):
            logits = policy.step_logits(state, tokens.clamp(min=0), t)  # (B, V)
            x = sample(probabilities(logits, temperature), temperature=temperature, generator=generator)
            passes += (~ended).long().cpu()
            if t == T - 1:
                x = torch.full_like(x, policy.end_token)  # the cap ends every sequence
            tokens[:, t] = torch.where(ended, tokens[:, t], x)
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
