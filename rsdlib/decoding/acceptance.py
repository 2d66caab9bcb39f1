"""Acceptance rules: may a drafted RFSQ layer stand in for the main model's?

Each rule is a pure function of one drafted layer per item: the drafted tokens x ``(B, N)``,
the draft distributions q ``(B, N, V)`` they came from and the main distributions p
``(B, N, V)`` (conditioned on the drafted layers before it). It returns a :class:`Verdict`:
per-token acceptance, whether the layer is accepted, and the correction to commit when it is
not. :data:`RULES` holds one row per rule (its function, parameter, whether it is lossless or
samples); :func:`make_rule` builds the named, selectable :class:`AcceptanceRule` the loop calls.

Lossless rules (``exact``, ``speculative``) leave the main model's output unchanged (greedy
tokens, or the sampling distribution); the lossy ones trade fidelity for acceptance and say so
in their ``lossless`` flag, which every trace and summary carries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from rsdlib.tokenizers.base import ActionTokenizer


@dataclass
class Verdict:
    """A rule's decision on one drafted layer per item.

    Attributes:
        token_accepted: ``(B, N)`` per-token acceptance.
        layer_accepted: ``(B,)`` whether the drafted layer is committed as drafted.
        correction: ``(B, N)`` the layer to commit instead when it is rejected.
    """

    token_accepted: torch.Tensor
    layer_accepted: torch.Tensor
    correction: torch.Tensor


def exact(x: torch.Tensor, p: torch.Tensor) -> Verdict:
    """Accept a layer only if every token is the main model's argmax. Lossless (greedy).

    What is guaranteed: every committed token is the argmax of the verify pass's distribution for
    its layer, given the committed layers before it, whatever the drafter. That is exactly greedy
    autoregressive decoding when the verify pass (several blocks in one call) computes the same
    logits as plain decoding's one-block passes. It does up to rounding: in float32 and float64
    no argmax flipped on the shipped models (0 of 128 validation chunks, gamma 2 and 3); in
    bfloat16 near-ties flip and 18-20 of 128 chunks differ (``scripts/exact_by_dtype.py``). Use
    float32 where outputs must match plain decoding token for token. The correction is the main
    argmax.

    Args:
        x: ``(B, N)`` drafted tokens.
        p: ``(B, N, V)`` main distributions.
    """
    choice = p.argmax(dim=-1)  # (B, N)
    token_accepted = x == choice
    return Verdict(token_accepted, token_accepted.all(dim=-1), choice)


def speculative(x: torch.Tensor, q: torch.Tensor, p: torch.Tensor, *, generator: torch.Generator) -> Verdict:
    """Leviathan et al. (2023) rejection sampling per token. Lossless in distribution.

    Token i is accepted when ``r_i < min(1, p(x_i) / q(x_i))`` with ``r_i ~ U(0, 1)``; a rejected
    token is redrawn from ``norm(max(0, p - q))``. The tokens of a layer are independent given
    the earlier layers (the main model predicts a layer in parallel), so the layer built from
    accepted and redrawn tokens is distributed exactly as p. Departure from the paper: the
    paper stops at the first rejected *token* of a sequence; here every token of the layer is
    judged (they are conditionally independent), and the round stops at the first layer that
    had any rejection (``layer_accepted`` False), because later layers were conditioned on the
    drafted one.

    Args:
        x: ``(B, N)`` drafted tokens, drawn from q.
        q: ``(B, N, V)`` draft distributions.
        p: ``(B, N, V)`` main distributions.
        generator: the source of ``r`` and of the redraws (on the device of p).
    """
    p_x = p.gather(-1, x[..., None])[..., 0]  # (B, N)
    q_x = q.gather(-1, x[..., None])[..., 0]  # (B, N)
    r = torch.rand(p_x.shape, generator=generator, dtype=p.dtype, device=p.device)  # (B, N)
    token_accepted = r * q_x < p_x  # r < p/q without dividing by q
    residual = (p - q).clamp(min=0)  # (B, N, V)
    mass = residual.sum(dim=-1, keepdim=True)
    # mass is 0 only where p == q, and then every token was accepted; p keeps the draw defined.
    residual = torch.where(mass > 0, residual / mass.clamp(min=torch.finfo(p.dtype).tiny), p)
    redraw = torch.multinomial(residual.reshape(-1, p.shape[-1]), 1, generator=generator).reshape(x.shape)
    correction = torch.where(token_accepted, x, redraw)
    return Verdict(token_accepted, token_accepted.all(dim=-1), correction)


def match_rate(x: torch.Tensor, p: torch.Tensor, *, tau: float) -> Verdict:
    """Accept a layer if at least a fraction ``tau`` of its tokens equal the main argmax. Lossy.

    The earlier prototype's rule; with ``tau = 1`` it is :func:`exact`. An accepted layer keeps
    its mismatching drafted tokens. The correction is the main argmax.
    """
    choice = p.argmax(dim=-1)
    token_accepted = x == choice
    rate = token_accepted.to(p.dtype).mean(dim=-1)  # (B,)
    return Verdict(token_accepted, rate >= tau - 1e-12, choice)


def level_distance(
    x: torch.Tensor, p: torch.Tensor, *, delta: int, digits: Callable[[torch.Tensor], torch.Tensor]
) -> Verdict:
    """Accept a layer if every FSQ channel of every token is within ``delta`` levels of the argmax. Lossy.

    A flat code index is mixed-radix over the FSQ channels, so nearness is judged per channel
    (Spec-VLA's relaxed acceptance, done on digits). ``delta = 0`` is :func:`exact`.

    Args:
        x: ``(B, N)`` drafted tokens.
        p: ``(B, N, V)`` main distributions.
        delta: allowed levels of difference per channel.
        digits: the tokenizer's ``index_to_digits`` for these rows' layers: ``(B, N)`` -> ``(B, N, channels)``.
    """
    choice = p.argmax(dim=-1)
    dist = (digits(x) - digits(choice)).abs()  # (B, N, channels)
    token_accepted = (dist <= delta).all(dim=-1)
    return Verdict(token_accepted, token_accepted.all(dim=-1), choice)


def action_tolerance(
    x: torch.Tensor,
    p: torch.Tensor,
    *,
    tokens: torch.Tensor,
    layer: torch.Tensor,
    eps: float,
    decode: Callable[[torch.Tensor], torch.Tensor],
) -> Verdict:
    """Accept a layer if the decoded chunk moves by at most ``eps`` (max abs, normalised units). Lossy.

    Compares the chunk decoded from the committed layers plus the drafted layer with the chunk
    decoded from the committed layers plus the main argmax layer. Per-token flags report
    equality with the argmax (for display); the decision is on the decoded action.

    Args:
        x: ``(B, N)`` drafted tokens.
        p: ``(B, N, V)`` main distributions.
        tokens: ``(B, L, N)`` committed tokens (layers ``< layer[i]`` are read).
        layer: ``(B,)`` the layer each item's x is for.
        eps: tolerance in normalised action units.
        decode: ids ``(B, N, k)`` -> chunk ``(B, H, A)`` in normalised units (the tokenizer's
            ``decode_normalised`` where it has one, else its ``decode``).
    """
    choice = p.argmax(dim=-1)
    layer_accepted = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for k in layer.unique().tolist():
        rows = (layer == k).nonzero()[:, 0]
        with_draft = tokens[rows, : k + 1].clone()  # (b, k+1, N)
        with_draft[:, k] = x[rows]
        with_main = with_draft.clone()
        with_main[:, k] = choice[rows]
        # One decode call for both candidates: at batch 1 a call costs about what two rows do.
        a, b = decode(torch.cat([with_draft, with_main]).transpose(1, 2)).split(len(rows))  # (b, H, A) each
        layer_accepted[rows] = (a - b).abs().flatten(1).amax(dim=1) <= eps
    return Verdict(x == choice, layer_accepted, choice)


def _judge_exact(x, q, p, tokens, layer, generator, params, tokenizer) -> Verdict:
    return exact(x, p)


def _judge_speculative(x, q, p, tokens, layer, generator, params, tokenizer) -> Verdict:
    if generator is None:
        raise ValueError("the speculative rule needs an explicit torch.Generator")
    return speculative(x, q, p, generator=generator)


def _judge_match_rate(x, q, p, tokens, layer, generator, params, tokenizer) -> Verdict:
    return match_rate(x, p, tau=params["tau"])


def _judge_level_distance(x, q, p, tokens, layer, generator, params, tokenizer) -> Verdict:
    def digits(ids: torch.Tensor) -> torch.Tensor:  # each row's layer: levels may differ per layer
        return tokenizer.index_to_digits(ids, layer=layer[:, None])

    return level_distance(x, p, delta=params["delta"], digits=digits)


def _judge_action_tolerance(x, q, p, tokens, layer, generator, params, tokenizer) -> Verdict:
    # Normalised units when the tokenizer offers them (rsdlib's RFSQTokenizer does).
    decode = getattr(tokenizer, "decode_normalised", None) or tokenizer.decode
    return action_tolerance(x, p, tokens=tokens, layer=layer, eps=params["eps"], decode=decode)


@dataclass(frozen=True)
class RuleKind:
    """Everything the workbench knows about one acceptance rule, in one row of :data:`RULES`.

    Attributes:
        name: the rule's name in method specs, traces and tables.
        judge: calls the pure rule function with what it reads of the loop's state.
        param: the name of its one parameter (None: it takes none).
        param_type: ``int`` or ``float``.
        lossless: whether results equal the main model's (greedy tokens or distribution).
        needs_sampling: whether it samples (temperature > 0 and a generator).
        needs_tokenizer: the tokenizer attribute it reads (None: it reads no tokenizer).
    """

    name: str
    judge: Callable[..., Verdict] = field(repr=False)
    param: str | None = None
    param_type: type = float
    lossless: bool = False
    needs_sampling: bool = False
    needs_tokenizer: str | None = None


#: Every acceptance rule, by name: the one table the decoding loop, method specs, widgets and
#: figures read.
RULES: dict[str, RuleKind] = {
    r.name: r
    for r in (
        RuleKind("exact", _judge_exact, lossless=True),
        RuleKind("speculative", _judge_speculative, lossless=True, needs_sampling=True),
        RuleKind("match_rate", _judge_match_rate, param="tau"),
        RuleKind(
            "level_distance",
            _judge_level_distance,
            param="delta",
            param_type=int,
            needs_tokenizer="index_to_digits",
        ),
        RuleKind("action_tolerance", _judge_action_tolerance, param="eps", needs_tokenizer="decode"),
    )
}
RULE_NAMES = tuple(RULES)


def rule_label(name: str, params: dict[str, Any]) -> str:
    """``name(param=value)`` plus ``[lossy]`` where it applies: what figures and tables print."""
    args = ", ".join(f"{k}={v}" for k, v in params.items())
    return f"{name}({args})" + ("" if RULES[name].lossless else " [lossy]")


@dataclass(frozen=True)
class AcceptanceRule:
    """A named, parameterised rule as the decoding loop calls it.

    Attributes:
        name: one of :data:`RULE_NAMES`.
        params: the rule's parameters (``{"tau": 0.5}``; empty for ``exact`` and ``speculative``).
        tokenizer: the RFSQ tokenizer, for the rules that read one.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    tokenizer: ActionTokenizer | None = field(default=None, repr=False, compare=False)

    @property
    def kind(self) -> RuleKind:
        return RULES[self.name]

    @property
    def lossless(self) -> bool:
        return self.kind.lossless

    @property
    def needs_sampling(self) -> bool:
        return self.kind.needs_sampling

    @property
    def label(self) -> str:
        """``name(param=value)`` plus ``[lossy]`` where it applies: what figures should print."""
        return rule_label(self.name, self.params)

    def __call__(
        self,
        *,
        x: torch.Tensor,
        q: torch.Tensor,
        p: torch.Tensor,
        tokens: torch.Tensor,
        layer: torch.Tensor,
        generator: torch.Generator | None,
    ) -> Verdict:
        """Judge one drafted layer per item (see the module docstring for shapes)."""
        return self.kind.judge(x, q, p, tokens, layer, generator, self.params, self.tokenizer)


def make_rule(name: str, *, tokenizer: ActionTokenizer | None = None, **params: Any) -> AcceptanceRule:
    """Build a rule by name.

    Args:
        name: one of :data:`RULE_NAMES`.
        tokenizer: the RFSQ tokenizer (``level_distance`` needs ``index_to_digits``,
            ``action_tolerance`` needs ``decode``).
        **params: ``tau`` in (0, 1] for ``match_rate``, ``delta`` >= 0 for ``level_distance``,
            ``eps`` >= 0 for ``action_tolerance``.

    Raises:
        ValueError: an unknown name, a missing or out-of-range parameter, or a missing tokenizer.
    """
    if name not in RULES:
        raise ValueError(f"unknown acceptance rule {name!r}; choose one of {RULE_NAMES}")
    kind = RULES[name]
    wanted = [] if kind.param is None else [kind.param]
    if sorted(params) != wanted:
        raise ValueError(f"rule {name!r} takes parameters {wanted}, got {sorted(params)}")
    check_rule_param(name, params.get(kind.param))
    if kind.needs_tokenizer and not hasattr(tokenizer, kind.needs_tokenizer):
        raise ValueError(f"{name} needs tokenizer= with {kind.needs_tokenizer} (the RFSQ tokenizer)")
    if name == "level_distance":
        levels = getattr(tokenizer, "levels", None)
        if levels and params["delta"] >= max(levels) - 1:
            raise ValueError(
                f"level_distance delta={params['delta']} accepts every drafted token: the tokenizer's FSQ "
                f"channels have at most {max(levels)} levels, so no two codes differ by more than "
                f"{max(levels) - 1} per channel. Use a smaller delta (0 is exact) or another rule."
            )
    return AcceptanceRule(name=name, params=dict(params), tokenizer=tokenizer)


def check_rule_param(name: str, value: Any) -> None:
    """Raise ValueError when ``value`` is not a valid parameter of rule ``name`` (None: it takes none)."""
    kind = RULES[name]
    if kind.param is None:
        if value is not None:
            raise ValueError(f"rule {name!r} takes no parameter, got {value!r}")
        return
    if value is None:
        raise ValueError(f"rule {name!r} needs its parameter {kind.param!r}")
    if kind.param_type is int and (isinstance(value, bool) or int(value) != value):
        raise ValueError(f"{name} {kind.param} ({value}) must be an integer")
    if name == "match_rate" and not 0 < value <= 1:
        raise ValueError(f"match_rate tau ({value}) must be in (0, 1]")
    if name in ("level_distance", "action_tolerance") and value < 0:
        raise ValueError(f"{name} {kind.param} ({value}) must be >= 0")
