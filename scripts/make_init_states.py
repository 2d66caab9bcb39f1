"""Make the evaluation init states of a scene of the workbench's own (one without LIBERO's).

Usage::

    python scripts/make_init_states.py --suite rsd_ambiguity --task 0 --count 50

The LIBERO suites ship 50 fixed init states per task; a scene written here (``rsd_ambiguity``'s
symmetric two-bowl scene) gets its own, drawn by LIBERO's placement samplers with seeds of their
own (never the demonstrations'), in mirrored pairs (:func:`rsdlib.libero.init_states.mirrored_starts`),
and saved beside the BDDL file as ``<task>.init.npy``. Demonstrations made afterwards are refused
any start that lands on one of them (``check_held_out``). Refuses to overwrite an existing file
unless told ``--force`` (models were evaluated on it).
"""

from __future__ import annotations

import argparse

import numpy as np

from rsdlib.libero.env import LiberoEnv, RenderOptions
from rsdlib.libero.init_states import mirrored_starts
from rsdlib.libero.tasks import EXTRA_TASKS
from rsdlib.seeding import placement_seed

#: Base seed of evaluation placements; demonstrations draw theirs from their own base (0 by default).
EVALUATION_SEED = 20_261_201
#: The movable objects a mirror image swaps, per scene: identical objects, one on each side.
MIRROR_SWAP = {("rsd_ambiguity", 0): ("akita_black_bowl_1", "akita_black_bowl_2")}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suite", default="rsd_ambiguity", choices=sorted(EXTRA_TASKS))
    parser.add_argument("--task", type=int, default=0)
    parser.add_argument("--count", type=int, default=50, help="init states, an even number (mirrored pairs)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = parser.parse_args()

    extra = EXTRA_TASKS[args.suite][args.task]
    if extra.scene_of is not None:
        parser.error(
            f"{args.suite} task {args.task} uses the init states of {extra.scene_of}; nothing to make"
        )
    path = extra.init_file(args.suite)
    if path.exists() and not args.force:
        parser.error(f"{path} exists (models may have been evaluated on it); --force to make it again")
    swap = MIRROR_SWAP[(args.suite, args.task)]
    with LiberoEnv(args.suite, args.task, render=RenderOptions(enabled=False)) as env:
        states = mirrored_starts(
            env, args.count, swap, lambda k: placement_seed(EVALUATION_SEED, args.suite, args.task, k)
        )
    np.save(path, states)
    print(f"{len(states)} init states ({len(states) // 2} mirrored pairs) -> {path}")


if __name__ == "__main__":
    main()
