"""Generate scripted-expert demonstrations in LIBERO's HDF5 layout (resumable).

Usage::

    python scripts/generate_demos.py --suite libero_spatial                   # 50 per task, with images
    python scripts/generate_demos.py --suite libero_spatial --no-images       # stage 1 only (lowdim: enough)
    python scripts/generate_demos.py --suite libero_spatial --no-images --episodes 100 --root data/demos_lowdim
    python scripts/generate_demos.py --suite libero_object --tasks 0 1 --workers 2

Writes ``data/demos/<suite>/<task_name>_demo.hdf5`` and appends a report per task to
``data/demos/<suite>/generation_log.jsonl``. Re-running skips what is done. Episodes start
from placements sampled from each task's BDDL regions (never the benchmark's init states;
``--start benchmark`` reproduces the old, labelled, behaviour), with DART noise.
"""

from __future__ import annotations

import argparse
import json

from rsdlib.libero.demos import DEMOS_DIR, DemoConfig, generate_suite
from rsdlib.libero.protocol import EXTRA_SUITES, SUITES, Protocol


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suite", required=True, choices=SUITES + EXTRA_SUITES)
    parser.add_argument("--tasks", nargs="*", type=int, default=None)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--no-images", action="store_true", help="stage 1 only: rollouts without camera images"
    )
    parser.add_argument("--fast-render", action="store_true")
    parser.add_argument(
        "--rerender-images",
        action="store_true",
        help="render the images of existing files again from their states (files made before fixtures "
        "were placed as in episodes say so when loaded)",
    )
    parser.add_argument("--resolution", type=int, default=128, help="camera images, pixels square")
    parser.add_argument("--noise-std", type=float, default=DemoConfig.noise_std, help="expert action noise")
    parser.add_argument(
        "--dart-std", type=float, default=DemoConfig.dart_std, help="DART noise on executed actions (0: off)"
    )
    parser.add_argument("--start", choices=("sampled", "benchmark"), default=DemoConfig.start)
    parser.add_argument(
        "--repeats", type=int, default=1, help="demos per init state (a goal with alternatives: each in turn)"
    )
    parser.add_argument("--root", default=str(DEMOS_DIR))
    args = parser.parse_args()
    config = DemoConfig(
        episodes=args.episodes,
        repeats=args.repeats,
        seed=args.seed,
        noise_std=args.noise_std,
        dart_std=args.dart_std,
        start=args.start,
        fast_render=args.fast_render,
        protocol=Protocol(camera_resolution=args.resolution),
    )
    reports = generate_suite(
        args.suite,
        args.tasks,
        config,
        root=args.root,
        workers=args.workers,
        images=not args.no_images,
        rerender_images=args.rerender_images,
    )
    for report in reports:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
