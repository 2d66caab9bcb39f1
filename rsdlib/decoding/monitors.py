"""Depth monitors: after each decoded RFSQ layer, does this moment need the finer layers?

Every prefix of RFSQ layers decodes to a usable chunk, so decoding may stop early where the
coarse layers already say what to do (free-space motion) and go on where detail matters
(grasping, insertion, release). A monitor is a small, named, pure function of what the decode
already has (:class:`MonitorInput`) that returns one value per item; decoding goes on past layer
k while the value is above the monitor's threshold, and stops at the first layer where it is not.

The monitors the project's original plan named:

- ``entropy``: the main distribution's entropy at the layer just decoded, over log V (0: certain,
  1: uniform), mean over the N tokens. An unsure coarse layer marks a delicate moment.
- ``action_variance``: the variance of the recent actions (the previous chunks, environment units),
  mean over the action dimensions. Busy motion needs detail; a first chunk has no history and
  goes to full depth.
- ``jerk``: "cognitive jerk", 1 - cosine between the trunk's pooled prefix state now and at the
  previous chunk. A scene that changed in the policy's eyes needs detail; a first chunk goes to
  full depth.
- ``plan_instability``: how far the coarse plan moved against the previous chunk, mean absolute
  difference in normalised action units over the steps both cover (the new chunk's first steps
  against the old chunk's steps after those executed since); when the old chunk was executed
  whole (open loop = H, LIBERO's protocol), the new chunk's first step against the old one's last.
- ``learned``: what a small trained head (:class:`~rsdlib.policies.depth_head.ResidualNormHead`,
  trained on the demonstrations, reading the pooled prefix state) predicts the layers after k still
  add to the chunk, in normalised action units (as ``plan_instability``). It needs the head: a
  :class:`DepthMonitor` with ``predictor``, which the ``Decoder`` attaches from its ``depth_head``.
- ``fixed``: a fixed depth (stops once ``threshold`` layers are decoded): the baseline every
  monitor is compared with.
- ``never``: never stops (full depth), for tests and as a reference.

:data:`MONITORS` is the table of them; ``MethodSpec`` names one as ``rfsq_ar+entropy:0.3``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

# the loops pool the prefix here for jerk and learned (it lives with the trunk, which the depth head reads too)
from rsdlib.policies.trunk import pooled_prefix as pooled_prefix

#: What a ``learned`` monitor without its head says.
MISSING_DEPTH_HEAD = (
    "the learned depth monitor needs the depth head trained on this main policy's trunk "
    "(rsdlib.policies.depth_head.ResidualNormHead): train it with "
    "train_models(prepared, models_dir, models=['depth_head']) (it goes to <models_dir>/depth_head), "
    "then pass it: policy_from_spec finds <models_dir>/depth_head, "
    "from_checkpoint(..., depth_head_path=<models_dir>/depth_head), Decoder(..., depth_head=head), "
    "or DepthMonitor('learned', threshold, predictor=head.predict_remaining)"
)


@dataclass
class DepthHistory:
    """What a monitor may remember between chunks of one episode (reset per episode).

    Attributes:
        hidden: ``(B, D)`` the pooled prefix state of the previous chunk's observation.
        chunk: ``(B, H, A)`` the previous chunk in normalised units (as decoded, at its depth).
        actions: ``(B, T, A)`` the most recent actions in environment units (at most ``keep``).
        executed: steps of the previous chunk executed before this observation.
        keep: how many recent actions ``action_variance`` looks at.
    """

    hidden: torch.Tensor | None = None
    chunk: torch.Tensor | None = None
    actions: torch.Tensor | None = None
    executed: int | None = None
    keep: int = 16

    def rows(self, index: torch.Tensor) -> DepthHistory:
        """The memory of some items (``index``: rows of the batch)."""

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[index.to(t.device)]

        return DepthHistory(pick(self.hidden), pick(self.chunk), pick(self.actions), self.executed, self.keep)

    def update(
        self, *, hidden: torch.Tensor, chunk: torch.Tensor, actions: torch.Tensor, executed: int
    ) -> None:
        """Remember a decoded chunk (``executed`` of its steps will run before the next one)."""
        self.hidden, self.chunk, self.executed = hidden.detach(), chunk.detach(), executed
        recent = actions[:, :executed].detach().double().cpu()
        self.actions = recent if self.actions is None else torch.cat([self.actions, recent], dim=1)
        self.actions = self.actions[:, -self.keep :]


@dataclass
class MonitorInput:
    """What the decode has after ``layers`` layers, for B items.

    Attributes:
        layers: layers decoded so far (k >= 1).
        num_layers: L.
        probs: ``(B, N, V)`` the main distribution of the layer just decoded.
        hidden: ``(B, D)`` the pooled prefix state (mean over the real prefix positions).
        chunk: ``(B, H, A)`` the chunk decoded from the first k layers, normalised units (None
            when no monitor in use reads it).
        history: the episode's memory (empty for a first chunk or outside episodes).
        remaining: ``(B, L)`` the depth head's predicted remaining residual after k = 1..L layers
            (None when no monitor in use reads it).
        codes: the codes layer k-1 has (fewer than V when the tokenizer's layers have their own
            levels); None: V.
    """

    layers: int
    num_layers: int
    probs: torch.Tensor
    hidden: torch.Tensor
    chunk: torch.Tensor | None = None
    history: DepthHistory = field(default_factory=DepthHistory)
    remaining: torch.Tensor | None = None
    codes: int | None = None


def entropy(inp: MonitorInput) -> torch.Tensor:
    """Normalised entropy of the layer just decoded, mean over its N tokens: ``(B,)`` in [0, 1]."""
    p = inp.probs.double()
    h = -(p * p.clamp(min=1e-30).log()).sum(dim=-1)  # (B, N)
    return (h / math.log(inp.codes or p.shape[-1])).mean(dim=-1)


def action_variance(inp: MonitorInput) -> torch.Tensor:
    """Variance over time of the recent actions, mean over dimensions: ``(B,)`` (inf without history)."""
    recent = inp.history.actions
    B = inp.probs.shape[0]
    if recent is None or recent.shape[1] < 2:
        return torch.full((B,), math.inf, dtype=torch.float64)
    return recent.var(dim=1).mean(dim=-1)


def jerk(inp: MonitorInput) -> torch.Tensor:
    """1 - cosine between the pooled prefix state now and at the previous chunk: ``(B,)`` in [0, 2]."""
    before = inp.history.hidden
    if before is None:
        return torch.full((inp.hidden.shape[0],), math.inf, dtype=torch.float64)
    cos = torch.nn.functional.cosine_similarity(
        inp.hidden.double(), before.to(inp.hidden.device).double(), dim=-1
    )
    return (1 - cos).cpu()


def plan_instability(inp: MonitorInput) -> torch.Tensor:
    """How far the plan at this depth moved against the previous chunk: ``(B,)`` (inf without one)."""
    old, new = inp.history.chunk, inp.chunk
    if old is None or new is None:
        return torch.full((inp.probs.shape[0],), math.inf, dtype=torch.float64)
    old, new = old.double().cpu(), new.double().cpu()
    s = inp.history.executed if inp.history.executed is not None else old.shape[1]
    overlap = old.shape[1] - s
    # the steps both chunks plan; without any, where the new plan starts against where the old ended
    diff = new[:, :overlap] - old[:, s:] if overlap > 0 else new[:, :1] - old[:, -1:]
    return diff.abs().mean(dim=(1, 2))


def learned(inp: MonitorInput) -> torch.Tensor:
    """What the depth head predicts the layers after the first k still add: ``(B,)`` normalised units."""
    if inp.remaining is None:
        raise ValueError(MISSING_DEPTH_HEAD)
    return inp.remaining[:, inp.layers - 1].double().cpu()


def fixed(inp: MonitorInput) -> torch.Tensor:
    """The layers decoded so far, negated: with threshold -k decoding stops after k layers."""
    return torch.full((inp.probs.shape[0],), -float(inp.layers), dtype=torch.float64)


def never(inp: MonitorInput) -> torch.Tensor:
    """Always go on (full depth)."""
    return torch.full((inp.probs.shape[0],), math.inf, dtype=torch.float64)


@dataclass(frozen=True)
class MonitorKind:
    """One row of :data:`MONITORS`.

    Attributes:
        name: its name in method specs.
        value: the pure function (``MonitorInput -> (B,)``); decoding goes on while value > threshold.
        reads_chunk: whether it needs the chunk decoded at each depth (a tokenizer call per layer).
        reads_prediction: whether it needs the depth head's predictions (``DepthMonitor.predictor``).
        unit: what its value and threshold measure (for tables and the stepper).
    """

    name: str
    value: Callable[[MonitorInput], torch.Tensor] = field(repr=False)
    reads_chunk: bool = False
    unit: str = ""
    reads_prediction: bool = False


MONITORS: dict[str, MonitorKind] = {
    m.name: m
    for m in (
        MonitorKind("entropy", entropy, unit="entropy / log V"),
        MonitorKind("action_variance", action_variance, unit="variance of recent actions"),
        MonitorKind("jerk", jerk, unit="1 - cos(prefix state, previous)"),
        MonitorKind(
            "plan_instability", plan_instability, reads_chunk=True, unit="mean |new - old| (normalised)"
        ),
        MonitorKind(
            "learned", learned, unit="predicted remaining |residual| (normalised)", reads_prediction=True
        ),
        MonitorKind("fixed", fixed, unit="layers (threshold k: stop after k)"),
        MonitorKind("never", never, unit="-"),
    )
}
MONITOR_NAMES = tuple(MONITORS)


@dataclass(frozen=True)
class DepthMonitor:
    """A monitor with its threshold, as the decoding loops call it.

    Attributes:
        name: one of :data:`MONITOR_NAMES`.
        threshold: go on past a layer while the value is above it (``fixed``: the depth k).
        min_layers: never stop before this many layers.
        predictor: for ``learned``: ``(B, D)`` pooled prefix states -> ``(B, L)`` predicted
            remaining residual (``ResidualNormHead.predict_remaining``). A model, not a setting:
            left out of equality, hashing and repr.
    """

    name: str
    threshold: float
    min_layers: int = 1
    predictor: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.name not in MONITORS:
            raise ValueError(f"unknown depth monitor {self.name!r}; choose one of {MONITOR_NAMES}")
        if self.name == "fixed" and (int(self.threshold) != self.threshold or self.threshold < 1):
            raise ValueError(f"the fixed monitor's threshold is a depth in layers >= 1, got {self.threshold}")
        if self.min_layers < 1:
            raise ValueError(f"min_layers ({self.min_layers}) must be >= 1")

    @property
    def reads_chunk(self) -> bool:
        return MONITORS[self.name].reads_chunk

    @property
    def reads_prediction(self) -> bool:
        return MONITORS[self.name].reads_prediction

    def predict(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """``(B, L)`` the depth head's predictions for pooled prefix states (they do not change
        between layers: a decode asks once), or None for a monitor that does not read them."""
        if not self.reads_prediction:
            return None
        if self.predictor is None:
            raise ValueError(MISSING_DEPTH_HEAD)
        return self.predictor(hidden)

    def values(self, inp: MonitorInput) -> torch.Tensor:
        """``(B,)`` the monitor's value (float64, CPU) for what was decoded so far."""
        return MONITORS[self.name].value(inp).double().cpu()

    def go_on(self, inp: MonitorInput) -> torch.Tensor:
        """``(B,)`` bool: whether each item needs more than ``inp.layers`` layers."""
        if inp.layers >= inp.num_layers:
            return torch.zeros(inp.probs.shape[0], dtype=torch.bool)
        if inp.layers < self.min_layers:
            return torch.ones(inp.probs.shape[0], dtype=torch.bool)
        threshold = -self.threshold if self.name == "fixed" else self.threshold
        return self.values(inp) > threshold


