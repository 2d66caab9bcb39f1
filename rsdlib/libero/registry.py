"""Policies by name, so that notebooks and scripts pick one with a string.

``make_policy("scripted_expert", noise=False)`` or ``make_policy("learned", path=...,
spec="rsd_head:g2:exact", drafter_path=...)``; :func:`register_policy` adds one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rsdlib.libero.experts import ExpertConfig, ScriptedExpert
from rsdlib.libero.learned_policy import from_checkpoint
from rsdlib.libero.policy import EnvPolicy


def _scripted_expert(noise: bool = True, **kwargs: Any) -> EnvPolicy:
    return ScriptedExpert(ExpertConfig.with_noise(**kwargs) if noise else ExpertConfig(**kwargs))


_REGISTRY: dict[str, Callable[..., EnvPolicy]] = {
    "scripted_expert": _scripted_expert,
    "learned": from_checkpoint,
}


def register_policy(name: str, factory: Callable[..., EnvPolicy]) -> None:
    """Make ``make_policy(name, **kwargs)`` call ``factory(**kwargs)``."""
    _REGISTRY[name] = factory


def make_policy(name: str, **kwargs: Any) -> EnvPolicy:
    """A policy by registered name, e.g. ``make_policy("scripted_expert", noise=False)``.

    Raises:
        KeyError: no policy of that name is registered (the message lists the known ones).
    """
    if name not in _REGISTRY:
        raise KeyError(f"no policy named {name!r}; registered: {sorted(_REGISTRY)} (see register_policy)")
    return _REGISTRY[name](**kwargs)
