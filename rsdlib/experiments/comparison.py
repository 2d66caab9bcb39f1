"""Every decoding method of a set of trained models as a LIBERO policy, and what their chunks cost.

A models folder (the training recipe's layout, :mod:`rsdlib.experiments.train_models`) holds the
four heads and the two drafters; :func:`policy_from_spec` turns any method spec
(:class:`~rsdlib.decoding.spec.MethodSpec`: ``rfsq_ar``, ``rsd_head:g2:exact``,
``rsd_tiny:g3:match_rate:0.5``, ``rfsq_ar@1``) into the LIBERO policy that decodes with it.
``scripts/evaluate_policies.py`` and the comparison notebook use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rsdlib.decoding.spec import MethodSpec
from rsdlib.libero.evaluate import EvalOptions
from rsdlib.libero.learned_policy import LearnedPolicy, from_checkpoint
from rsdlib.libero.protocol import Protocol
from rsdlib.policies import checkpoints
from rsdlib.policies.drafters import Drafter, HeadDrafter, PolicyDrafter
from rsdlib.policies.heads import RFSQAutoregressive

#: The checkpoint folder (under a models folder) of each drafter an RSD spec can name. The lowdim
#: recipe no longer trains ``tiny_policy`` (see ``recipe.LOWDIM_MINUTES``): a folder may hold only
#: the head (:func:`drafter_folders`).
DRAFTER_DIRS = {"head": "head_drafter", "tiny": "tiny_policy"}
#: The checkpoint folder (under a models folder) of the depth head the ``learned`` monitor reads.
DEPTH_HEAD_DIR = "depth_head"


def drafter_folders(models: str | Path) -> dict[str, Path]:
    """``{drafter name: checkpoint folder}`` for the drafters a models folder holds."""
    folders = {name: Path(models) / sub for name, sub in DRAFTER_DIRS.items()}
    return {name: path for name, path in folders.items() if (path / checkpoints.CONFIG).is_file()}


def load_drafters(
    models: str | Path, device: str = "cpu", main: RFSQAutoregressive | None = None
) -> dict[str, Drafter]:
    """``{drafter name: drafter}`` for the drafters a models folder holds, loaded, in eval mode.

    ``main``: the folder's main policy, already loaded on ``device`` (a head that shares its token
    embedding and output layer reads them there); loaded from the folder when needed and not given.
    """
    out: dict[str, Drafter] = {}
    for name, path in drafter_folders(models).items():
        model = checkpoints.load(path).to(device).eval()
        if isinstance(model, HeadDrafter) and model.config.shares_main_io and main is None:
            main = checkpoints.load(Path(models) / "rfsq_ar").to(device).eval()
        if isinstance(model, HeadDrafter):
            model = checkpoints.attach_head(model, main, path)
        out[name] = PolicyDrafter(policy=model) if name == "tiny" else model
    return out


def missing_drafter(spec: MethodSpec, models: str | Path) -> str:
    """Why a models folder cannot decode an RSD ``spec`` with its drafter."""
    have = sorted(drafter_folders(models))
    why = (
        " (the lowdim recipe no longer trains tiny_policy: it accepted no drafted layer)"
        if spec.drafter == "tiny"
        else ""
    )
    return f"{spec}: {models} holds the drafters {have}, not {spec.drafter!r}{why}"


def policy_from_spec(spec: MethodSpec | str, models: str | Path) -> LearnedPolicy:
    """The LIBERO policy that decodes with ``spec`` the models of a folder; its name is the spec.

    A ``learned`` depth monitor reads the folder's ``depth_head``.

    Raises:
        ValueError: a spec that does not parse, or a drafter the folder does not hold.
        CheckpointError: a model the spec needs that is missing or does not fit (the message names it).
    """
    spec = MethodSpec.parse(spec)
    models = Path(models)
    depth = {"depth_head_path": models / DEPTH_HEAD_DIR} if spec.monitor == "learned" else {}
    if not spec.is_rsd:
        return from_checkpoint(models / spec.method, spec, name=str(spec), **depth)
    if spec.drafter not in DRAFTER_DIRS:
        raise ValueError(
            f"{spec}: a models folder holds the drafters {sorted(DRAFTER_DIRS)}, not {spec.drafter!r}"
        )
    if spec.drafter not in drafter_folders(models) and models.is_dir():
        raise ValueError(missing_drafter(spec, models))
    return from_checkpoint(
        models / "rfsq_ar", spec, drafter_path=models / DRAFTER_DIRS[spec.drafter], name=str(spec), **depth
    )


def eval_options(
    info: dict[str, Any], *, video: str | None = None, open_loop_steps: int = Protocol.open_loop_steps
) -> EvalOptions:
    """How to run the episodes of the models a prepared record (``read_prepared``) describes.

    ``rgb`` models see cameras rendered at the resolution they were trained on; ``lowdim`` models
    read object poses, so their episodes render nothing (about ten times cheaper).
    ``video`` defaults to ``failures`` for ``rgb`` (the frames are there anyway) and ``none`` for
    ``lowdim`` (a video would be rendered by replaying the episode, ~40 s each).
    ``open_loop_steps`` other than OpenVLA-OFT's 8 is a protocol deviation (see :func:`protocol_tag`).

    Raises:
        ValueError: ``open_loop_steps`` below 1 or above the chunk horizon the models were trained on.
    """
    horizon = info["horizon"]
    if not 1 <= open_loop_steps <= horizon:
        raise ValueError(
            f"open_loop_steps ({open_loop_steps}) must be between 1 and the chunk horizon the models "
            f"were trained on ({horizon}): a chunk holds no more actions to execute"
        )
    rgb = is_rgb(info)
    resolution = {"camera_resolution": info["image_size"]} if rgb else {}
    return EvalOptions(
        protocol=Protocol(open_loop_steps=open_loop_steps, **resolution),
        render=rgb,
        fast_render=True,
        video=video or ("failures" if rgb else "none"),
    )


def is_rgb(info: dict[str, Any]) -> bool:
    """Whether a prepared record describes camera-image models (records before modalities were)."""
    return info.get("modality", "rgb") == "rgb"


def run_prefix(info: dict[str, Any]) -> str:
    """The start of an evaluation run's folder name: ``<suite>`` or ``<suite>-lowdim``."""
    return info["suite"] if is_rgb(info) else f"{info['suite']}-lowdim"


