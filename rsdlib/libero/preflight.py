"""Checks before an evaluation runs anything: a configuration mistake raises at once, naming what
to change, instead of being scored as failed episodes of the policy.

- :func:`suite_names`: suites as names (a bare ``"libero_spatial"`` is that one suite);
- :func:`check_episodes`: task and init indices of the right type and in range;
- :func:`check_requirements`: what a policy declares it reads (cameras, image size) against what
  the harness renders.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from rsdlib.libero.policy import EnvPolicy
from rsdlib.libero.protocol import Protocol, check_suite
from rsdlib.observations import CAMERAS


def suite_names(suites: str | Sequence[str]) -> list[str]:
    """``suites`` as a list of known suite names; a single name (a ``str``) is that one suite.

    Raises:
        TypeError: ``suites`` is neither a name nor a sequence of names.
        ValueError: an unknown suite, or no suite at all.
    """
    if isinstance(suites, str):
        suites = [suites]  # "libero_spatial" is that suite, not its letters
    if not isinstance(suites, Iterable) or isinstance(suites, dict):
        raise TypeError(f"suites must be suite names, e.g. ['libero_spatial'], got {suites!r}")
    names = list(suites)
    bad = [s for s in names if not isinstance(s, str)]
    if bad:
        raise TypeError(
            f"suites must be suite names (str), e.g. ['libero_spatial'], got {bad!r} in {names!r}"
        )
    if not names:
        raise ValueError("suites is empty: name at least one suite, e.g. ['libero_spatial']")
    return [check_suite(s) for s in names]


def _indices(values: Any, what: str) -> list[int]:
    """Task or init indices as ints; raises on anything else, or a negative one."""
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise TypeError(f"{what} must be a list of integer indices, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise TypeError(f"{what} must be integer indices, got {v!r} in {values!r}")
        if v < 0:
            raise ValueError(f"{what}: index {v} is negative; indices count from 0")
        out.append(int(v))
    return out


def check_episodes(
    suites: Sequence[str],
    tasks: Sequence[int] | dict[str, Sequence[int]] | None,
    episodes: int | Sequence[int],
    *,
    libero: bool = True,
) -> None:
    """Raise on episodes that cannot run, before any of them does.

    Args:
        suites: known suite names (see :func:`suite_names`).
        tasks, episodes: as :func:`evaluate` takes them.
        libero: also check that every task and init state exists in LIBERO (imports it); an
            env factory of one's own (a test's fake) knows its own tasks, so only types and
            signs are checked for it.

    Raises:
        TypeError: an index that is not an integer.
        ValueError: ``tasks`` names a suite that is not evaluated, ``episodes`` is below 1, or
            an index is out of range (the message names the suite, the index and the valid range).
    """
    if isinstance(tasks, dict):
        extra = sorted(set(tasks) - set(suites))
        if extra:
            raise ValueError(
                f"tasks names suites {extra} that are not evaluated (suites: {list(suites)}); "
                "add them to suites or drop them from tasks"
            )
    first_n = isinstance(episodes, int | np.integer) and not isinstance(episodes, bool)
    if first_n and episodes < 1:
        raise ValueError(
            f"episodes ({episodes}) must be at least 1 (the first N init states of each task), "
            "or a list of init indices"
        )
    inits = list(range(int(episodes))) if first_n else _indices(episodes, "episodes (init indices)")
    for suite in suites:
        chosen = tasks.get(suite) if isinstance(tasks, dict) else tasks
        task_ids = None if chosen is None else _indices(chosen, f"tasks of {suite}")
        if not libero:
            continue
        from rsdlib.libero.tasks import init_states, num_tasks  # imports LIBERO

        n = num_tasks(suite)
        for task_id in task_ids or []:
            if task_id >= n:
                raise ValueError(f"task {task_id} is out of range for {suite}, which has tasks 0..{n - 1}")
        for task_id in range(n) if task_ids is None else task_ids:
            m = len(init_states(suite, task_id))
            over = [i for i in inits if i >= m]
            if over:
                asked = f" (episodes={episodes} asks for the first {episodes})" if first_n else ""
                raise ValueError(
                    f"init index {over[0]} is out of range for {suite} task {task_id}, which has init "
                    f"states 0..{m - 1}{asked}"
                )


#: What a policy's ``requirements()`` may declare (see :func:`check_requirements`).
REQUIREMENT_KEYS = ("cameras", "image_size")


def check_requirements(policy: EnvPolicy, *, render: bool, protocol: Protocol) -> None:
    """Raise before any episode runs when the harness cannot give ``policy`` what it needs.

    A policy declares what it needs with an optional method ``requirements() -> dict``:

    - ``cameras``: observation keys of the camera images it reads, e.g.
      ``("agentview_rgb", "eye_in_hand_rgb")``: rendering must be on and the protocol must
      render those cameras;
    - ``image_size``: the side in pixels of the square images it reads: the protocol's
      ``camera_resolution``.

    A policy without the method (a scripted expert) is not checked.

    Raises:
        ValueError: every unmet requirement, each with the option that meets it; or a key this
            function does not know (a typo in the policy's ``requirements``).
    """
    declare = getattr(policy, "requirements", None)
    if declare is None:
        return
    needs = dict(declare() or {})
    name = getattr(policy, "name", type(policy).__name__)
    unknown = sorted(set(needs) - set(REQUIREMENT_KEYS))
    if unknown:
        raise ValueError(
            f"{name}.requirements() names unknown keys {unknown}; known: {list(REQUIREMENT_KEYS)}"
        )
    problems = []
    cameras = list(needs.get("cameras") or ())
    if cameras and not render:
        problems.append(
            f"it reads camera images {cameras} and rendering is off: pass EvalOptions(render=True)"
        )
    rendered = [CAMERAS.get(c, f"{c}_rgb") for c in protocol.camera_names]  # as LiberoEnv names them
    missing = [c for c in cameras if c not in rendered]
    if missing:
        problems.append(
            f"it reads {missing}, which the protocol does not render (it renders {rendered}): "
            "add their cameras to Protocol(camera_names=...)"
        )
    size = needs.get("image_size")
    if size is not None and int(size) != protocol.camera_resolution:
        problems.append(
            f"it reads {size}x{size} images and the protocol renders {protocol.camera_resolution}x"
            f"{protocol.camera_resolution}: pass EvalOptions(protocol=Protocol(camera_resolution={size}), ...)"
        )
    if problems:
        raise ValueError(f"policy {name!r} cannot run under these options: " + "; ".join(problems))
