"""Decoder: a :class:`~rsdlib.decoding.spec.MethodSpec` bound to its models, the one place that
maps a method to its head, its decode call and its conversion to environment units.

The LIBERO policy (``rsdlib.libero.learned_policy``) and the decoding benchmark
(``rsdlib.experiments.benchmark``) both decode through it, so a method means the same thing in
a latency table and in a success rate::

    decoder = Decoder(MethodSpec.parse("rsd_head:g2:exact"), main, drafter=head, tokenizer=rfsq)
    result = decoder.decode(batch)              # tokens and one trace per item
    chunks = decoder.env_actions(result)        # (B, H, A) in environment units

``engine="fixed"`` decodes greedy ``rfsq_ar`` and RSD ``exact`` with the head drafter on the
fixed-shape path (:mod:`rsdlib.decoding.graphed`: CUDA graphs on a GPU, no host sync inside a
round): the same tokens, passes and traces (less the probabilities, which it never computes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch

from rsdlib.decoding import graphed
from rsdlib.decoding.acceptance import AcceptanceRule
from rsdlib.decoding.monitors import MISSING_DEPTH_HEAD, DepthHistory, DepthMonitor
from rsdlib.decoding.plain import (
    FastLengthConstraint,
    Observations,
    decode_fast_ar,
    decode_l1_regression,
    decode_rfsq_ar,
    decode_rfsq_parallel,
)
from rsdlib.decoding.result import DecodeResult, check_tokenizer, decode_actions
from rsdlib.decoding.spec import RFSQ_METHODS, MethodSpec
from rsdlib.decoding.speculative_loop import speculative_decode
from rsdlib.policies.depth_head import ResidualNormHead, check_depth_head
from rsdlib.policies.drafters import Drafter, HeadDrafter, PolicyDrafter, ReplayDrafter
from rsdlib.policies.heads import FastAutoregressive, L1Regression, Policy, RFSQAutoregressive, RFSQParallel

if TYPE_CHECKING:  # the tokenizers' code is not needed to decode tokens (a bare GPU machine)
    from rsdlib.tokenizers.base import ActionTokenizer
    from rsdlib.tokenizers.normaliser import Normaliser

#: The decoding engines: ``eager`` serves every method; ``fixed`` is rsdlib.decoding.graphed.
ENGINES = ("eager", "fixed")
#: What the fixed-shape engine decodes.
FIXED_ENGINE_SCOPE = (
    "greedy rfsq_ar and greedy RSD with the exact rule and the head or replay drafter (redrafting every round), "
    "on a llama trunk, without a depth monitor (use engine='eager' for the rest)"
)

#: The head class each method decodes with.
METHOD_HEADS: dict[str, type[Policy]] = {
    "rsd": RFSQAutoregressive,
    "rfsq_ar": RFSQAutoregressive,
    "rfsq_parallel": RFSQParallel,
    "l1_regression": L1Regression,
    "fast_ar": FastAutoregressive,
}


@dataclass
class Decoder:
    """A method with the models it needs, checked to fit each other.

    Attributes:
        spec: how to decode.
        main: the main policy (its head must suit the method, see :data:`METHOD_HEADS`).
        drafter: for RSD, the drafter (on the main model's device).
        tokenizer: the RFSQ tokenizer the policy was trained with (RFSQ methods), or the FAST
            tokenizer (``fast_ar``): turns tokens into environment units.
        normaliser: for ``l1_regression``: maps its normalised output to environment units.
        depth_head: for the ``learned`` depth monitor: the depth head trained on the main
            policy's trunk (on the main model's device).
        monitor: the spec's depth monitor as the loops call it (with the depth head attached for
            ``learned``), or None.
        fast_constraint: for ``fast_ar``, built from the FAST tokenizer: keeps every decoded
            sequence to exactly one chunk. None for a tokenizer that cannot say how many
            coefficients its ids spell (a test double): such a decode may be malformed.
        engine: ``eager`` (every method) or ``fixed`` (greedy ``rfsq_ar`` and RSD ``exact`` with
            the head or replay drafter, on a llama trunk, without a depth monitor: see
            :data:`FIXED_ENGINE_SCOPE`).

    Raises:
        ValueError: a head, tokenizer, normaliser or drafter that does not fit the method.
    """

    spec: MethodSpec
    main: Policy
    drafter: Drafter | None = None
    tokenizer: ActionTokenizer | None = None
    normaliser: Normaliser | None = None
    depth_head: ResidualNormHead | None = None
    engine: str = "eager"
    rule: AcceptanceRule | None = field(init=False, default=None)
    monitor: DepthMonitor | None = field(init=False, default=None, repr=False)
    fast_constraint: FastLengthConstraint | None = field(init=False, default=None, repr=False)
    _fixed: graphed.GraphedDecoder | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        spec, main = MethodSpec.parse(self.spec), self.main
        self.spec = spec
        want = METHOD_HEADS[spec.method]
        if not isinstance(main, want):
            raise ValueError(
                f"method {spec.method!r} needs a {want.__name__} policy, got {type(main).__name__} "
                f"(head {main.config.head!r})"
            )
        a = main.config.actions
        if spec.method in RFSQ_METHODS:
            if self.tokenizer is None:
                raise ValueError(
                    f"method {spec.method!r} needs the RFSQ tokenizer the policy was trained with"
                )
            check_tokenizer(self.tokenizer, main.config.actions)
            check_chunk_shape(self.tokenizer, a.horizon, a.action_dim)
        if spec.method == "fast_ar":
            if self.tokenizer is None or not hasattr(self.tokenizer, "vocab_size"):
                raise ValueError("method 'fast_ar' needs the FAST tokenizer the policy was trained with")
            if self.tokenizer.vocab_size != main.V - 1:  # the policy's last id is its end token
                raise ValueError(
                    f"the FAST tokenizer has {self.tokenizer.vocab_size} ids, the policy was built for "
                    f"{main.V - 1} (plus its end token): load the tokenizer it was trained with"
                )
            check_chunk_shape(self.tokenizer, a.horizon, a.action_dim)
            self.fast_constraint = FastLengthConstraint.for_tokenizer(self.tokenizer, main)
        if spec.method == "l1_regression" and not getattr(self.normaliser, "fitted", False):
            raise ValueError(
                "method 'l1_regression' needs the fitted Normaliser of its training data "
                "(its output is in normalised units)"
            )
        if spec.is_rsd:
            if self.drafter is None:
                raise ValueError("method 'rsd' needs a drafter (a head drafter or a small rfsq_ar policy)")
            check_drafter(self.drafter, main)
            self.rule = spec.make_rule(self.tokenizer)
        self.monitor = spec.depth_monitor
        if self.monitor is not None and self.monitor.reads_prediction:
            if self.depth_head is None:
                raise ValueError(f"{str(spec)!r}: {MISSING_DEPTH_HEAD}")
            check_depth_head(self.depth_head, main)
            self.monitor = replace(self.monitor, predictor=self.depth_head.predict_remaining)
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.engine == "fixed":
            self._fixed = self._fixed_decoder()

    def _fixed_decoder(self) -> graphed.GraphedDecoder:
        s = self.spec
        plain = s.method == "rfsq_ar"
        drafts = isinstance(self.drafter, HeadDrafter | ReplayDrafter)
        rsd = s.is_rsd and s.rule == "exact" and drafts and s.redraft
        if s.temperature > 0 or s.monitor is not None or not (plain or rsd):
            raise ValueError(f"engine 'fixed' cannot decode {str(s)!r}: it decodes {FIXED_ENGINE_SCOPE}")
        drafter = "replay" if isinstance(self.drafter, ReplayDrafter) else self.drafter
        return graphed.GraphedDecoder(self.main, drafter if rsd else None, gamma=s.gamma or 1)

    def decode(
        self,
        observations: Observations,
        *,
        generator: torch.Generator | None = None,
        history: DepthHistory | None = None,
    ) -> DecodeResult:
        """Decode observation dicts or a prepared batch: tokens and one trace per item.

        Args:
            generator: the source of every draw when the spec samples (temperature > 0).
            history: for a spec with a depth monitor: what it remembers of the episode's earlier
                chunks (None: nothing, as for a first chunk); this chunk is added to it, as if
                all its steps will be executed before the next decode (LIBERO's open loop).
        """
        if self._fixed is not None:
            return self._decode_fixed(observations)
        result = self._decode(observations, generator=generator, history=history)
        if history is not None and self.spec.monitor is not None:
            depth = torch.tensor([t.layers_used for t in result.traces])
            chunk = decode_actions(self.tokenizer, result.tokens, depth, normalised=True)
            history.update(
                hidden=result.pooled_prefix,
                chunk=chunk,
                actions=result.actions,
                executed=result.actions.shape[1],
            )
        return result

    def _decode_fixed(self, observations: Observations) -> DecodeResult:
        fixed, rsd = self._fixed, self.spec.is_rsd
        obs = self.main.prepare(observations)
        replay = self.drafter.tokens if isinstance(self.drafter, ReplayDrafter) else None
        out = fixed.rsd(obs, replay=replay, record=True) if rsd else fixed.plain(obs)
        t0 = time.perf_counter()
        actions = decode_actions(self.tokenizer, out.tokens)
        timings = {**out.seconds, "detokenize": time.perf_counter() - t0}
        timings["total"] = sum(timings.values())
        t0 = time.perf_counter()
        traces = graphed.traces(
            out, prefix_layers=self.main.prefix_layers, gamma=self.spec.gamma if rsd else None,
            drafter=self.drafter.name if rsd else None, timings=timings,
        )  # fmt: skip
        for trace in traces:  # building the traces is outside the decode, as in the eager engine
            trace.timings["record"] = time.perf_counter() - t0
        return DecodeResult(tokens=out.tokens, actions=actions, traces=traces)

    def _decode(
        self, observations: Observations, *, generator: torch.Generator | None, history: DepthHistory | None
    ) -> DecodeResult:
        s, m, tok = self.spec, self.main, self.tokenizer
        g = generator if s.temperature > 0 else None
        depth = {"monitor": self.monitor, "history": history} if self.monitor is not None else {}
        if s.is_rsd:
            return speculative_decode(
                m, self.drafter, observations, rule=self.rule, gamma=s.gamma, temperature=s.temperature,
                generator=g, tokenizer=tok, redraft=s.redraft, **depth,
            )  # fmt: skip
        if s.method == "rfsq_ar":
            return decode_rfsq_ar(
                m, observations, temperature=s.temperature, generator=g, tokenizer=tok, **depth
            )
        if s.method == "rfsq_parallel":
            return decode_rfsq_parallel(
                m, observations, temperature=s.temperature, generator=g, tokenizer=tok
            )
        if s.method == "l1_regression":
            return decode_l1_regression(m, observations)
        return decode_fast_ar(
            m, observations, temperature=s.temperature, generator=g, constraint=self.fast_constraint
        )

    def env_actions(self, result: DecodeResult) -> torch.Tensor:
        """``(B, H, A)`` chunks in environment units.

        Raises:
            MalformedTokens: a ``fast_ar`` sequence that does not decode to a chunk (only without
                :attr:`fast_constraint`).
        """
        if self.spec.method == "l1_regression":
            return self.normaliser.denormalise(result.actions.double().cpu())
        if self.spec.method == "fast_ar":
            # A malformed sequence raises (MalformedTokens) rather than decoding to a made-up chunk.
            return self.tokenizer.decode([row[row >= 0] for row in result.tokens.cpu()])
        return result.actions


def check_chunk_shape(tokenizer: ActionTokenizer, horizon: int, action_dim: int) -> None:
    """Raise ValueError when the tokenizer's chunks are not the policy's ``(H, A)``."""
    have = (getattr(tokenizer, "horizon", None), getattr(tokenizer, "action_dim", None))
    if have != (horizon, action_dim):
        raise ValueError(
            f"the tokenizer decodes chunks of (H, A) = {have}, the policy was built for {(horizon, action_dim)}"
        )


def check_drafter(drafter: Drafter, main: RFSQAutoregressive) -> None:
    """The drafter proposes the main policy's token shape (and a head reads its trunk's width)."""
    inner = drafter.policy if isinstance(drafter, PolicyDrafter) else drafter
    have = tuple(getattr(inner, k, None) for k in ("L", "N", "V"))
    if None not in have and have != (main.L, main.N, main.V):
        raise ValueError(
            f"drafter {drafter.name!r} proposes (L, N, V) = {have}, the main policy decodes "
            f"{(main.L, main.N, main.V)}"
        )
    if isinstance(drafter, HeadDrafter) and drafter.config.shares_main_io and drafter.attached_to is not main:
        raise ValueError(
            "the head drafter reads another policy's token embedding and output layer than this main "
            "policy's: attach it to the main policy it drafts for (head.attach(main))"
        )
    if isinstance(drafter, HeadDrafter) and drafter.config.trunk_hidden_size != main.trunk.hidden_size:
        raise ValueError(
            f"head drafter reads trunk states of width {drafter.config.trunk_hidden_size}, the main "
            f"trunk's are {main.trunk.hidden_size}"
        )
