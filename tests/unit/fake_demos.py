"""Fake demonstration files in LIBERO's layout, for tests that need data on disk."""

from __future__ import annotations

import json

import numpy as np

from rsdlib.libero.demos import Rollout, write_demo_file

SUITE = "libero_spatial"


KINDS = ("akita_black_bowl", "akita_black_bowl", "plate")


def fake_rollout(rng: np.random.Generator, length: int, init_index: int, objects: bool = False) -> Rollout:
    actions = rng.uniform(-1, 1, (length, 7))
    actions[:, 6] = np.where(np.arange(length) < length // 2, -1.0, 1.0)
    low = {
        "ee_pos": rng.normal(size=(length, 3)),
        "ee_ori": rng.normal(size=(length, 3)),
        "gripper_states": rng.normal(size=(length, 2)),
        "joint_states": rng.normal(size=(length, 7)),
        "robot_states": rng.normal(size=(length, 9)),
    }
    low["ee_states"] = np.concatenate([low["ee_pos"], low["ee_ori"]], axis=1)
    if objects:  # a sampled start, with every object's pose
        low["object_states"] = rng.normal(size=(length, len(KINDS), 10)).astype(np.float32)
    dones = np.zeros(length, dtype=np.uint8)
    dones[-1] = 1
    return Rollout(
        init_index, 100 + init_index, True, actions, rng.normal(size=(length, 20)), dones, dones, low,
        sample_seed=1000 + init_index if objects else None,
    )  # fmt: skip


def fake_images(length: int, value: int, size: int = 8) -> dict[str, np.ndarray]:
    frames = np.full((length, size, size, 3), value, dtype=np.uint8)
    frames[:, 0, :, :] = 255  # a marked top row, to check orientation
    return {"agentview_rgb": frames, "eye_in_hand_rgb": frames.copy()}


def write_task(
    root,
    task: str,
    lengths: list[int],
    seed: int = 0,
    images: bool = True,
    size: int = 8,
    objects: bool = False,
):
    """A task's file; ``objects``: sampled starts with object poses (what the lowdim track reads)."""
    rng = np.random.default_rng(seed)
    demos = [
        (fake_rollout(rng, n, i, objects), fake_images(n, 10 * i, size) if images else {})
        for i, n in enumerate(lengths)
    ]
    attrs = {
        "suite": SUITE,
        "task_name": task,
        "language_instruction": f"do {task}",
        "num_attempted": len(lengths) + 1,
    }
    if objects:
        attrs["object_kinds"] = json.dumps(list(KINDS))
    path = root / SUITE / f"{task}_demo.hdf5"
    return write_demo_file(path, demos, attrs), demos
