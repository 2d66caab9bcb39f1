"""The scripted expert: reads the BDDL goal, plans skills from object poses, acts like a teleoperator.

The expert is a :class:`~rsdlib.libero.policy.EnvPolicy`, so the evaluation harness and the
demonstration recorder drive it exactly as they drive a learned policy. It is privileged: at
reset it takes the live env from the :class:`~rsdlib.libero.policy.EpisodeContext` and reads
object poses and shapes from the simulator.

Each goal predicate maps to a skill (``on`` and ``in``: pick and place; ``open`` / ``close``:
drawers and doors; ``turnon`` / ``turnoff``: knobs). Predicates are solved in BDDL order; a
predicate whose skill failed (the grasp slipped, the object bounced off) is tried again while
the step budget lasts.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rsdlib.libero.experts import skills
from rsdlib.libero.experts.motion import OPEN, Motion, MotionConfig
from rsdlib.libero.goals import choose_alternative
from rsdlib.libero.policy import EnvPolicy, EpisodeContext
from rsdlib.libero.scene import Scene


def solving_order(goal: list[list[str]]) -> list[list[str]]:
    """The goal's predicates in an order a person would follow: BDDL order, except that closing a
    drawer waits until everything that goes into it is in (LIBERO lists "close the drawer" first
    in tasks like "put the bowl in the bottom drawer and close it")."""
    filled = [p[2] for p in goal if p[0] in ("in", "on") and len(p) == 3]

    def waits(p: list[str]) -> bool:  # closing X (or a region of X: microwave_1_heating_region)
        return p[0] == "close" and len(p) == 2 and any(t == p[1] or t.startswith(p[1] + "_") for t in filled)

    return sorted(goal, key=waits)


class UnsupportedGoal(NotImplementedError):
    """The expert has no skill for a goal predicate."""


@dataclass(frozen=True)
class ExpertConfig:
    """Settings of the scripted expert.

    Attributes:
        motion: speed, smoothness and noise of the motions.
        attempts: tries per goal predicate before giving up (holding still).
    """

    motion: MotionConfig = field(default_factory=MotionConfig)
    attempts: int = 3

    @classmethod
    def with_noise(cls, noise_std: float = 0.05, waypoint_noise: float = 0.004, **kwargs) -> ExpertConfig:
        """The demonstration setting: small action and waypoint noise, so episodes vary."""
        return cls(motion=MotionConfig(noise_std=noise_std, waypoint_noise=waypoint_noise), **kwargs)


class ScriptedExpert(EnvPolicy):
    """A privileged expert for LIBERO tasks (see the module docstring).

    Args:
        config: expert settings; noise is drawn from a generator seeded with each episode's seed.
    """

    name = "scripted_expert"

    def __init__(self, config: ExpertConfig | None = None) -> None:
        self.expert_config = config or ExpertConfig()
        self._routine: Iterator[np.ndarray] | None = None
        self.phase = "idle"

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.expert_config)}

    def reset(self, context: EpisodeContext) -> None:
        if context.env is None:
            raise ValueError(
                "the scripted expert is privileged: reset it with an EpisodeContext whose env is set"
            )
        self.scene = Scene(context.env)
        self.motion = Motion(self.scene, self.expert_config.motion, np.random.default_rng(context.seed))
        # A goal with alternatives ("either bowl on the plate"): the init index and the repeat pick
        # one, so that demonstrations split evenly between the targets, and two repeats of one
        # init state demonstrate both.
        self.goal = choose_alternative(self.scene.goal, context.init_index + context.repeat)
        self._routine = self._solve()

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        if self._routine is None:
            raise RuntimeError("call reset(context) before act(obs)")
        return next(self._routine)

    # -- planning ----------------------------------------------------------------------------

    def _solve(self) -> Iterator[np.ndarray]:
        for predicate in solving_order(self.goal):
            for attempt in range(self.expert_config.attempts):
                if self.scene.holds(predicate):
                    break
                self.phase = f"{predicate[0]} attempt {attempt}"
                yield from self._skill(predicate, attempt)
        self.phase = "done"
        while True:  # goal reached (or given up): hold still, gripper open
            self.motion.gripper = OPEN
            yield self.motion.action_towards(self.scene.eef_pos)

    def _skill(self, predicate: list[str], attempt: int) -> Generator[np.ndarray, None, bool]:
        kind, *args = predicate
        if kind == "close" and skills.has_hinged_door(self.scene, args[0]):
            yield from skills.swing_door_closed(self.motion, args[0])
            return True
        if kind in ("open", "close"):
            if not self._is_drawer(args[0]):
                raise UnsupportedGoal(
                    f"the scripted expert slides drawers and closes hinged doors only; {predicate} is "
                    "neither (opening a hinged door, such as a microwave's, has no primitive yet)"
                )
            yield from skills.slide_drawer(self.motion, args[0], open_it=kind == "open")
            return True
        if kind in ("on", "in"):
            obj, target = args
            if kind == "on" and skills.should_drag(self.scene, obj, target):
                yield from skills.drag(self.motion, obj, target, attempt=attempt)
                return True
            if kind == "in" and not self._is_drawer(target) and skills.under_roof(self.scene, target):
                raise UnsupportedGoal(
                    f"{predicate}: {target!r} lies under a roof (inside a microwave); a top-down grasp "
                    "cannot put things there (the hand, 20 cm long across a rim grasp, meets the roof's "
                    "front before the object is past the floor's edge) and the expert has no other"
                )
            if self._is_closed_drawer(target):  # open it first, as a person would
                yield from skills.slide_drawer(self.motion, target, open_it=True)
            lifted = yield from skills.pick(self.motion, obj, attempt=attempt)
            if not lifted:
                yield from self._let_go()
                return False
            others = [p for p in self.goal if p[0] == "on" and len(p) == 3 and p[2] == target and p[1] != obj]
            leave_room = kind == "on" and any(not self.scene.holds(p) for p in others)
            yield from skills.place(self.motion, obj, target, inside=kind == "in", leave_room=leave_room)
            return True
        if kind in ("turnon", "turnoff"):
            yield from skills.turn_knob(self.motion, args[0], on=kind == "turnon")
            return True
        raise UnsupportedGoal(f"the scripted expert has no skill for the goal predicate {predicate}")

    def _is_drawer(self, target: str) -> bool:
        return skills.is_drawer_region(self.scene, target)

    def _is_closed_drawer(self, target: str) -> bool:
        return self._is_drawer(target) and not skills.is_open(self.scene, target)

    def _let_go(self) -> Iterator[np.ndarray]:
        yield from self.motion.grip(OPEN, steps=6)
        yield from self.motion.move(self.scene.eef_pos + [0, 0, 0.06], tolerance=0.02, max_steps=12)
