"""MethodSpec: one decoding method and its settings, written one way everywhere.

Benchmarks, LIBERO policies, the stepper widget, profiles, result folders and tables all name a
method with the same spec and the same text grammar::

    rfsq_ar                      plain decoding with a head (rfsq_ar, rfsq_parallel, l1_regression, fast_ar)
    rfsq_ar@1                    ... sampling at temperature 1
    rsd_head:g2:exact            RSD: drafter (head or tiny), gamma, acceptance rule
    rsd_head:g3:match_rate:0.5   ... a rule with its one parameter (tau, delta or eps)
    rsd_head:g2:speculative@1    ... sampling (the speculative rule samples)
    rsd_head:g2:exact:once       ... drafting only in the first round (``redraft=False``)
    rfsq_ar+entropy:0.3          adaptive depth: stop at the first layer where the monitor's value
                                 is not above its threshold (rfsq_ar and RSD; monitors in
                                 ``rsdlib.decoding.monitors``)
    rsd_head:g2:exact+fixed:2    ... RSD that decodes the first 2 layers only

``MethodSpec.parse(str(spec)) == spec`` for every valid spec. The rules and their parameters
come from :data:`rsdlib.decoding.acceptance.RULES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rsdlib.decoding.acceptance import (
    RULE_NAMES,
    RULES,
    AcceptanceRule,
    check_rule_param,
    make_rule,
    rule_label,
)
from rsdlib.decoding.monitors import MONITOR_NAMES, DepthMonitor

if TYPE_CHECKING:
    from rsdlib.tokenizers.base import ActionTokenizer

#: Plain decoding methods: each decodes with its own head, no drafter.
PLAIN_METHODS = ("rfsq_ar", "rfsq_parallel", "l1_regression", "fast_ar")
#: Every method: the plain ones and ``rsd`` (an ``rfsq_ar`` main policy with a drafter).
METHODS = (*PLAIN_METHODS, "rsd")
#: Drafters an RSD spec can name (``rsd_<drafter>``); a models folder maps them to checkpoints.
DRAFTERS = ("head", "tiny")
#: The methods whose tokens are RFSQ tokens.
RFSQ_METHODS = ("rsd", "rfsq_ar", "rfsq_parallel")
#: The methods that decode layer by layer, so a depth monitor can stop them early.
ADAPTIVE_METHODS = ("rsd", "rfsq_ar")
_ONCE = "once"


@dataclass(frozen=True)
class MethodSpec:
    """How a chunk is decoded.

    Attributes:
        method: one of :data:`METHODS`.
        drafter: the drafter's name (``rsd`` only): ``head`` (the EAGLE-style head on the main
            trunk) or ``tiny`` (an independent small policy); other names are allowed where the
            caller maps them (the stepper's ``self``).
        gamma: layers drafted per round (``rsd`` only).
        rule: the acceptance rule (``rsd`` only), one of :data:`~rsdlib.decoding.acceptance.RULE_NAMES`.
        param: the rule's one parameter (``tau``, ``delta`` or ``eps``), None for rules without.
        temperature: 0 for greedy; > 0 samples (the token methods; RSD with ``speculative``).
        redraft: draft every round (False: draft once, then go on plainly; ``rsd`` only).
        monitor: a depth monitor (``rfsq_ar`` and ``rsd``): decode only the layers it asks for.
        depth_threshold: the monitor's threshold.
    """

    method: str = "rfsq_ar"
    drafter: str | None = None
    gamma: int | None = None
    rule: str | None = None
    param: float | int | None = None
    temperature: float = 0.0
    redraft: bool = True
    monitor: str | None = None
    depth_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method ({self.method!r}) must be one of {METHODS}")
        if self.temperature < 0:
            raise ValueError(f"temperature ({self.temperature}) must be >= 0")
        if self.monitor is not None or self.depth_threshold is not None:
            if self.method not in ADAPTIVE_METHODS:
                raise ValueError(
                    f"a depth monitor needs a method that decodes layer by layer {ADAPTIVE_METHODS}"
                )
            if self.monitor not in MONITOR_NAMES or self.depth_threshold is None:
                raise ValueError(
                    f"adaptive depth needs a monitor ({MONITOR_NAMES}) and its threshold, "
                    f"got {self.monitor!r} and {self.depth_threshold!r}"
                )
            object.__setattr__(self, "depth_threshold", float(self.depth_threshold))
            DepthMonitor(self.monitor, self.depth_threshold)  # validates the threshold
        if self.method != "rsd":
            extra = {k: v for k, v in self._rsd_fields().items() if v is not None} | (
                {} if self.redraft else {"redraft": False}
            )
            if extra:
                raise ValueError(f"{extra} are RSD settings; method {self.method!r} takes none of them")
            if self.method == "l1_regression" and self.temperature != 0:
                raise ValueError(
                    f"l1_regression is deterministic: temperature must be 0 (got {self.temperature})"
                )
            return
        if not self.drafter or not self.drafter.isidentifier():
            raise ValueError(f"RSD needs a drafter name ({DRAFTERS}), got {self.drafter!r}")
        if (
            self.gamma is None
            or isinstance(self.gamma, bool)
            or int(self.gamma) != self.gamma
            or self.gamma < 1
        ):
            raise ValueError(f"gamma ({self.gamma}) must be an integer >= 1")
        if self.rule not in RULES:
            raise ValueError(f"rule ({self.rule!r}) must be one of {RULE_NAMES}")
        check_rule_param(self.rule, self.param)
        if self.param is not None:
            object.__setattr__(self, "param", RULES[self.rule].param_type(self.param))
        object.__setattr__(self, "gamma", int(self.gamma))
        if RULES[self.rule].needs_sampling != (self.temperature > 0):
            raise ValueError(
                f"rule {self.rule!r} at temperature {self.temperature}: 'speculative' samples "
                "(temperature > 0); every other rule compares drafts with the main argmax (temperature 0)"
            )

    def _rsd_fields(self) -> dict[str, Any]:
        return {"drafter": self.drafter, "gamma": self.gamma, "rule": self.rule, "param": self.param}

    # -- what it means --------------------------------------------------------------------------

    @property
    def is_rsd(self) -> bool:
        return self.method == "rsd"

    @property
    def head(self) -> str:
        """The head the main policy must have (``rfsq_ar`` for RSD)."""
        return "rfsq_ar" if self.is_rsd else self.method

    @property
    def depth_monitor(self) -> DepthMonitor | None:
        """The depth monitor the loops call (None: full depth)."""
        if self.monitor is None:
            return None
        return DepthMonitor(self.monitor, float(self.depth_threshold))

    @property
    def rule_params(self) -> dict[str, float | int]:
        """The rule's keyword arguments: ``{"tau": 0.5}``, or ``{}``."""
        if self.rule is None or self.param is None:
            return {}
        return {RULES[self.rule].param: self.param}

    @property
    def lossless(self) -> bool:
        """Whether the output equals the main model's at full depth (greedy tokens or distribution):
        a depth monitor that stops early changes it, whatever the rule."""
        return self.monitor is None and (not self.is_rsd or RULES[self.rule].lossless)

    @property
    def rule_label(self) -> str | None:
        """``match_rate(tau=0.5) [lossy]``: the rule as figures print it (None for plain methods)."""
        return None if self.rule is None else rule_label(self.rule, self.rule_params)

    @property
    def setting(self) -> str | None:
        """What a threshold sweep holds fixed, ``rsd_head:g3`` (None for plain methods)."""
        return f"rsd_{self.drafter}:g{self.gamma}" if self.is_rsd else None

    def make_rule(self, tokenizer: ActionTokenizer | None = None) -> AcceptanceRule:
        """The acceptance rule the decoding loop calls (``rsd`` only)."""
        if not self.is_rsd:
            raise ValueError(f"{self}: plain decoding has no acceptance rule")
        return make_rule(self.rule, tokenizer=tokenizer, **self.rule_params)

    # -- text -----------------------------------------------------------------------------------

    def __str__(self) -> str:
        body = self.method
        if self.is_rsd:
            body = f"rsd_{self.drafter}:g{self.gamma}:{self.rule}"
            if self.param is not None:
                body += f":{_number(self.param)}"
            if not self.redraft:
                body += f":{_ONCE}"
        if self.monitor is not None:
            body += f"+{self.monitor}:{_number(self.depth_threshold)}"
        return body + (f"@{_number(self.temperature)}" if self.temperature > 0 else "")

    @classmethod
    def parse(cls, text: str | MethodSpec) -> MethodSpec:
        """A spec from its text (see the module docstring); a spec is returned as it is.

        Raises:
            ValueError: text that does not follow the grammar, naming what to write instead.
        """
        if isinstance(text, MethodSpec):
            return text
        if not isinstance(text, str):
            raise TypeError(
                f"a method spec is a string such as 'rsd_head:g2:exact', got {type(text).__name__}"
            )
        body, at, temp = text.strip().partition("@")
        try:
            temperature = float(temp) if at else 0.0
        except ValueError:
            raise ValueError(f"{text!r}: write a temperature after '@' as a number, e.g. rfsq_ar@1") from None
        body, plus, depth = body.partition("+")
        monitor, depth_threshold = None, None
        if plus:
            monitor, _, value = depth.partition(":")
            try:
                depth_threshold = float(value)
            except ValueError:
                raise ValueError(
                    f"{text!r}: write adaptive depth as +<monitor>:<threshold>, e.g. rfsq_ar+entropy:0.3 "
                    f"(monitors: {MONITOR_NAMES})"
                ) from None
        adaptive = {"monitor": monitor, "depth_threshold": depth_threshold}
        head, _, rest = body.partition(":")
        if not head.startswith("rsd_"):
            if rest:
                raise ValueError(f"{text!r}: only RSD methods (rsd_<drafter>) take :g<gamma>:<rule>")
            if head not in PLAIN_METHODS:
                raise ValueError(
                    f"{text!r}: unknown method; write one of {PLAIN_METHODS} or RSD as rsd_<drafter>:g<gamma>:<rule>"
                )
            return cls(method=head, temperature=temperature, **adaptive)
        drafter = head.removeprefix("rsd_")
        parts = rest.split(":")
        redraft = parts[-1] != _ONCE
        parts = parts if redraft else parts[:-1]
        usage = f"write RSD as rsd_{drafter}:g<gamma>:<rule>[:<parameter>][:once][@T], e.g. rsd_{drafter}:g2:exact"
        if len(parts) not in (2, 3) or not parts[0].startswith("g") or not parts[0][1:].isdigit():
            raise ValueError(f"{text!r}: {usage}")
        rule = parts[1]
        if rule not in RULES:
            raise ValueError(f"{text!r}: unknown rule {rule!r}; choose one of {RULE_NAMES}")
        param: float | int | None = None
        if len(parts) == 3:
            try:
                param = RULES[rule].param_type(parts[2])
            except ValueError:
                kind = "an integer" if RULES[rule].param_type is int else "a number"
                raise ValueError(f"{text!r}: {rule}'s {RULES[rule].param} must be {kind} ({usage})") from None
        elif RULES[rule].param is not None:
            raise ValueError(f"{text!r}: rule {rule!r} needs its {RULES[rule].param}: {usage}")
        return cls("rsd", drafter, int(parts[0][1:]), rule, param, temperature, redraft, **adaptive)


def _number(value: float | int) -> str:
    """The shortest text that reads back as ``value`` (0.5, not 0.50000; 1e-05 where needed)."""
    text = f"{value:g}"
    return text if type(value)(text) == value else repr(value)
