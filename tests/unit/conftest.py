"""Fixtures shared by the decoding, widget and learned-policy tests."""

import pytest
from fake_rfsq import tiny_policy


@pytest.fixture(scope="module")
def main():
    """A tiny seeded ``rfsq_ar`` main policy with peaked distributions (few greedy near-ties)."""
    return tiny_policy(seed=0, sharpen=3.0)