def protocol_tag(protocol: Protocol) -> str:
    """The end of an evaluation run's folder name: ``-ol<K>`` when ``K`` actions of a chunk run open
    loop instead of OpenVLA-OFT's 8, else nothing, so a deviating run never shares a folder (or its
    episodes) with a standard one."""
    return "" if protocol.open_loop_steps == Protocol.open_loop_steps else f"-ol{protocol.open_loop_steps}"


def run_name(spec: MethodSpec | str) -> str:
    """A folder name for a method spec (``rsd_head:g2:exact+fixed:2@1`` -> ``rsd_head_g2_exact_dfixed_2_t1``)."""
    return str(MethodSpec.parse(spec)).replace(":", "_").replace("+", "_d").replace("@", "_t")


def chunk_stats(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Decode latency (median and p90, ms; the first chunk of a worker includes warm-up), mean
    main passes and, for RSD, mean accepted layers per chunk and acceptance per RFSQ layer, over
    every chunk of the given episode records (their ``diagnostics``)."""
    chunks = [c for r in records for c in r.get("diagnostics") or []]
    if not chunks:
        return {}
    out = {
        "chunks": len(chunks),
        "latency_median_ms": float(np.median([c["latency_ms"]["total"] for c in chunks])),
        "latency_p90_ms": float(np.percentile([c["latency_ms"]["total"] for c in chunks], 90)),
        "main_passes": float(np.mean([c["main_passes"] for c in chunks])),
    }
    if "accepted_layers" in chunks[0]:
        out["accepted_layers"] = float(np.mean([c["accepted_layers"] for c in chunks]))
        out["acceptance_per_layer"] = _pooled_acceptance(chunks)
    if "depth" in chunks[0]:  # adaptive depth: layers decoded per chunk, and how often all of them
        out["layers"] = float(np.mean([c["depth"] for c in chunks]))
        out["full_depth_share"] = float(np.mean([c["depth"] >= c["num_layers"] for c in chunks]))
    return out


def _pooled_acceptance(chunks: Sequence[dict[str, Any]]) -> list[float | None]:
    """Per RFSQ layer, drafted layers accepted over drafted layers judged, pooled over chunks
    (None for a layer never judged)."""
    judged: dict[int, list[bool]] = {}
    for c in chunks:
        for layer, accepted in c["judged"]:
            judged.setdefault(int(layer), []).append(bool(accepted))
    num_layers = max(len(c["layer_kinds"]) for c in chunks)
    return [float(np.mean(judged[k])) if k in judged else None for k in range(num_layers)]
