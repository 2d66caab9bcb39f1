"""The LIBERO evaluation protocol as data (OpenVLA-OFT's ``run_libero_eval.py``).

Every number the protocol fixes lives here, once, and is written into every result so
that a table says which harness produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

#: The five standard suites, in the order papers report them.
SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")

#: Suites this workbench adds to LIBERO's (their BDDL files live in ``rsdlib/libero/bddl/``):
#: ``rsd_ambiguity`` holds scenes with two equally valid targets (the ambiguity experiment).
EXTRA_SUITES = ("rsd_ambiguity",)

#: Episode step limits per suite (the longest official demo plus a margin), OpenVLA-OFT.
MAX_STEPS = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
    "rsd_ambiguity": 220,  # one pick and place, as in libero_spatial
}

#: The no-op action used while objects settle: no motion, gripper open (-1).
WAIT_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)


@dataclass(frozen=True)
class Protocol:
    """How an episode is run and scored.

    Attributes:
        env_seed: ``env.seed`` before every episode (OpenVLA-OFT fixes 0: the seed moves objects
            even with a fixed init state).
        num_init_states: fixed init states per task (the official ``.pruned_init`` files hold 50).
        num_wait_steps: steps of :data:`WAIT_ACTION` after the init state, while objects settle;
            they do not count towards ``max_steps``.
        max_steps: step limit per suite, after the wait.
        flip_images: rotate camera images by 180 degrees (MuJoCo renders them upside down;
            OpenVLA-OFT trains on ``img[::-1, ::-1]``).
        binarize_gripper: map the gripper command to -1 (open) or +1 (close) by its sign.
        open_loop_steps: actions of a chunk executed before the policy is asked again.
        camera_names: cameras rendered for the policy.
        camera_resolution: square render size in pixels.
    """

    env_seed: int = 0
    num_init_states: int = 50
    num_wait_steps: int = 10
    max_steps: dict[str, int] = field(default_factory=lambda: dict(MAX_STEPS))
    flip_images: bool = True
    binarize_gripper: bool = True
    open_loop_steps: int = 8
    camera_names: tuple[str, ...] = ("agentview", "robot0_eye_in_hand")
    camera_resolution: int = 128

    def __post_init__(self) -> None:
        if self.camera_resolution < 16:
            raise ValueError(f"camera_resolution ({self.camera_resolution}) must be at least 16 pixels")
        if self.num_wait_steps < 0 or self.open_loop_steps < 1:
            raise ValueError(
                f"num_wait_steps ({self.num_wait_steps}) must be >= 0 and "
                f"open_loop_steps ({self.open_loop_steps}) >= 1"
            )
        unknown = set(self.max_steps) - set(SUITES + EXTRA_SUITES)
        if unknown:
            raise ValueError(
                f"max_steps names unknown suites {sorted(unknown)}; known: {SUITES + EXTRA_SUITES}"
            )

    def max_steps_for(self, suite: str) -> int:
        """The step limit for ``suite``."""
        check_suite(suite)
        return self.max_steps[suite]


#: Fields that say how the policy sees the scene (set to what it was trained on), not what an
#: episode asks of it: another value there is no deviation from the protocol.
OBSERVATION_FIELDS = ("flip_images", "camera_names", "camera_resolution")


def deviations(protocol: Protocol) -> dict[str, dict[str, Any]]:
    """The fields of ``protocol`` that differ from OpenVLA-OFT's (``Protocol()``), as
    ``{field: {"openvla_oft": ..., "used": ...}}``: success under any of them is not comparable
    with published LIBERO tables (re-planning every 4 actions, for one, is another task)."""
    default = Protocol()
    return {
        f.name: {"openvla_oft": getattr(default, f.name), "used": getattr(protocol, f.name)}
        for f in fields(Protocol)
        if f.name not in OBSERVATION_FIELDS and getattr(protocol, f.name) != getattr(default, f.name)
    }


def deviation_lines(found: dict[str, dict[str, Any]]) -> list[str]:
    """One printable line per deviation of :func:`deviations` (none for the standard protocol)."""
    return [
        f"protocol deviation: {name} = {d['used']} (OpenVLA-OFT: {d['openvla_oft']})"
        for name, d in found.items()
    ]


def check_suite(suite: str) -> str:
    """Return ``suite`` if it is a known suite, else raise a ValueError listing the known ones."""
    if suite not in SUITES + EXTRA_SUITES:
        raise ValueError(f"unknown LIBERO suite {suite!r}; choose one of {', '.join(SUITES + EXTRA_SUITES)}")
    return suite


def postprocess_gripper(action, binarize: bool = True):
    """Clip an action to [-1, 1] and, if asked, snap the gripper (last entry) to -1 or +1.

    A gripper value of exactly 0 maps to -1 (open): never close by accident.
    """
    import numpy as np

    action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    if binarize:
        action = action.copy()
        action[..., -1] = np.where(action[..., -1] > 0, 1.0, -1.0)
    return action
