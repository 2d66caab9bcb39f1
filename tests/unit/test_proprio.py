"""The trunk's proprio features: rot6d is the rotation matrix's columns, continuous where
axis-angle jumps, and a checkpoint made before the option still reads axis-angle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rsdlib.libero.env import quat_xyzw_to_axis_angle
from rsdlib.policies import TrunkConfig
from rsdlib.policies.proprio import axis_angle_to_matrix, proprio_feature_dim, proprio_features


def quat_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """The rotation matrix of a unit quaternion, from the textbook formula (not Rodrigues')."""
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def quat_about(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    return np.array([*(axis * math.sin(angle / 2)), math.cos(angle / 2)])  # (x, y, z, w)


def proprio_of(quat: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.r_[[0.1, -0.2, 1.0], quat_xyzw_to_axis_angle(quat), [0.03, -0.03]])[None]


def test_rot6d_is_the_first_two_columns_of_the_rotation_matrix():
    rng = np.random.default_rng(0)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        features = proprio_features(proprio_of(q), "rot6d")[0].numpy()
        R = quat_matrix(*q)
        np.testing.assert_allclose(features[3:9], np.r_[R[:, 0], R[:, 1]], atol=1e-9)
        np.testing.assert_allclose(features[[0, 1, 2, 9, 10]], [0.1, -0.2, 1.0, 0.03, -0.03])


def test_rot6d_is_continuous_where_axis_angle_jumps():
    """LIBERO's gripper points down: a rotation of about pi about x. Crossing pi flips the
    axis-angle vector across the sphere; the rotation, and rot6d, move by a hair."""
    axis = np.array([1.0, 0.02, 0.01])
    before, after = (proprio_of(quat_about(axis, math.pi + d)) for d in (-1e-3, 1e-3))
    assert (after - before)[0, 3:6].norm() > 6.0  # about 2 pi
    assert (proprio_features(after, "rot6d") - proprio_features(before, "rot6d")).norm() < 5e-3
    assert torch.equal(proprio_features(after, "axis_angle"), after)


def test_the_identity_has_finite_features_and_gradients():
    v = torch.zeros(2, 3, requires_grad=True)
    R = axis_angle_to_matrix(v)
    assert torch.equal(R, torch.eye(3).expand(2, 3, 3))
    R.sum().backward()
    assert torch.isfinite(v.grad).all()


def test_feature_sizes_and_the_configs_that_use_them():
    assert (
        proprio_feature_dim(8, "rot6d"),
        proprio_feature_dim(8, "axis_angle"),
        proprio_feature_dim(0, "rot6d"),
    ) == (
        11,
        8,
        0,
    )
    with pytest.raises(ValueError, match="proprio_orientation"):
        TrunkConfig(proprio_orientation="euler")
    # A checkpoint written before the option has no such field: it was trained on axis-angle.
    assert TrunkConfig().proprio_orientation == "axis_angle"
    stats = {"object_mean": [0.0] * 10, "object_std": [1.0] * 10}
    lowdim = dict(modality="lowdim", object_kinds=("bowl",), max_objects=1)
    TrunkConfig(
        **lowdim,
        proprio_orientation="rot6d",
        observation_stats=stats | {"proprio_mean": [0.0] * 11, "proprio_std": [1.0] * 11},
    )
    with pytest.raises(ValueError, match="observation_stats"):
        TrunkConfig(
            **lowdim,
            proprio_orientation="rot6d",
            observation_stats=stats | {"proprio_mean": [0.0] * 8, "proprio_std": [1.0] * 8},
        )
