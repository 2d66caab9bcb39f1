"""Seeding for python, numpy and torch, with a context manager that restores state."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and CUDA)."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def episode_seed(base_seed: int, suite: str, task_id: int, init_index: int, repeat: int = 0) -> int:
    """A seed per LIBERO episode that depends only on the run's seed and the episode, not on
    scheduling (the harness seeds each episode's policy with it; demonstrations seed their noise)."""
    words = [base_seed, *suite.encode(), task_id, init_index] + ([repeat] if repeat else [])
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def placement_seed(base_seed: int, suite: str, task_id: int, index: int) -> int:
    """The seed of the ``index``-th sampled start of a task (LIBERO's placement samplers draw
    from numpy's global generator, which takes seeds below 2**32)."""
    words = [base_seed, *suite.encode(), task_id, index, *b"placement"]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with all global generators seeded, then put their old state back.

    Example:
        >>> with seeded(0):
        ...     a = torch.rand(2)
        >>> with seeded(0):
        ...     b = torch.rand(2)
        >>> bool((a == b).all())
        True
    """
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        seed_everything(seed)
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
