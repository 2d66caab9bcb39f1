"""Action chunks: the unit every tokenizer and policy works on.

An action is 7 numbers in environment units (OSC_POSE deltas and the gripper command);
a chunk is H consecutive actions, shape (H, A). Episodes come from HDF5 files in LIBERO's
layout (``data/demo_i/actions``), which robosuite's own demonstrations share.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: The 7 numbers of an action: OSC_POSE position and axis-angle deltas, then the gripper command.
ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
ACTION_DIM = len(ACTION_NAMES)
#: Index of the gripper command in an action (-1 open, +1 close).
GRIPPER = 6


def chunk_episode(actions: np.ndarray, horizon: int) -> np.ndarray:
    """All chunks of ``horizon`` consecutive actions that start inside the episode.

    A chunk that runs past the end repeats the last action (the robot holds still), so an
    episode of T steps gives T chunks and the last steps are trained on like the others.

    Args:
        actions: (T, A) actions of one episode.
        horizon: chunk length H.

    Returns:
        (T, H, A) chunks; chunk t holds actions t .. t+H-1.
    """
    actions = np.asarray(actions)
    if actions.ndim != 2 or len(actions) == 0:
        raise ValueError(f"an episode's actions must be (T, A) with T > 0, got shape {actions.shape}")
    if horizon < 1:
        raise ValueError(f"horizon ({horizon}) must be at least 1")
    padded = np.concatenate([actions, np.repeat(actions[-1:], horizon - 1, axis=0)])
    index = np.arange(len(actions))[:, None] + np.arange(horizon)[None, :]  # (T, H)
    return padded[index]


def read_hdf5_actions(path: str | Path) -> dict[str, np.ndarray]:
    """Each episode's actions from an HDF5 file in LIBERO's layout, ``{demo name: (T, A)}``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not readable HDF5, or has no ``data/*/actions``.
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"demonstration file {path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            if "data" not in f:
                raise ValueError(f"{path} has no 'data' group; expected LIBERO's layout data/demo_i/actions")
            episodes = {
                name: np.asarray(group["actions"]) for name, group in f["data"].items() if "actions" in group
            }
    except OSError as err:
        raise ValueError(f"{path} is not a readable HDF5 file (corrupt or truncated?): {err}") from err
    if not episodes:
        raise ValueError(f"{path} holds no episodes with actions")
    return dict(sorted(episodes.items(), key=lambda kv: _demo_number(kv[0])))


def _demo_number(name: str) -> tuple[int, str]:
    tail = name.rsplit("_", 1)[-1]
    return (int(tail), name) if tail.isdigit() else (1 << 30, name)


def robosuite_demo_files() -> list[Path]:
    """robosuite's own human demonstrations (``lift``, ``wipe``, ...) shipped in its wheel."""
    import importlib.util

    spec = importlib.util.find_spec("robosuite")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("robosuite is not installed; run `make setup`")
    root = Path(list(spec.submodule_search_locations)[0]) / "models" / "assets" / "demonstrations"
    return sorted(root.glob("*/demo.hdf5"))
