import random

import numpy as np
import pytest
import torch

from rsdlib.seeding import seed_everything, seeded


def draw():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_same_seed_same_draws_for_all_three_generators():
    seed_everything(3)
    a = draw()
    seed_everything(3)
    assert draw() == a
    seed_everything(4)
    assert draw() != a


def test_seeded_restores_the_outer_state():
    seed_everything(0)
    expected = draw()
    seed_everything(0)
    with seeded(123):
        inside = draw()
    assert draw() == expected  # the block did not consume the outer streams
    with seeded(123):
        assert draw() == inside


def test_seeded_restores_state_even_when_the_block_raises():
    seed_everything(0)
    expected = draw()
    seed_everything(0)
    with pytest.raises(RuntimeError), seeded(5):
        raise RuntimeError("boom")
    assert draw() == expected


@pytest.mark.parametrize("bad", [-1, 1.5, "0"])
def test_bad_seed_is_rejected(bad):
    with pytest.raises(ValueError, match="seed"):
        seed_everything(bad)
