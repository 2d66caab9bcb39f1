"""BDDL goals with alternatives: ``(Or (On a plate) (On b plate))`` as well as LIBERO's conjunctions.

LIBERO's problems check a goal as a flat conjunction of predicates and fail on ``Or``. The
workbench's own tasks (the ambiguity scenes) need "either target counts", so a goal here is a
tree of ``["and", ...]``, ``["or", ...]`` and predicates (``["on", "bowl_1", "plate_1"]``), as
LIBERO's parser leaves it; :func:`install_goal_check` makes a LIBERO problem judge success by it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Predicate = Sequence[Any]  # ["on", "a", "b"], or ["or", <predicate>, ...], or ["and", ...]

CONNECTIVES = ("and", "or")


def has_alternatives(goal: Sequence[Predicate]) -> bool:
    """Whether a goal (a list of predicates, read as their conjunction) has an ``or`` anywhere."""
    return any(p[0] == "or" or (p[0] == "and" and has_alternatives(p[1:])) for p in goal)


def goal_holds(goal: Sequence[Predicate], holds: Callable[[Predicate], bool]) -> bool:
    """Evaluate a goal (the conjunction of its predicates) with ``holds`` for the plain predicates."""

    def check(p: Predicate) -> bool:
        if p[0] == "and":
            return all(check(q) for q in p[1:])
        if p[0] == "or":
            return any(check(q) for q in p[1:])
        return bool(holds(p))

    return all(check(p) for p in goal)


def choose_alternative(goal: Sequence[Predicate], index: int) -> list[list[Any]]:
    """The goal with every ``or`` replaced by its alternative ``index`` (modulo their number).

    Scripted experts solve one alternative per episode; choosing by the init index splits the
    demonstrations evenly between the targets.
    """
    out: list[list[Any]] = []
    for p in goal:
        if p[0] == "or":
            options = list(p[1:])
            out.extend(choose_alternative([options[index % len(options)]], index))
        elif p[0] == "and":
            out.extend(choose_alternative(list(p[1:]), index))
        else:
            out.append(list(p))
    return out


def goal_objects(goal: Sequence[Predicate]) -> list[str]:
    """The object names a goal mentions, in first-mention order."""
    names: list[str] = []
    for p in goal:
        for arg in p[1:]:
            if isinstance(arg, str):
                if arg not in names:
                    names.append(arg)
            else:
                names.extend(n for n in goal_objects([arg]) if n not in names)
    return names


def install_goal_check(problem: Any) -> None:
    """Make a LIBERO problem (``env.env`` of a LIBERO env) judge success with :func:`goal_holds`.

    Needed only for goals with ``or`` (LIBERO's own check would crash on them); the predicates
    are still LIBERO's (``problem._eval_predicate``). Shadows the method on this instance only.
    """
    goal = problem.parsed_problem["goal_state"]
    problem._check_success = lambda: goal_holds(goal, problem._eval_predicate)
