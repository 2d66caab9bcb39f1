"""Checkpoints: a folder with ``model.safetensors`` and ``config.json``, loaded by path in one call.

``config.json`` holds ``{"format": 1, "kind": "policy" | "head_drafter" | "depth_head", "config": {...}}``.
Shipped weights may be stored in half precision (``save(..., storage_dtype=...)`` or
:func:`compact`) to halve the download: the weights file's own safetensors metadata then records
``storage_dtype`` (so the file describes itself and :func:`compact` rewrites one file atomically),
and :func:`load` upcasts the weights to float32, the dtype the models compute in.
Loading checks everything before any weight is used: a missing or unreadable file, a config
that does not build, and any missing, unexpected or wrongly shaped tensor raise
:class:`CheckpointError` naming the file and the mismatch.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from rsdlib.half_weights import STORAGE_DTYPES, replace_file
from rsdlib.half_weights import dtype_name as _dtype_name
from rsdlib.half_weights import to_half as _to_storage
from rsdlib.policies.configuration import HeadDrafterConfig, PolicyConfig
from rsdlib.policies.depth_head import DepthHeadConfig, ResidualNormHead
from rsdlib.policies.drafters import HeadDrafter, PolicyDrafter
from rsdlib.policies.heads import Policy, RFSQAutoregressive, build_policy

FORMAT = 1
WEIGHTS, CONFIG = "model.safetensors", "config.json"
#: What half-precision stored weights are loaded as: the dtype the models are trained and run in.
COMPUTE_DTYPE = torch.float32
#: The checkpoint kinds besides ``policy`` (which builds any head): the class and its config.
MODULE_KINDS: dict[str, tuple[type[nn.Module], type]] = {
    "head_drafter": (HeadDrafter, HeadDrafterConfig),
    "depth_head": (ResidualNormHead, DepthHeadConfig),
}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded as it claims to be."""


