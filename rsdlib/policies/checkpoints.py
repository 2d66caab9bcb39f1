"""Checkpoints: a folder with ``model.safetensors`` and ``config.json``, loaded by path in one call.

``config.json`` holds ``{"format": 1, "kind": "policy" | "head_drafter", "config": {...}}``.
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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from rsdlib.policies.configuration import HeadDrafterConfig, PolicyConfig
from rsdlib.policies.drafters import HeadDrafter, PolicyDrafter
from rsdlib.policies.heads import Policy, RFSQAutoregressive, build_policy

FORMAT = 1
WEIGHTS, CONFIG = "model.safetensors", "config.json"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded as it claims to be."""


def save(model: Policy | HeadDrafter, path: str | Path, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to the folder ``path`` (created if needed).

    Args:
        model: a policy or a head drafter.
        path: the checkpoint folder.
        metadata: extra JSON stored beside the config (training run, data, metrics).

    Returns:
        The folder.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    kind = "head_drafter" if isinstance(model, HeadDrafter) else "policy"
    tensors = {k: v.detach().contiguous().cpu() for k, v in _saved_state(model).items()}
    save_file(tensors, str(path / WEIGHTS), metadata={"format": str(FORMAT), "kind": kind})
    doc = {"format": FORMAT, "kind": kind, "config": model.config.to_dict(), "metadata": metadata or {}}
    (path / CONFIG).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return path


def with_metadata(model: Policy | HeadDrafter, meta: dict[str, Any]) -> Policy | HeadDrafter:
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
    if doc.get("kind") not in ("policy", "head_drafter"):
        raise CheckpointError(f"{file}: kind {doc.get('kind')!r} is not 'policy' or 'head_drafter'")
    return doc


def load(path: str | Path, *, dtype: torch.dtype | None = None) -> Policy | HeadDrafter:
    """Load a checkpoint folder into the model it describes (in eval mode).

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
            model = HeadDrafter(config=HeadDrafterConfig.from_dict(doc["config"]))
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{cfg_file}: the config does not build a model: {err}") from err
    if not w_file.is_file():
        raise CheckpointError(f"{w_file} does not exist (the weights beside {cfg_file})")
    try:
        tensors = load_file(str(w_file))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{w_file} is not a readable safetensors file ({err}); re-save it") from err
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
    if len(stored) == 1:
        model.to(stored.pop())  # load in the precision it was saved in
    model.load_state_dict(tensors, strict=False)
    if dtype is not None:
        model.to(dtype)
    return model.eval()


def _short(items: list[str], n: int = 5) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return "[" + ", ".join(items[:n]) + "]" + more


def load_drafter(path: str | Path, *, dtype: torch.dtype | None = None) -> HeadDrafter | PolicyDrafter:
    """Load a drafter checkpoint: a head drafter as is, an ``rfsq_ar`` policy as a ``tiny_policy`` drafter.

    Raises:
        CheckpointError: the checkpoint is neither (for example a baseline head).
    """
    model = load(path, dtype=dtype)
    if isinstance(model, HeadDrafter):
        return model
    if isinstance(model, RFSQAutoregressive):
        return PolicyDrafter(policy=model)
    raise CheckpointError(
        f"{Path(path) / CONFIG} holds a {model.config.head!r} policy, which cannot draft RFSQ layers; "
        "a drafter is a head drafter or an rfsq_ar policy"
    )
