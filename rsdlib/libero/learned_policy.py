"""A trained policy as the evaluation harness runs it: observation in, decoded chunk out, trace per chunk.

:class:`LearnedPolicy` wraps a main policy (any head), the tokenizer or normaliser that turns its
output into environment units, and a :class:`~rsdlib.decoding.spec.MethodSpec`: RSD (``rsd``: an ``rfsq_ar`` main
policy, a drafter and an acceptance rule) or plain decoding (``rfsq_ar``, ``rfsq_parallel``,
``l1_regression``, ``fast_ar``). Every chunk's :class:`~rsdlib.libero.policy.PolicyOutput` carries
:func:`chunk_diagnostics` of its :class:`~rsdlib.decoding.DecodeTrace`, so a LIBERO run records
acceptance, main passes and latency beside success::

    policy = from_checkpoint("checkpoints/lowdim/libero_spatial/rfsq_ar", "rsd_head:g2:exact",
                             drafter_path="checkpoints/lowdim/libero_spatial/head_drafter")
    evaluate(policy, ["libero_spatial"], episodes=50, run_dir=..., options=EvalOptions(render=True))

The policy reads only the cameras, the proprio vector and the instruction; never the privileged
simulator state.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsdlib.actions import ACTION_DIM, GRIPPER
from rsdlib.decoding import DecodeResult, DecodeTrace, acceptance_per_layer, layer_steps
from rsdlib.decoding.methods import METHOD_HEADS, Decoder, check_drafter
from rsdlib.decoding.monitors import DepthHistory
from rsdlib.decoding.spec import RFSQ_METHODS, MethodSpec
from rsdlib.libero.policy import EnvPolicy, EpisodeContext, PolicyOutput
from rsdlib.observations import CAMERA_KEYS
from rsdlib.policies import checkpoints
from rsdlib.policies.depth_head import ResidualNormHead, check_depth_head
from rsdlib.policies.drafters import Drafter, HeadDrafter
from rsdlib.policies.heads import Policy as HeadPolicy
from rsdlib.tokenizers.base import NORMALISER_FILE, ActionTokenizer, load_tokenizer
from rsdlib.tokenizers.normaliser import Normaliser


class LearnedPolicy(EnvPolicy):
    """A main policy decoding one action chunk per :meth:`act`.

    Args:
        model: the main policy (its head must suit ``spec.method``, see
            :data:`~rsdlib.decoding.methods.METHOD_HEADS`).
        spec: how to decode (a :class:`~rsdlib.decoding.spec.MethodSpec` or its text).
        tokenizer: turns tokens into environment units: the RFSQ tokenizer the policy was trained
            with (``rsd``, ``rfsq_ar``, ``rfsq_parallel``) or the FAST tokenizer (``fast_ar``).
        normaliser: for ``l1_regression``: maps its normalised output to environment units.
        drafter: for ``rsd``: the drafter (on the main model's device).
        depth_head: for the ``learned`` depth monitor: the depth head trained on the main
            policy's trunk (on the main model's device).
        name: recorded in results (default: the spec's text).
        sources: where the model, drafter and tokenizer came from (recorded in :meth:`config`).

    Raises:
        ValueError: a head, tokenizer, normaliser or drafter that does not fit the method.
    """

    def __init__(
        self,
        model: HeadPolicy,
        spec: MethodSpec | str,
        *,
        tokenizer: ActionTokenizer | None = None,
        normaliser: Normaliser | None = None,
        drafter: Drafter | None = None,
        depth_head: ResidualNormHead | None = None,
        name: str | None = None,
        sources: Mapping[str, str | None] | None = None,
    ) -> None:
        a = model.config.actions
        if a.action_dim != ACTION_DIM:
            raise ValueError(f"LIBERO actions have {ACTION_DIM} dims; the policy predicts {a.action_dim}")
        self.decoder = Decoder(MethodSpec.parse(spec), model, drafter, tokenizer, normaliser, depth_head)
        self.spec = self.decoder.spec
        self.model, self.tokenizer, self.normaliser, self.drafter = model, tokenizer, normaliser, drafter
        self.rule = self.decoder.rule
        self.name = name or str(self.spec)
        self.sources = dict(sources or {})
        # Which weights each source held, read once: reopening a run with other weights under the
        # same path is refused (new_run compares configs).
        self._weights = {
            f"{k}_weights": checkpoints.weights_digest(v)
            for k, v in self.sources.items()
            if (Path(v) / checkpoints.WEIGHTS).is_file()
        }
        self._context: EpisodeContext | None = None
        self._generator: torch.Generator | None = None
        self._history = DepthHistory()  # what a depth monitor remembers of the episode's chunks

    # -- the Policy interface -------------------------------------------------------------------

    def reset(self, context: EpisodeContext) -> None:
        """Start an episode: the generator is seeded from ``context.seed`` (same seed, same draws)."""
        self._context = context
        self._generator = torch.Generator(device=self.model.device).manual_seed(int(context.seed))
        self._history = DepthHistory()

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
        if self.spec.temperature > 0 and self._generator is None:
            raise RuntimeError(
                f"{self.name}: call reset(context) before act: sampling needs the episode's seed"
            )
        start = time.perf_counter()
        batch = self.model.prepare([self._model_input(obs)])
        preprocess_s = time.perf_counter() - start
        chunks, result = self.decode(batch, history=self._history)
        actions = chunks[0]  # (H, A)
        if not np.all(np.isfinite(actions)):
            raise ValueError(f"{self.name} decoded non-finite actions")
        diagnostics = chunk_diagnostics(result.traces[0], preprocess_s=preprocess_s)
        if self.spec.monitor is not None:  # the depth timeline marks gripper events
            diagnostics["gripper"] = [int(np.sign(g)) for g in actions[:, GRIPPER]]
        return PolicyOutput(actions, diagnostics)

    def decode(self, batch: Any, *, history: DepthHistory | None = None) -> tuple[np.ndarray, DecodeResult]:
        """Decode prepared observations (``self.model.prepare(...)`` or a packed batch's ``obs``).

        Args:
            history: for a depth monitor, the episode's memory (:meth:`act` passes its own; None:
                decode as a first chunk).

        Returns:
            ``(B, H, A)`` chunks in environment units, and the decoding result with its traces.
        """
        result = self.decode_tokens(batch, history=history)
        return self.env_actions(result).detach().cpu().double().numpy(), result

    def requirements(self) -> dict[str, Any]:
        """What the harness must give this policy, checked before any episode runs: the camera
        images it reads and their size (``rsdlib.libero.preflight.check_requirements``); a
        lowdim policy reads none, so its episodes run without rendering."""
        trunk = self.model.config.trunk
        if trunk.modality == "lowdim":
            return {}
        return {"cameras": CAMERA_KEYS[: trunk.num_cameras], "image_size": trunk.image_size}

    def config(self) -> dict[str, Any]:
        """What the run's config records: settings, the rule's label, the model and where it came from."""
        return {
            "name": self.name,
            "spec": str(self.spec),
            **asdict(self.spec),
            "rule_label": self.spec.rule_label,
            "lossless": self.spec.lossless,
            "drafter": None if self.drafter is None else self.drafter.name,
            "head": self.model.config.head,
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "device": str(self.model.device),
            **{f"{k}_path": v for k, v in self.sources.items()},
            **self._weights,
        }

    # -- internals ------------------------------------------------------------------------------

    def _model_input(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """The keys the processor reads; the privileged ``state`` never reaches the model."""
        if not isinstance(obs, Mapping):
            raise ValueError(f"{self.name}: an observation is a dict, got {type(obs).__name__}")
        trunk = self.model.config.trunk
        observed = (
            ("objects", "object_kinds") if trunk.modality == "lowdim" else CAMERA_KEYS[: trunk.num_cameras]
        )
        missing = [k for k in observed if k not in obs]
        if missing and trunk.modality == "rgb":
            raise ValueError(
                f"{self.name} reads camera images {list(observed)}, the observation lacks {missing} "
                f"(it has {sorted(obs)}): evaluate with rendering on, EvalOptions(render=True)"
            )
        instruction = obs.get("instruction")
        if instruction is None and self._context is not None:
            instruction = self._context.instruction
        out = {k: obs[k] for k in (*observed, "proprio") if k in obs}
        if instruction is not None:
            out["instruction"] = instruction
        return out  # the processor names whatever is still missing or misshapen

    def decode_tokens(self, batch: Any, *, history: DepthHistory | None = None) -> DecodeResult:
        """Decode prepared observations with the policy's method (tokens and traces;
        :meth:`env_actions` turns them into environment actions)."""
        return self.decoder.decode(batch, generator=self._generator, history=history)

    def env_actions(self, result: DecodeResult) -> torch.Tensor:
        """``(B, H, A)`` in environment units.

        Raises:
            MalformedTokens: a ``fast_ar`` sequence that does not decode to a chunk.
        """
        return self.decoder.env_actions(result)


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
    if trace.method in RFSQ_METHODS:
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
    spec: MethodSpec | str | None = None,
    *,
    drafter_path: str | Path | None = None,
    depth_head_path: str | Path | None = None,
    tokenizer: ActionTokenizer | str | Path | None = None,
    normaliser: Normaliser | str | Path | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    name: str | None = None,
) -> LearnedPolicy:
    """Load a policy checkpoint (and a drafter) as a :class:`LearnedPolicy`.

    Args:
        path: the main policy's checkpoint folder (``rsdlib.policies.checkpoints``).
        spec: how to decode (``"rsd_head:g2:exact"``, ``"rfsq_ar@1"``, a
            :class:`~rsdlib.decoding.spec.MethodSpec`); None decodes plainly with the head's own
            method.
        drafter_path: for RSD: a head-drafter checkpoint or a small ``rfsq_ar`` policy.
        depth_head_path: for the ``learned`` depth monitor (``rfsq_ar+learned:0.02``): the
            depth head trained on this policy's trunk (``<models>/depth_head``); ignored otherwise.
        tokenizer: a tokenizer or its folder; None reads ``metadata["tokenizer"]`` of the
            policy's config (a folder, relative to the checkpoint folder or absolute).
        normaliser: for ``l1_regression``: a :class:`~rsdlib.tokenizers.Normaliser`, its JSON
            file, or a folder holding ``normaliser.json``; None reads ``metadata["normaliser"]``.
        dtype: cast the models (None: the precision they were saved in). ``exact`` RSD matches
            plain greedy decoding token for token in float32 and float64; in bfloat16 near-ties
            make about 15% of chunks differ (see :func:`rsdlib.decoding.acceptance.exact`).
        device: where to run (None: CPU).
        name: recorded in results (default: the spec's text).

    Raises:
        CheckpointError: a checkpoint that cannot be loaded, or whose head or drafter does not
            fit the method; the message names the file.
        FileNotFoundError: a tokenizer or normaliser that is not where it is said to be.
        ValueError: a spec that does not parse, RSD without a drafter, or the ``learned``
            monitor without a depth head.
    """
    path = Path(path)
    model = checkpoints.load(path, dtype=dtype)
    config_file = path / checkpoints.CONFIG
    if not isinstance(model, HeadPolicy):
        raise checkpoints.CheckpointError(
            f"{config_file} holds a {type(model).__name__}, not a policy; pass the drafter as drafter_path"
        )
    head = model.config.head
    spec = MethodSpec(method=head) if spec is None else MethodSpec.parse(spec)
    if not isinstance(model, METHOD_HEADS[spec.method]):
        raise checkpoints.CheckpointError(
            f"{config_file} holds a {head!r} policy; {str(spec)!r} needs a {spec.head!r} policy"
        )
    if device is not None:
        model.to(device)
    drafter = None
    if spec.is_rsd:
        if drafter_path is None:
            raise ValueError(
                f"{str(spec)!r} needs drafter_path: a head-drafter checkpoint or a small rfsq_ar policy"
            )
        drafter = checkpoints.load_drafter(drafter_path, main=model, dtype=dtype)
        module = drafter if isinstance(drafter, HeadDrafter) else drafter.policy
        module.to(device=model.device, dtype=model.dtype)
        try:
            check_drafter(drafter, model)
        except ValueError as err:
            raise checkpoints.CheckpointError(f"{Path(drafter_path) / checkpoints.CONFIG}: {err}") from err
    depth_head = None
    if spec.monitor is not None and spec.depth_monitor.reads_prediction:
        depth_head = _load_depth_head(spec, depth_head_path, model, dtype)
    else:
        depth_head_path = None  # not read: not recorded as a source
    meta = model.config.metadata
    tokenizer_source = normaliser_source = None
    if spec.method == "l1_regression":
        normaliser, normaliser_source = _resolve_normaliser(normaliser, meta.get("normaliser"), path)
    else:
        tokenizer, tokenizer_source = _resolve_tokenizer(tokenizer, meta.get("tokenizer"), path)
    sources = {
        "checkpoint": str(path),
        "drafter": None if drafter_path is None else str(drafter_path),
        "depth_head": None if depth_head_path is None else str(depth_head_path),
        "tokenizer": tokenizer_source,
        "normaliser": normaliser_source,
    }
    return LearnedPolicy(
        model,
        spec,
        tokenizer=tokenizer,
        normaliser=normaliser,
        drafter=drafter,
        depth_head=depth_head,
        name=name,
        sources={k: v for k, v in sources.items() if v is not None},
    )


def _load_depth_head(
    spec: MethodSpec, path: str | Path | None, main: HeadPolicy, dtype: torch.dtype | None
) -> ResidualNormHead:
    """The depth head a ``learned`` monitor reads, on the main model's device and dtype.

    Raises:
        ValueError: no path given.
        CheckpointError: no checkpoint there, or not a depth head for this main policy.
    """
    train = "train_models(prepared, models_dir, models=['depth_head']) writes <models_dir>/depth_head"
    if path is None:
        raise ValueError(
            f"{str(spec)!r} needs depth_head_path: the depth head trained on this policy's trunk ({train})"
        )
    config_file = Path(path) / checkpoints.CONFIG
    if not config_file.is_file():
        raise checkpoints.CheckpointError(
            f"{path} holds no depth head ({config_file} does not exist): {str(spec)!r} reads the depth "
            f"head trained on this policy's trunk; train it ({train}) or pass depth_head_path"
        )
    head = checkpoints.load(path, dtype=dtype)
    if not isinstance(head, ResidualNormHead):
        raise checkpoints.CheckpointError(
            f"{config_file} holds a {type(head).__name__}, not a depth head (ResidualNormHead)"
        )
    head.to(device=main.device, dtype=main.dtype)
    try:
        check_depth_head(head, main)
    except ValueError as err:
        raise checkpoints.CheckpointError(f"{config_file}: {err}") from err
    return head


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
    obj, where = _resolve(given, from_meta, checkpoint, "tokenizer")
    return (obj, None) if where is None else (load_tokenizer(where), str(where))


def _resolve_normaliser(given: Any, from_meta: Any, checkpoint: Path) -> tuple[Any, str | None]:
    obj, where = _resolve(given, from_meta, checkpoint, "normaliser")
    if where is None:
        return obj, None
    file = where / NORMALISER_FILE if where.is_dir() else where
    return Normaliser.load(file), str(file)
