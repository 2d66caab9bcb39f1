"""Action-chunk data for tokenizer experiments: demonstrations, robosuite's human demos, synthetic.

Real data comes from LIBERO-layout HDF5 files (``data/demos/<suite>/*_demo.hdf5``, written by
notebook 01_demonstrations). Episodes, not chunks, are split into training and held-out sets,
so no held-out chunk shares actions with a training chunk. Synthetic episodes exist for tests
and the smoke profile only; everything made from them says ``synthetic`` in its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rsdlib.actions import ACTION_DIM, chunk_episode, read_hdf5_actions, robosuite_demo_files

SYNTHETIC = "synthetic"


@dataclass
class ChunkSplit:
    """Training and held-out chunks of one data source.

    Attributes:
        source: a name saying where the chunks came from (``synthetic ...`` for made-up data).
        train: (B_train, H, A) chunks from the training episodes, environment units.
        held_out: (B_test, H, A) chunks from the held-out episodes.
        train_episodes / held_out_episodes: the episode names in each part ("file:demo_i").
    """

    source: str
    train: np.ndarray
    held_out: np.ndarray
    train_episodes: list[str]
    held_out_episodes: list[str]


def demo_files(demos_dir: str | Path) -> list[Path]:
    """The demonstration HDF5 files in ``demos_dir``.

    Raises:
        FileNotFoundError: the folder is missing or holds no ``*.hdf5`` files.
    """
    demos_dir = Path(demos_dir)
    files = sorted(demos_dir.glob("*.hdf5")) if demos_dir.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"no demonstrations in {demos_dir}: run notebook 01_demonstrations first (it writes "
            "data/demos/<suite>/<task>_demo.hdf5), or point demos_dir at LIBERO HDF5 files"
        )
    return files


def load_episodes(files: list[Path]) -> dict[str, np.ndarray]:
    """All episodes of the files, ``{"<file stem>:<demo>": (T, A)}``, in file then demo order."""
    episodes: dict[str, np.ndarray] = {}
    for path in files:
        for demo, actions in read_hdf5_actions(path).items():
            episodes[f"{Path(path).stem}:{demo}"] = np.asarray(actions, dtype=np.float64)
    return episodes


def split_episodes(
    episodes: dict[str, np.ndarray], *, held_out_fraction: float, horizon: int, seed: int, source: str
) -> ChunkSplit:
    """Split episodes (not chunks) into training and held-out parts and chunk each.

    Every task file keeps the same share held out: within each file prefix, a seeded
    permutation picks ``ceil(fraction * n)`` episodes (at least one while a file has two).
    """
    if not 0 < held_out_fraction < 1:
        raise ValueError(f"held_out_fraction ({held_out_fraction}) must be in (0, 1)")
    rng = np.random.default_rng(seed)
    by_file: dict[str, list[str]] = {}
    for name in episodes:
        by_file.setdefault(name.split(":", 1)[0], []).append(name)
    held: list[str] = []
    for names in by_file.values():
        if len(names) < 2:
            continue
        count = min(len(names) - 1, max(1, int(np.ceil(held_out_fraction * len(names)))))
        held += [names[i] for i in rng.permutation(len(names))[:count]]
    train = [n for n in episodes if n not in set(held)]
    if not held:
        raise ValueError("too few episodes to hold any out: every file needs at least two")

    def chunks(names: list[str]) -> np.ndarray:
        return np.concatenate([chunk_episode(episodes[n], horizon) for n in names])

    return ChunkSplit(source, chunks(train), chunks(held), train, sorted(held))


def robosuite_lift_chunks(horizon: int) -> tuple[str, np.ndarray]:
    """robosuite's human ``lift`` teleoperation demos, all episodes chunked (an out-of-distribution set).

    Raises:
        FileNotFoundError: robosuite's demo file is not installed.
    """
    files = [f for f in robosuite_demo_files() if f.parent.name == "lift"]
    if not files:
        raise FileNotFoundError(
            "robosuite's lift demo (models/assets/demonstrations/lift/demo.hdf5) is missing"
        )
    episodes = read_hdf5_actions(files[0])
    return "robosuite lift (human teleop)", np.concatenate(
        [chunk_episode(a, horizon) for a in episodes.values()]
    )


def synthetic_episodes(
    num_episodes: int, *, generator: torch.Generator, length: int = 160, noise_std: float = 0.05
) -> dict[str, np.ndarray]:
    """Made-up episodes shaped like a scripted expert's OSC_POSE actions (for tests and smoke runs).

    Each episode visits a few random waypoints with a proportional, speed- and
    acceleration-limited controller (positions in [-1, 1]), turns slowly towards random yaw
    targets, toggles the gripper (-1/+1) at waypoints, and adds Gaussian noise of ``noise_std``
    to the position actions. These are NOT demonstrations; results on them say ``synthetic``.

    Returns:
        ``{"synthetic_<i // 10>:demo_<i>": (length, 7)}`` (ten episodes per pseudo task file).
    """
    episodes = {}
    for i in range(num_episodes):
        u = lambda *shape: torch.rand(*shape, generator=generator, dtype=torch.float64).numpy()  # noqa: E731
        pos, velocity, yaw, gripper = np.zeros(3), np.zeros(3), 0.0, -1.0
        target, yaw_target = u(3) * 0.3 - 0.15, (u(1)[0] - 0.5) * 1.5
        actions = np.zeros((length, ACTION_DIM))
        for t in range(length):
            error = target - pos
            desired = 1.6 * error / 0.05
            desired *= min(1.0, 1.0 / max(np.linalg.norm(desired), 1e-9))
            velocity += np.clip(desired - velocity, -0.35, 0.35)
            noise = torch.randn(3, generator=generator, dtype=torch.float64).numpy() * noise_std
            actions[t, :3] = np.clip(velocity + noise, -1, 1)
            turn = np.clip(1.5 * (yaw_target - yaw) / 0.5, -1, 1)
            actions[t, 3:6] = [0.1 * turn * np.sin(0.05 * t), 0.05 * turn, turn]
            actions[t, 6] = gripper
            pos += 0.05 * 0.4 * actions[t, :3]  # the arm follows about 40% of the command per step
            yaw += 0.5 * 0.3 * turn
            if np.linalg.norm(error) < 0.01:  # reached: grip or release, then a new waypoint
                gripper = -gripper
                target, yaw_target = u(3) * 0.3 - 0.15, (u(1)[0] - 0.5) * 1.5
        episodes[f"{SYNTHETIC}_{i // 10}:demo_{i}"] = actions
    return episodes


def load_source(
    source: str, *, demos_dir: str | Path, synthetic_count: int = 60, seed: int = 0
) -> tuple[str, dict[str, np.ndarray]]:
    """Episodes of a named source and a label that says what they are.

    Args:
        source: ``"demos"`` (LIBERO-layout HDF5 files in ``demos_dir``) or ``"synthetic"``
            (made-up expert-like episodes, for smoke runs and tests only).
        demos_dir: folder of ``*.hdf5`` demonstrations.
        synthetic_count: episodes to make when ``source == "synthetic"``.
        seed: seeds the synthetic generator.

    Raises:
        FileNotFoundError: ``demos`` and no files in ``demos_dir`` (names notebook 01_demonstrations).
        ValueError: unknown source.
    """
    if source == "demos":
        files = demo_files(demos_dir)
        episodes = load_episodes(files)
        return f"demos {demos_dir} ({len(files)} files, {len(episodes)} episodes)", episodes
    if source == SYNTHETIC:
        episodes = synthetic_episodes(synthetic_count, generator=torch.Generator().manual_seed(seed))
        return f"SYNTHETIC expert-like episodes ({synthetic_count}; not demonstrations)", episodes
    raise ValueError(f"unknown data source {source!r}; use 'demos' or 'synthetic'")