def judge_depth(
    monitor: DepthMonitor,
    *,
    layers: int,
    probs: torch.Tensor,
    hidden: torch.Tensor,
    tokens: torch.Tensor,
    tokenizer: object | None,
    history: DepthHistory,
    remaining: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ask ``monitor`` about every item after ``layers`` decoded layers.

    Args:
        probs: ``(B, N, V)`` the main distribution of layer ``layers - 1``.
        hidden: ``(B, D)`` the pooled prefix state.
        tokens: ``(B, L, N)`` the committed tokens (layers ``< layers`` are read).
        tokenizer: the RFSQ tokenizer (its ``decode_normalised`` gives the chunk at this depth);
            needed only by monitors that read the chunk.
        remaining: ``monitor.predict(hidden)`` where the decode already asked (once per chunk);
            None asks here.

    Raises:
        ValueError: a monitor that reads the chunk without a tokenizer, or ``learned`` without
            its predictor.

    Returns:
        ``(go_on, values)``: ``(B,)`` bool and ``(B,)`` float64, both on the CPU.
    """
    chunk = None
    if monitor.reads_chunk:
        if tokenizer is None:
            raise ValueError(f"the {monitor.name} monitor reads the decoded chunk: pass the RFSQ tokenizer")
        # normalised units where the tokenizer offers them (rsdlib's RFSQTokenizer does)
        decode = getattr(tokenizer, "decode_normalised", None) or tokenizer.decode
        chunk = decode(tokens[:, :layers].transpose(1, 2))
    if remaining is None:
        remaining = monitor.predict(hidden)
    sizes = getattr(tokenizer, "layer_codebook_sizes", None)
    codes = sizes[layers - 1] if sizes else None
    inp = MonitorInput(layers, tokens.shape[1], probs, hidden, chunk, history, remaining, codes)
    return monitor.go_on(inp), monitor.values(inp)
