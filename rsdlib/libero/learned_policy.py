"""A trained policy as the evaluation harness runs it: observation in, decoded chunk out, trace per chunk.

:class:`LearnedPolicy` wraps a main policy (any head), the tokenizer or normaliser that turns its
output into environment units, and the decoding settings: RSD (``rsd``: an ``rfsq_ar`` main
policy, a drafter and an acceptance rule) or plain decoding (``rfsq_ar``, ``rfsq_parallel``,
``l1_regression``, ``fast_ar``). Every chunk's :class:`~rsdlib.libero.policy.PolicyOutput` carries
:func:`chunk_diagnostics` of its :class:`~rsdlib.decoding.DecodeTrace`, so a LIBERO run records
acceptance, main passes and latency beside success::

    policy = from_checkpoint("results/policies/main/last", method="rsd",
                             drafter_path="results/policies/head/last", rule="exact", gamma=2)
    evaluate(policy, ["libero_spatial"], episodes=50, run_dir=..., options=EvalOptions(render=True))

The policy reads only the cameras, the proprio vector and the instruction; never the privileged
simulator state.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsdlib.decoding import (
    RULE_NAMES,
    DecodeResult,
    DecodeTrace,
    acceptance_per_layer,
    decode_fast_ar,
    decode_l1_regression,
    decode_rfsq_ar,
    decode_rfsq_parallel,
    layer_steps,
    make_rule,
    speculative_decode,
)
from rsdlib.decoding.result import check_tokenizer
from rsdlib.libero.policy import EpisodeContext, Policy, PolicyOutput
from rsdlib.policies import checkpoints
from rsdlib.policies.drafters import Drafter, HeadDrafter, PolicyDrafter
from rsdlib.policies.heads import FastAutoregressive, L1Regression, RFSQAutoregressive, RFSQParallel
from rsdlib.policies.heads import Policy as HeadPolicy
from rsdlib.policies.processor import CAMERA_KEYS

#: Decoding methods and the head each one needs.
METHOD_HEADS: dict[str, type[HeadPolicy]] = {
    "rsd": RFSQAutoregressive,
    "rfsq_ar": RFSQAutoregressive,
    "rfsq_parallel": RFSQParallel,
    "l1_regression": L1Regression,
    "fast_ar": FastAutoregressive,
}
METHODS = tuple(METHOD_HEADS)
_RFSQ_METHODS = ("rsd", "rfsq_ar", "rfsq_parallel")


@dataclass(frozen=True)
class DecodingSettings:
    """How a chunk is decoded.

    Attributes:
        method: one of :data:`METHODS`.
        rule: the acceptance rule (``rsd`` only), one of ``rsdlib.decoding.RULE_NAMES``.
        rule_params: the rule's parameters (``tau``, ``delta`` or ``eps``).
        gamma: layers drafted per round (``rsd`` only).
        temperature: 0 for greedy; > 0 samples with the episode's seeded generator.
        redraft: draft every round (False: draft once, then go on plainly; ``rsd`` only).
    """

    method: str = "rsd"
    rule: str = "exact"
    rule_params: dict[str, Any] = field(default_factory=dict)
    gamma: int = 2
    temperature: float = 0.0
    redraft: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method ({self.method!r}) must be one of {METHODS}")
        if self.rule not in RULE_NAMES:
            raise ValueError(f"rule ({self.rule!r}) must be one of {RULE_NAMES}")
        if int(self.gamma) != self.gamma or self.gamma < 1:
            raise ValueError(f"gamma ({self.gamma}) must be an integer >= 1")
        if self.temperature < 0:
            raise ValueError(f"temperature ({self.temperature}) must be >= 0")
        if self.method == "rsd" and (self.rule == "speculative") != (self.temperature > 0):
            raise ValueError(
                f"rule {self.rule!r} at temperature {self.temperature}: 'speculative' samples "
                "(temperature > 0); every other rule compares drafts with the main argmax (temperature 0)"
            )
        if self.method == "l1_regression" and self.temperature != 0:
            raise ValueError(
                f"l1_regression is deterministic: temperature must be 0 (got {self.temperature})"
            )
        object.__setattr__(self, "rule_params", dict(self.rule_params))


class LearnedPolicy(Policy):
    """A main policy decoding one action chunk per :meth:`act`.

    Args:
        model: the main policy (its head must suit ``settings.method``, see :data:`METHOD_HEADS`).
        settings: how to decode.
        tokenizer: turns tokens into environment units: the RFSQ tokenizer the policy was trained
            with (``rsd``, ``rfsq_ar``, ``rfsq_parallel``) or the FAST tokenizer (``fast_ar``).
        normaliser: for ``l1_regression``: maps its normalised output to environment units.
        drafter: for ``rsd``: the drafter (on the main model's device).
        name: recorded in results (default: the method).
        sources: where the model, drafter and tokenizer came from (recorded in :meth:`config`).

    Raises:
        ValueError: a head, tokenizer, normaliser or drafter that does not fit the method.
    """

    def __init__(
        self,
        model: HeadPolicy,
        settings: DecodingSettings,
        *,
        tokenizer: Any = None,
        normaliser: Any = None,
        drafter: Drafter | None = None,
        name: str | None = None,
        sources: Mapping[str, str | None] | None = None,
    ) -> None:
        method = settings.method
        want = METHOD_HEADS[method]
        if not isinstance(model, want):
            raise ValueError(
                f"method {method!r} needs a {want.__name__} policy, got {type(model).__name__} "
                f"(head {model.config.head!r})"
            )
        a = model.config.actions
        if a.action_dim != 7:
            raise ValueError(f"LIBERO actions have 7 dims; the policy predicts {a.action_dim}")
        if method in _RFSQ_METHODS:
            if tokenizer is None:
                raise ValueError(f"method {method!r} needs the RFSQ tokenizer the policy was trained with")
            check_tokenizer(tokenizer, num_layers=model.L, num_latents=model.N, codebook_size=model.V)
            _check_chunk_shape(tokenizer, a.horizon, a.action_dim)
        if method == "fast_ar":
            if tokenizer is None or not hasattr(tokenizer, "vocab_size"):
                raise ValueError("method 'fast_ar' needs the FAST tokenizer the policy was trained with")
            if tokenizer.vocab_size != model.V - 1:  # the policy's last id is its end token
                raise ValueError(
                    f"the FAST tokenizer has {tokenizer.vocab_size} ids, the policy was built for "
                    f"{model.V - 1} (plus its end token): load the tokenizer it was trained with"
                )
            _check_chunk_shape(tokenizer, a.horizon, a.action_dim)
        if method == "l1_regression" and not getattr(normaliser, "fitted", False):
            raise ValueError(
                "method 'l1_regression' needs the fitted Normaliser of its training data "
                "(its output is in normalised units)"
            )
        self.rule = None
        if method == "rsd":
            if drafter is None:
                raise ValueError("method 'rsd' needs a drafter (a head drafter or a small rfsq_ar policy)")
            _check_drafter(drafter, model)
            self.rule = make_rule(settings.rule, tokenizer=tokenizer, **settings.rule_params)
        self.model, self.settings = model, settings
        self.tokenizer, self.normaliser, self.drafter = tokenizer, normaliser, drafter
        self.name = name or method
        self.sources = dict(sources or {})
        self._context: EpisodeContext | None = None
        self._generator: torch.Generator | None = None

    # -- the Policy interface -------------------------------------------------------------------

    def reset(self, context: EpisodeContext) -> None:
        """Start an episode: the generator is seeded from ``context.seed`` (same seed, same draws)."""
        self._context = context
        self._generator = torch.Generator(device=self.model.device).manual_seed(int(context.seed))

    def act(self, obs: Mapping[str, Any]) -> PolicyOutput:
        """Decode one chunk for a LIBERO observation.

        Args:
            obs: ``agentview_rgb`` and ``eye_in_hand_rgb`` ``(S, S, 3)`` uint8 upright, ``proprio``
                ``(8,)``, and ``instruction`` (else the episode context's).

        Returns:
            ``actions`` ``(H, 7)`` in environment units and :func:`chunk_diagnostics`.

        Raises:
            ValueError: a missing key or a wrongly shaped image or proprio vector.
            RuntimeError: sampling before :meth:`reset` gave a seed.
        """
        if self.settings.temperature > 0 and self._generator is None:
            raise RuntimeError(
                f"{self.name}: call reset(context) before act: sampling needs the episode's seed"
            )
        start = time.perf_counter()
        batch = self.model.prepare([self._model_input(obs)])
        preprocess_s = time.perf_counter() - start
        chunks, result = self.decode(batch)
        actions = chunks[0]  # (H, A)
        if not np.all(np.isfinite(actions)):
            raise ValueError(f"{self.name} decoded non-finite actions")
        return PolicyOutput(actions, chunk_diagnostics(result.traces[0], preprocess_s=preprocess_s))

    def decode(self, batch: Any) -> tuple[np.ndarray, DecodeResult]:
        """Decode prepared observations (``self.model.prepare(...)`` or a packed batch's ``obs``).

        Returns:
            ``(B, H, A)`` chunks in environment units, and the decoding result with its traces.
        """
        result = self.decode_tokens(batch)
        return self.env_actions(result).detach().cpu().double().numpy(), result

    def config(self) -> dict[str, Any]:
        """What the run's config records: settings, the rule's label, the model and where it came from."""
        return {
            "name": self.name,
            **asdict(self.settings),
            "rule_label": None if self.rule is None else self.rule.label,
            "lossless": True if self.rule is None else self.rule.lossless,
            "drafter": None if self.drafter is None else self.drafter.name,
            "head": self.model.config.head,
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "device": str(self.model.device),
            **{f"{k}_path": v for k, v in self.sources.items()},
        }

    # -- internals ------------------------------------------------------------------------------

    def _model_input(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """The keys the processor reads; the privileged ``state`` never reaches the model."""
        if not isinstance(obs, Mapping):
            raise ValueError(f"{self.name}: an observation is a dict, got {type(obs).__name__}")
        cams = CAMERA_KEYS[: self.model.config.trunk.num_cameras]
        missing = [k for k in cams if k not in obs]
        if missing:
            raise ValueError(
                f"{self.name} reads camera images {list(cams)}, the observation lacks {missing} "
                f"(it has {sorted(obs)}): evaluate with rendering on, EvalOptions(render=True)"
            )
        instruction = obs.get("instruction")
        if instruction is None and self._context is not None:
            instruction = self._context.instruction
        out = {k: obs[k] for k in (*cams, "proprio") if k in obs}
        if instruction is not None:
            out["instruction"] = instruction
        return out  # the processor names whatever is still missing or misshapen

    def decode_tokens(self, batch: Any) -> DecodeResult:
        """Decode prepared observations with the policy's method and settings (tokens and traces;
        :meth:`env_actions` turns them into environment actions)."""
        s, m = self.settings, self.model
        g = self._generator if s.temperature > 0 else None
        if s.method == "rsd":
            return speculative_decode(
                m,
                self.drafter,
                batch,
                rule=self.rule,
                gamma=s.gamma,
                temperature=s.temperature,
                generator=g,
                tokenizer=self.tokenizer,
                redraft=s.redraft,
            )
        if s.method == "rfsq_ar":
            return decode_rfsq_ar(m, batch, temperature=s.temperature, generator=g, tokenizer=self.tokenizer)
        if s.method == "rfsq_parallel":
            return decode_rfsq_parallel(
                m, batch, temperature=s.temperature, generator=g, tokenizer=self.tokenizer
            )
        if s.method == "l1_regression":
            return decode_l1_regression(m, batch)
        return decode_fast_ar(m, batch, temperature=s.temperature, generator=g)

    def env_actions(self, result: DecodeResult) -> torch.Tensor:
        """``(B, H, A)`` in environment units.

        Raises:
            MalformedTokens: a ``fast_ar`` sequence that does not decode to a chunk.
        """
        method = self.settings.method
        if method == "l1_regression":
            return self.normaliser.denormalise(result.actions.double())
        if method == "fast_ar":
            # A malformed sequence raises (MalformedTokens) rather than decoding to a made-up chunk.
            return self.tokenizer.decode([row[row >= 0] for row in result.tokens.cpu()])
        return result.actions


def chunk_diagnostics(trace: DecodeTrace, *, preprocess_s: float | None = None) -> dict[str, Any]:
    """A compact JSON-able record of one chunk's decoding (what evaluation stores per chunk).

    Builds on :meth:`DecodeTrace.diagnostics` (method, main passes, and for RSD the rule, gamma,
    drafter, rounds and per-layer verdicts), with wall times in milliseconds and, for the RFSQ
    methods, where every layer came from.

    Returns:
        ``method``, ``main_passes``, ``latency_ms`` (``prefix``, ``draft``, ``verify``, ``plain``,
        ``detokenize``, ``total`` and, for RSD, ``record``), ``preprocess_ms`` when given;
        RFSQ methods: ``layer_kinds`` ``[L]`` (``accepted``, ``corrected``, ``bonus``, ``plain``);
        RSD also: ``rule``, ``lossless``, ``gamma``, ``drafter``, ``temperature``, ``rounds``,
        ``accepted_layers``, ``judged`` ``[[layer, accepted], ...]``, ``accepted_per_round``,
        ``committed_per_round`` (sums to L), ``acceptance_per_layer`` ``[L]`` (1, 0, or None
        where the layer was not drafted); ``fast_ar``: ``num_tokens``.
    """
    out = trace.diagnostics()
    out.pop("latency_s", None)
    out["latency_ms"] = {k: round(1000 * v, 4) for k, v in out.pop("timings").items()}
    if preprocess_s is not None:
        out["preprocess_ms"] = round(1000 * preprocess_s, 4)
    if trace.method in _RFSQ_METHODS:
        out["layer_kinds"] = [s.kind for s in layer_steps(trace)]
    if trace.method == "rsd":
        out |= {
            "temperature": trace.temperature,
            "accepted_per_round": [r.accepted_layers for r in trace.rounds],
            "committed_per_round": [r.committed_layers for r in trace.rounds],
            "acceptance_per_layer": acceptance_per_layer([trace]),
        }
    if trace.method == "fast_ar":
        out["num_tokens"] = trace.num_latents
    return out


# -- loading --------------------------------------------------------------------------------------


def from_checkpoint(
    path: str | Path,
    *,
    method: str | None = None,
    drafter_path: str | Path | None = None,
    rule: str = "exact",
    gamma: int = 2,
    temperature: float = 0.0,
    redraft: bool = True,
    tokenizer: Any = None,
    normaliser: Any = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    name: str | None = None,
    **params: Any,
) -> LearnedPolicy:
    """Load a policy checkpoint (and a drafter) as a :class:`LearnedPolicy`.

    Args:
        path: the main policy's checkpoint folder (``rsdlib.policies.checkpoints``).
        method: one of :data:`METHODS`; None picks the head's own method, or ``rsd`` for an
            ``rfsq_ar`` policy given a ``drafter_path``.
        drafter_path: for ``rsd``: a head-drafter checkpoint or a small ``rfsq_ar`` policy.
        rule: the acceptance rule (``rsd``).
        gamma: layers drafted per round (``rsd``).
        temperature: 0 for greedy.
        redraft: draft every round (``rsd``).
        tokenizer: a tokenizer or its folder; None reads ``metadata["tokenizer"]`` of the
            policy's config (a folder, relative to the checkpoint folder or absolute).
        normaliser: for ``l1_regression``: a :class:`~rsdlib.tokenizers.Normaliser`, its JSON
            file, or a folder holding ``normaliser.json``; None reads ``metadata["normaliser"]``.
        dtype: cast the models (None: the precision they were saved in).
        device: where to run (None: CPU).
        name: recorded in results (default: the method).
        **params: the rule's parameters (``tau``, ``delta``, ``eps``).

    Raises:
        CheckpointError: a checkpoint that cannot be loaded, or whose head or drafter does not
            fit the method; the message names the file.
        FileNotFoundError: a tokenizer or normaliser that is not where it is said to be.
    """
    path = Path(path)
    model = checkpoints.load(path, dtype=dtype)
    config_file = path / checkpoints.CONFIG
    if not isinstance(model, HeadPolicy):
        raise checkpoints.CheckpointError(
            f"{config_file} holds a {type(model).__name__}, not a policy; pass the drafter as drafter_path"
        )
    head = model.config.head
    if method is None:
        method = "rsd" if head == "rfsq_ar" and drafter_path is not None else head
    if method not in METHODS:
        raise ValueError(f"method ({method!r}) must be one of {METHODS}")
    if not isinstance(model, METHOD_HEADS[method]):
        needs = "rfsq_ar" if method == "rsd" else method
        raise checkpoints.CheckpointError(
            f"{config_file} holds a {head!r} policy; method {method!r} needs a {needs!r} policy"
        )
    settings = DecodingSettings(
        method=method, rule=rule, rule_params=params, gamma=gamma, temperature=temperature, redraft=redraft
    )
    if device is not None:
        model.to(device)
    drafter = None
    if method == "rsd":
        if drafter_path is None:
            raise ValueError(
                "method 'rsd' needs drafter_path: a head-drafter checkpoint or a small rfsq_ar policy"
            )
        drafter = checkpoints.load_drafter(drafter_path, dtype=dtype)
        module = drafter if isinstance(drafter, HeadDrafter) else drafter.policy
        module.to(device=model.device, dtype=model.dtype)
        try:
            _check_drafter(drafter, model)
        except ValueError as err:
            raise checkpoints.CheckpointError(f"{Path(drafter_path) / checkpoints.CONFIG}: {err}") from err
    meta = model.config.metadata
    tokenizer_source = None
    if method != "l1_regression":
        tokenizer, tokenizer_source = _resolve_tokenizer(tokenizer, meta.get("tokenizer"), path)
    normaliser_source = None
    if method == "l1_regression":
        normaliser, normaliser_source = _resolve_normaliser(normaliser, meta.get("normaliser"), path)
    sources = {
        "checkpoint": str(path),
        "drafter": None if drafter_path is None else str(drafter_path),
        "tokenizer": tokenizer_source,
        "normaliser": normaliser_source,
    }
    return LearnedPolicy(
        model,
        settings,
        tokenizer=tokenizer,
        normaliser=normaliser,
        drafter=drafter,
        name=name,
        sources={k: v for k, v in sources.items() if v is not None},
    )


def _resolve(given: Any, from_meta: Any, checkpoint: Path, what: str) -> tuple[Any, Path | None]:
    """A given object, or the path to load it from (given, or named in the checkpoint's metadata)."""
    if given is not None and not isinstance(given, str | Path):
        return given, None
    if given is None and from_meta is None:
        raise FileNotFoundError(
            f"no {what} given, and {checkpoint / checkpoints.CONFIG} names none in metadata[{what!r}]: "
            f"pass {what}= (the one the policy was trained with)"
        )
    where = Path(given if given is not None else from_meta)
    if given is None and not where.is_absolute():
        where = checkpoint / where  # metadata paths are relative to the checkpoint folder
    if not where.exists():
        raise FileNotFoundError(f"the {what} of {checkpoint} is not at {where}")
    return None, where


def _resolve_tokenizer(given: Any, from_meta: Any, checkpoint: Path) -> tuple[Any, str | None]:
    from rsdlib.tokenizers import load_tokenizer

    obj, where = _resolve(given, from_meta, checkpoint, "tokenizer")
    return (obj, None) if where is None else (load_tokenizer(where), str(where))


def _resolve_normaliser(given: Any, from_meta: Any, checkpoint: Path) -> tuple[Any, str | None]:
    from rsdlib.tokenizers import Normaliser
    from rsdlib.tokenizers.base import NORMALISER_FILE

    obj, where = _resolve(given, from_meta, checkpoint, "normaliser")
    if where is None:
        return obj, None
    file = where / NORMALISER_FILE if where.is_dir() else where
    return Normaliser.load(file), str(file)


def _check_chunk_shape(tokenizer: Any, horizon: int, action_dim: int) -> None:
    have = (getattr(tokenizer, "horizon", None), getattr(tokenizer, "action_dim", None))
    if have != (horizon, action_dim):
        raise ValueError(
            f"the tokenizer decodes chunks of (H, A) = {have}, the policy was built for {(horizon, action_dim)}"
        )


def _check_drafter(drafter: Drafter, main: RFSQAutoregressive) -> None:
    """The drafter proposes the main policy's token shape (and a head reads its trunk's width)."""
    inner = drafter.policy if isinstance(drafter, PolicyDrafter) else drafter
    have = tuple(getattr(inner, k, None) for k in ("L", "N", "V"))
    if None not in have and have != (main.L, main.N, main.V):
        raise ValueError(
            f"drafter {drafter.name!r} proposes (L, N, V) = {have}, the main policy decodes "
            f"{(main.L, main.N, main.V)}"
        )
    if isinstance(drafter, HeadDrafter) and drafter.config.trunk_hidden_size != main.trunk.hidden_size:
        raise ValueError(
            f"head drafter reads trunk states of width {drafter.config.trunk_hidden_size}, the main "
            f"trunk's are {main.trunk.hidden_size}"
        )
