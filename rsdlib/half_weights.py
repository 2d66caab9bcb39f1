"""Weights stored in half precision: the cast that refuses overflow, and the atomic rewrite.

Shared by the policy checkpoints (:mod:`rsdlib.policies.checkpoints`) and the RFSQ tokenizer
(:func:`rsdlib.tokenizers.rfsq.compact`): both ship their floating-point tensors in float16 and
upcast them on load.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

#: The half types weights may be stored in, by the name a weights file's metadata records.
STORAGE_DTYPES: dict[str, torch.dtype] = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def dtype_name(dtype: torch.dtype) -> str:
    """``float16`` or ``bfloat16``; ValueError for any other dtype."""
    for name, half in STORAGE_DTYPES.items():
        if dtype == half:
            return name
    raise ValueError(f"storage_dtype must be torch.float16 or torch.bfloat16, not {dtype!r}")


def to_half(tensors: dict[str, torch.Tensor], dtype: torch.dtype, *, where: str) -> dict[str, torch.Tensor]:
    """Floating-point tensors cast to the half type ``dtype``, refusing any that would overflow to inf."""
    name = dtype_name(dtype)
    limit = torch.finfo(dtype).max
    out = {}
    for k, v in tensors.items():
        if not v.is_floating_point():
            out[k] = v
            continue
        finite = v[torch.isfinite(v)]
        if finite.numel() and (peak := finite.abs().max().item()) > limit:
            hint = "; store it as torch.bfloat16, which has float32's range" if dtype == torch.float16 else ""
            raise ValueError(
                f"{where}: {k} has |w| = {peak:.6g}, beyond {name}'s largest value {limit:.6g}, "
                f"so it would be stored as inf{hint}"
            )
        out[k] = v.to(dtype).contiguous()
    return out


def replace_file(
    path: Path,
    tensors: dict[str, torch.Tensor],
    *,
    metadata: dict[str, str] | None = None,
    check: Callable[[Path], object] | None = None,
) -> None:
    """Write ``tensors`` beside ``path``, read them back with ``check``, and rename over ``path``:
    an interruption or a failed check leaves the old file whole."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