def save(
    model: Policy | HeadDrafter | ResidualNormHead,
    path: str | Path,
    *,
    metadata: dict[str, Any] | None = None,
    storage_dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model`` to the folder ``path`` (created if needed).

    Args:
        model: a policy, a head drafter or a depth head.
        path: the checkpoint folder.
        metadata: extra JSON stored beside the config (training run, data, metrics).
        storage_dtype: None stores the weights as they are; ``torch.float16`` or
            ``torch.bfloat16`` stores the floating-point tensors in that half type (half the
            file; integer and bool tensors stay as they are) and :func:`load` upcasts them to
            float32. float16 keeps more digits (see :func:`compact`); bfloat16 keeps float32's range.

    Returns:
        The folder.

    Raises:
        ValueError: ``storage_dtype`` is not a half type, or a weight does not fit in it
            (float16 overflows past 65504: use bfloat16). Nothing is written then.
    """
    path = Path(path)
    kind = next((k for k, (cls, _) in MODULE_KINDS.items() if isinstance(model, cls)), "policy")
    tensors = {k: v.detach().contiguous().cpu() for k, v in _saved_state(model).items()}
    header = {"format": str(FORMAT), "kind": kind}
    if storage_dtype is not None:
        tensors = _to_storage(tensors, storage_dtype, where=f"{type(model).__name__} saved to {path}")
        header["storage_dtype"] = _dtype_name(storage_dtype)
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / WEIGHTS), metadata=header)
    doc = {"format": FORMAT, "kind": kind, "config": model.config.to_dict(), "metadata": metadata or {}}
    (path / CONFIG).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return path


def compact(folder: str | Path, storage_dtype: torch.dtype = torch.float16) -> Path:
    """Rewrite a checkpoint's weights in half precision, in place, to shrink a trained model.

    The new file is written beside the old one, read back, and renamed over it, so an
    interruption leaves the old checkpoint whole. The default is float16: on tiny random
    policies it changed 8-10x fewer greedy decoded tokens than bfloat16 (10 mantissa bits
    against 7; see tests/unit/test_checkpoint_precision.py), and a weight beyond its range
    (|w| > 65504) is refused with a message pointing to bfloat16 rather than stored as inf.

    Args:
        folder: a checkpoint folder (``config.json`` and ``model.safetensors``).
        storage_dtype: ``torch.float16`` or ``torch.bfloat16``.

    Returns:
        The folder.

    Raises:
        CheckpointError: ``folder`` is not a readable checkpoint.
        ValueError: ``storage_dtype`` is not a half type, or a weight does not fit in it.
    """
    folder = Path(folder)
    name = _dtype_name(storage_dtype)
    doc = read_config(folder)
    cfg_file, w_file = folder / CONFIG, folder / WEIGHTS
    tensors, header = _read_weights(w_file, cfg_file)
    if header.get("kind", doc["kind"]) != doc["kind"]:
        raise CheckpointError(f"{w_file} holds a {header['kind']!r} but {cfg_file} says {doc['kind']!r}")
    _stored_dtype(header, w_file)  # an unknown storage marker is refused before anything is rewritten
    tensors = _to_storage(tensors, storage_dtype, where=str(w_file))
    header = {**header, "format": str(FORMAT), "kind": doc["kind"], "storage_dtype": name}
    # what replaces the weights must read back
    replace_file(w_file, tensors, metadata=header, check=lambda tmp: _read_weights(tmp, cfg_file))
    return folder


def read_storage_dtype(path: str | Path) -> torch.dtype | None:
    """The half type a checkpoint's weights are stored in, or None when stored as computed in.

    Raises:
        CheckpointError: the weights file is missing, unreadable or names an unknown type.
    """
    w_file = Path(path) / WEIGHTS
    if not w_file.is_file():
        raise CheckpointError(f"{w_file} does not exist (a checkpoint folder holds {CONFIG} and {WEIGHTS})")
    try:
        with safe_open(str(w_file), "pt") as fh:
            header = dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(_unreadable(w_file, err)) from err
    return _stored_dtype(header, w_file)


def with_metadata(model: nn.Module, meta: dict[str, Any]) -> nn.Module:
    """``model`` with ``meta`` as its config's metadata (the config is frozen; the weights stay)."""
    model.config = replace(model.config, metadata=meta)
    return model


def _saved_state(model: nn.Module) -> dict[str, torch.Tensor]:
    # The Llama body's token embedding is never read (the trunk feeds inputs_embeds).
    return {
        k: v
        for k, v in model.state_dict().items()
        if not k.endswith(("body_model.embed_tokens.weight", "language_model.embed_tokens.weight"))
    }


def _stored_dtype(header: dict[str, str], w_file: Path) -> torch.dtype | None:
    name = header.get("storage_dtype")
    if name is None:
        return None
    if name not in STORAGE_DTYPES:
        raise CheckpointError(
            f"{w_file}: its metadata's storage_dtype {name!r} is not one of {list(STORAGE_DTYPES)}"
        )
    return STORAGE_DTYPES[name]


def _unreadable(w_file: Path, err: Exception) -> str:
    return (
        f"{w_file} is not a readable safetensors file ({err}); it is probably truncated or "
        "corrupt (an interrupted copy or download): copy it again or re-save it"
    )


def _read_weights(w_file: Path, cfg_file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor of a weights file, and its safetensors metadata."""
    if not w_file.is_file():
        raise CheckpointError(f"{w_file} does not exist (the weights beside {cfg_file})")
    try:
        with safe_open(str(w_file), "pt") as fh:
            header = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(_unreadable(w_file, err)) from err
    return tensors, header


def weights_digest(path: str | Path) -> str:
    """The first 16 hex digits of the SHA-256 of a checkpoint's weights file: which weights a
    result came from (a folder's path alone does not say: a recipe rewrites it)."""
    import hashlib

    w_file = Path(path) / WEIGHTS
    if not w_file.is_file():
        raise CheckpointError(f"{path} holds no {WEIGHTS}")
    return hashlib.sha256(w_file.read_bytes()).hexdigest()[:16]


def read_config(path: str | Path) -> dict[str, Any]:
    """The checkpoint's ``config.json`` as a dict (checked for format and kind)."""
    file = Path(path) / CONFIG
    if not file.is_file():
        raise CheckpointError(
            f"{file} does not exist: a checkpoint is a folder with {CONFIG} and {WEIGHTS} "
            "(written by rsdlib.policies.checkpoints.save; notebook 03_train_policies makes them)"
        )
    try:
        doc = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{file} is not valid JSON ({err})") from err
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(
            f"{file}: format {doc.get('format') if isinstance(doc, dict) else doc!r} is not {FORMAT}"
        )
    if doc.get("kind") not in ("policy", *MODULE_KINDS):
        raise CheckpointError(f"{file}: kind {doc.get('kind')!r} is not one of {['policy', *MODULE_KINDS]}")
    return doc


def load(
    path: str | Path, *, dtype: torch.dtype | None = None, main: RFSQAutoregressive | None = None
) -> Policy | HeadDrafter | ResidualNormHead:
    """Load a checkpoint folder into the model it describes (in eval mode).

    Weights stored in half precision for shipping (``save``'s ``storage_dtype``, or
    :func:`compact`) come back in float32, so downstream code runs unchanged; other weights come
    back in the precision they were saved in. ``dtype`` then casts the model. A head drafter that
    shares its main policy's embedding and output layer is attached to ``main`` when it is given
    (:func:`load_drafter` insists on it).

    Raises:
        CheckpointError: naming the file and what is wrong with it.
    """
    path = Path(path)
    doc = read_config(path)
    cfg_file, w_file = path / CONFIG, path / WEIGHTS
    try:
        if doc["kind"] == "policy":
            model: nn.Module = build_policy(PolicyConfig.from_dict(doc["config"]))
        else:
            cls, config_cls = MODULE_KINDS[doc["kind"]]
            model = cls(config=config_cls.from_dict(doc["config"]))
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{cfg_file}: the config does not build a model: {err}") from err
    tensors, header = _read_weights(w_file, cfg_file)
    storage = _stored_dtype(header, w_file)
    expected = _saved_state(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [
        f"{k}: file {tuple(tensors[k].shape)} vs config {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected {_short(unexpected)}")
        if shapes:
            parts.append(f"shape mismatch {_short(shapes)}")
        raise CheckpointError(f"{w_file} does not match {cfg_file}: " + "; ".join(parts))
    stored = {t.dtype for t in tensors.values() if t.is_floating_point()}
    if storage is not None:
        if stored - {storage}:
            raise CheckpointError(
                f"{w_file}: its metadata says {_dtype_name(storage)} but it holds {sorted(map(str, stored))}"
            )
        # Half precision was only for the download: compute in float32, as the model was trained.
        tensors = {k: v.to(COMPUTE_DTYPE) if v.is_floating_point() else v for k, v in tensors.items()}
        model.to(COMPUTE_DTYPE)
    elif len(stored) == 1:
        model.to(stored.pop())  # load in the precision it was saved in
    model.load_state_dict(tensors, strict=False)
    if dtype is not None:
        model.to(dtype)
    if isinstance(model, HeadDrafter) and main is not None:
        attach_head(model, main, path)
    return model.eval()


def attach_head(head: HeadDrafter, main: RFSQAutoregressive | None, path: str | Path) -> HeadDrafter:
    """``head`` attached to ``main`` when it shares the main policy's embedding and output layer."""
    if not head.config.shares_main_io:
        return head
    if main is None:
        raise CheckpointError(
            f"{Path(path) / CONFIG}: this head drafter uses its main policy's token embedding and "
            "output layer and stores neither: load it with its main policy (load_drafter(path, main=...))"
        )
    try:
        return head.attach(main)
    except ValueError as err:
        raise CheckpointError(f"{Path(path) / CONFIG}: {err}") from err


def _short(items: list[str], n: int = 5) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return "[" + ", ".join(items[:n]) + "]" + more


def load_drafter(
    path: str | Path, *, main: RFSQAutoregressive | None = None, dtype: torch.dtype | None = None
) -> HeadDrafter | PolicyDrafter:
    """Load a drafter checkpoint: a head drafter as is, an ``rfsq_ar`` policy as a ``tiny_policy`` drafter.

    Args:
        main: the main policy it drafts for; a head that shares its token embedding and output
            layer (``shares_main_io``) is attached to it, and cannot be loaded without it.

    Raises:
        CheckpointError: the checkpoint is neither (for example a baseline head), or a sharing
            head without ``main`` or with a main policy it does not fit.
    """
    model = load(path, dtype=dtype)
    if isinstance(model, HeadDrafter):
        return attach_head(model, main, path)
    if isinstance(model, RFSQAutoregressive):
        return PolicyDrafter(policy=model)
    what = f"{model.config.head!r} policy" if isinstance(model, Policy) else type(model).__name__
    raise CheckpointError(
        f"{Path(path) / CONFIG} holds a {what}, which cannot draft RFSQ layers; "
        "a drafter is a head drafter or an rfsq_ar policy"
    )
