"""The interface the evaluation harness runs: scripted experts and learned policies share it.

A policy is reset once per episode with an :class:`EpisodeContext`, then asked to act on
observations. ``act`` returns either one action (7,) or a chunk (H, 7) of actions in
environment units; the evaluation harness executes up to ``Protocol.open_loop_steps`` of a
chunk before asking again. A policy that wants something recorded per chunk (a decoding
trace, latency, accepted layers) returns a :class:`PolicyOutput` with ``diagnostics``.

Example::

    class HoldStill(EnvPolicy):
        name = "hold_still"

        def act(self, obs):
            return np.array([0, 0, 0, 0, 0, 0, -1.0])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rsdlib.actions import ACTION_DIM


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
        actions: (A,) one action, or (H, A) a chunk, in environment units.
        diagnostics: JSON-able values (numbers, strings, lists) recorded per chunk.
    """

    actions: np.ndarray
    diagnostics: dict[str, Any] = field(default_factory=dict)


class EnvPolicy:
    """What the LIBERO harness runs (not the network heads of ``rsdlib.policies``). Override :meth:`act`, and :meth:`reset` if the policy keeps episode state."""

    #: Short name recorded in results.
    name: str = "policy"

    def reset(self, context: EpisodeContext) -> None:
        """Start an episode (the default keeps no state)."""

    def act(self, obs: dict[str, Any]) -> np.ndarray | PolicyOutput:
        """Actions for observation ``obs`` (see :mod:`rsdlib.libero.env` for its keys)."""
        raise NotImplementedError

    def requirements(self) -> dict[str, Any]:
        """What the harness must provide, checked before any episode: ``cameras`` (observation keys
        of the images read) and ``image_size`` (pixels); the default needs nothing."""
        return {}

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
    if actions.ndim != 2 or actions.shape[1] != ACTION_DIM or len(actions) == 0:
        raise ValueError(f"a policy must return a (7,) action or an (H, 7) chunk, got shape {actions.shape}")
    if not np.all(np.isfinite(actions)):
        raise ValueError("the policy returned non-finite actions")
    return PolicyOutput(actions, out.diagnostics)
