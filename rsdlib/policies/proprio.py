"""How a trunk reads proprioception: the end-effector orientation as rotation-matrix columns.

The harness and the demonstration files carry OpenVLA-OFT's 8-D proprio: eef position, eef
orientation as an axis-angle vector, the two gripper fingers. LIBERO's gripper points down, a
rotation of about pi, where axis-angle is discontinuous: the vector jumps between about
``(+pi, 0, 0)`` and ``(-pi, 0, 0)`` as the angle crosses pi (on 7.5% of the steps of the
libero_spatial demonstrations). A network sees two far-apart inputs for one pose.
``"rot6d"`` replaces the three numbers by the first two columns of the rotation matrix (six
numbers, continuous in the pose; Zhou et al., CVPR 2019); ``"axis_angle"`` keeps them as they
come (what checkpoints made before this option were trained on).
"""

from __future__ import annotations

import torch

#: How a trunk reads the orientation part of proprio (see the module docstring).
ORIENTATIONS = ("axis_angle", "rot6d")
#: Where the axis-angle vector sits in the proprio vector.
ORIENTATION_SLICE = slice(3, 6)


def proprio_feature_dim(proprio_dim: int, orientation: str) -> int:
    """How many numbers :func:`proprio_features` makes of ``proprio_dim``."""
    if orientation not in ORIENTATIONS:
        raise ValueError(f"proprio orientation {orientation!r} must be one of {ORIENTATIONS}")
    return proprio_dim + 3 if orientation == "rot6d" and proprio_dim else proprio_dim


def axis_angle_to_matrix(v: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` rotation matrices of ``(..., 3)`` axis-angle vectors (Rodrigues' formula,
    in the vector's dtype; exact at angle 0)."""
    angle = v.norm(dim=-1, keepdim=True)[..., None]  # (..., 1, 1)
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).unflatten(-1, (3, 3))  # [v]_x
    small = angle < 1e-6  # the series limits: sin(a)/a -> 1, (1 - cos a)/a^2 -> 1/2
    safe = torch.where(small, torch.ones_like(angle), angle)
    a = torch.where(small, torch.ones_like(angle), torch.sin(safe) / safe)
    b = torch.where(small, torch.full_like(angle, 0.5), (1 - torch.cos(safe)) / safe**2)
    eye = torch.eye(3, dtype=v.dtype, device=v.device).expand(K.shape)
    return eye + a * K + b * (K @ K)


def proprio_features(proprio: torch.Tensor, orientation: str) -> torch.Tensor:
    """``(B, F)`` what the trunk embeds of ``(B, P)`` proprio: as it comes, or with the
    axis-angle replaced by the rotation matrix's first two columns (``"rot6d"``)."""
    if orientation == "axis_angle" or proprio.shape[-1] == 0:
        return proprio
    if orientation != "rot6d":
        raise ValueError(f"proprio orientation {orientation!r} must be one of {ORIENTATIONS}")
    if proprio.shape[-1] < ORIENTATION_SLICE.stop:
        raise ValueError(f"rot6d needs an axis-angle at proprio[3:6]; got {proprio.shape[-1]} numbers")
    matrix = axis_angle_to_matrix(proprio[..., ORIENTATION_SLICE])
    columns = matrix[..., :, :2].transpose(-1, -2).flatten(-2)  # (B, 6): column 0 then column 1
    return torch.cat([proprio[..., :3], columns, proprio[..., ORIENTATION_SLICE.stop :]], dim=-1)
