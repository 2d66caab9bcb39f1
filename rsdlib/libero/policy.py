"""The policy interface that scripted experts and learned policies share.

A policy is reset once per episode with an :class:`EpisodeContext`, then asked to act on
observations. ``act`` returns either one action (7,) or a chunk (H, 7) of actions in
environment units; the evaluation harness executes up to ``Protocol.open_loop_steps`` of a
chunk before asking again. A policy that wants something recorded per chunk (a decoding
trace, latency, accepted layers) returns a :class:`PolicyOutput` with ``diagnostics``.

Example::

    class HoldStill(Policy):
        name = "hold_still"

        def act(self, obs):
            return np.array([0, 0, 0, 0, 0, 0, -1.0])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class EpisodeContext:
    """What a policy is told when an episode starts.

    Attributes:
        suite: suite name.
        task_id: task index in the suite.
        init_index: which of the task's fixed init states the episode starts from.
        seed: the episode's seed; a policy that samples should seed its generator with it.
        instruction: the task's language instruction.
        env: the live :class:`~rsdlib.libero.env.LiberoEnv`. Only privileged policies (scripted
            experts) may read it; a learned policy must act on observations alone.
        repeat: which episode this is among those started from the same init state (0 first).
    """

    suite: str
    task_id: int
    init_index: int
    seed: int
    instruction: str
    env: Any = None
    repeat: int = 0


@dataclass
class PolicyOutput:
    """Actions plus anything the policy wants recorded for this chunk.

    Attributes:
        actions: (7,) one action, or (H, 7) a chunk, in environment units.
        diagnostics: JSON-able values (numbers, strings, lists) recorded per chunk.
    """

    actions: np.ndarray
    diagnostics: dict[str, Any] = field(default_factory=dict)


class Policy:
    """Base class: override :meth:`act`, and :meth:`reset` if the policy keeps episode state."""

    #: Short name recorded in results.
    name: str = "policy"

    def reset(self, context: EpisodeContext) -> None:
        """Start an episode (the default keeps no state)."""

    def act(self, obs: dict[str, Any]) -> np.ndarray | PolicyOutput:
        """Actions for observation ``obs`` (see :mod:`rsdlib.libero.env` for its keys)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-able settings written into the run's config (the default: the name only)."""
        return {"name": self.name}


def as_output(result: np.ndarray | PolicyOutput) -> PolicyOutput:
    """Normalise what ``act`` returned to a :class:`PolicyOutput` with (H, 7) actions.

    Raises:
        ValueError: the actions are not (7,) or (H, 7) finite numbers.
    """
    out = result if isinstance(result, PolicyOutput) else PolicyOutput(np.asarray(result))
    actions = np.asarray(out.actions, dtype=np.float64)
    if actions.ndim == 1:
        actions = actions[None]
    if actions.ndim != 2 or actions.shape[1] != 7 or len(actions) == 0:
        raise ValueError(f"a policy must return a (7,) action or an (H, 7) chunk, got shape {actions.shape}")
    if not np.all(np.isfinite(actions)):
        raise ValueError("the policy returned non-finite actions")
    return PolicyOutput(actions, out.diagnostics)


# -- policies by name ---------------------------------------------------------------------------

_REGISTRY: dict[str, Any] = {}


def register_policy(name: str, factory) -> None:
    """Make ``make_policy(name, **kwargs)`` call ``factory(**kwargs)`` (notebooks pick policies by name)."""
    _REGISTRY[name] = factory


def _scripted_expert(noise: bool = True, **kwargs) -> Policy:
    from rsdlib.libero.experts import ExpertConfig, ScriptedExpert

    return ScriptedExpert(ExpertConfig.with_noise(**kwargs) if noise else ExpertConfig(**kwargs))


register_policy("scripted_expert", _scripted_expert)
register_policy(
    "learned",
    lambda path, **kw: __import__("rsdlib.libero.learned_policy", fromlist=["_"]).from_checkpoint(path, **kw),
)


def make_policy(name: str, **kwargs) -> Policy:
    """A policy by registered name, e.g. ``make_policy("scripted_expert", noise=False)``.

    Raises:
        KeyError: no policy of that name is registered (the message lists the known ones).
    """
    if name not in _REGISTRY:
        raise KeyError(f"no policy named {name!r}; registered: {sorted(_REGISTRY)} (see register_policy)")
    return _REGISTRY[name](**kwargs)
