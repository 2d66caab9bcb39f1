"""The protocol as data, and the pieces of the env that need no simulator."""

import numpy as np
import pytest

from rsdlib.libero.env import quat_xyzw_to_axis_angle
from rsdlib.libero.protocol import (
    MAX_STEPS,
    SUITES,
    Protocol,
    check_suite,
    deviation_lines,
    deviations,
    postprocess_gripper,
)
from rsdlib.libero.render import RenderBackendError, configure_rendering


def test_protocol_defaults_are_openvla_oft():
    p = Protocol()
    assert (p.env_seed, p.num_init_states, p.num_wait_steps, p.open_loop_steps) == (0, 50, 10, 8)
    assert [p.max_steps_for(s) for s in SUITES] == [220, 280, 300, 520, 400]
    assert MAX_STEPS["libero_10"] == 520


def test_bad_protocol_values_are_named():
    with pytest.raises(ValueError, match="camera_resolution"):
        Protocol(camera_resolution=4)
    with pytest.raises(ValueError, match="unknown suites"):
        Protocol(max_steps={"libero_100": 10})
    with pytest.raises(ValueError, match="unknown LIBERO suite 'spatial'"):
        check_suite("spatial")


def test_deviations_name_what_differs_from_openvla_oft_but_not_how_the_policy_sees():
    assert deviations(Protocol()) == {} and deviation_lines({}) == []
    assert deviations(Protocol(camera_resolution=64, camera_names=("agentview",), flip_images=False)) == {}
    found = deviations(Protocol(open_loop_steps=4, num_wait_steps=5))
    assert found == {
        "num_wait_steps": {"openvla_oft": 10, "used": 5},
        "open_loop_steps": {"openvla_oft": 8, "used": 4},
    }
    assert deviation_lines(found)[1] == "protocol deviation: open_loop_steps = 4 (OpenVLA-OFT: 8)"


def test_gripper_is_binarised_and_zero_means_open():
    out = postprocess_gripper(np.array([[2.0, 0, 0, 0, 0, 0, 0.3], [0, 0, 0, 0, 0, 0, 0.0]]))
    assert out[0, 0] == 1.0  # clipped
    assert list(out[:, -1]) == [1.0, -1.0]
    assert postprocess_gripper(np.array([0, 0, 0, 0, 0, 0, 0.3]), binarize=False)[-1] == pytest.approx(0.3)


def rotation_matrix(axis_angle):
    """Rodrigues' formula, independent of the code under test."""
    angle = np.linalg.norm(axis_angle)
    if angle == 0:
        return np.eye(3)
    k = axis_angle / angle
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def quat_matrix(q):
    x, y, z, w = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def test_axis_angle_describes_the_same_rotation_as_the_quaternion():
    rng = np.random.default_rng(0)
    for q in [*rng.normal(size=(50, 4)), np.array([0, 0, 0, 1.0]), np.array([1.0, 0, 0, 0])]:
        q = q / np.linalg.norm(q)
        aa = quat_xyzw_to_axis_angle(q)
        assert np.linalg.norm(aa) <= np.pi + 1e-9
        np.testing.assert_allclose(rotation_matrix(aa), quat_matrix(q), atol=1e-9)
        if abs(q[3]) > 1e-6:  # at exactly pi, +axis and -axis are the same rotation
            np.testing.assert_allclose(quat_xyzw_to_axis_angle(-q), aa, atol=1e-9)


def test_unknown_or_missing_render_backend_says_what_to_do(monkeypatch):
    with pytest.raises(RenderBackendError, match="unknown render backend"):
        configure_rendering("vulkan")
    monkeypatch.setattr("rsdlib.libero.render.backend_available", lambda backend: False)
    with pytest.raises(RenderBackendError, match="apt-get install libosmesa6"):
        configure_rendering("osmesa")
