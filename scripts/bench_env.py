"""Benchmark: LIBERO env steps per second, by rendering mode, resolution and process count.

    python scripts/bench_env.py                       # or: make bench-env
    python scripts/bench_env.py --steps 200 --resolutions 128 224 256 --processes 1 2

For each setting, every process creates its own env, resets it to an official init state,
waits at a barrier (so parallel processes really step at the same time), then times
``--steps`` steps of a smooth test motion. Prints per-process and total steps per second,
and writes them with provenance to ``results/bench_env/<run>/metrics.json``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import numpy as np


def _worker(suite, task_id, resolution, render, fast, steps, barrier, queue):
    import torch

    from rsdlib.libero.env import LiberoEnv, RenderOptions
    from rsdlib.libero.protocol import Protocol
    from rsdlib.libero.speed import wiggle_actions

    torch.set_num_threads(1)
    env = LiberoEnv(
        suite, task_id, Protocol(camera_resolution=resolution), RenderOptions(enabled=render, fast=fast)
    )
    env.reset(0)
    actions = wiggle_actions(steps)
    barrier.wait()
    step_ms = []
    for action in actions:
        t0 = time.perf_counter()
        env.step(action)
        step_ms.append(1000 * (time.perf_counter() - t0))
    env.close()
    queue.put(step_ms)


def measure(suite, task_id, resolution, render, fast, steps, processes):
    ctx = mp.get_context("spawn")  # a fresh MuJoCo/GL context per process
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(suite, task_id, resolution, render, fast, steps, barrier, queue))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"a benchmark worker exited with code {p.exitcode}")
    per_process = [1000.0 / float(np.median(ms)) for ms in results]
    return {
        "render": ("fast" if fast else "default") if render else "none",
        "resolution": resolution if render else None,
        "processes": processes,
        "median_step_ms": round(float(np.median(np.concatenate(results))), 2),
        "steps_per_s_per_process": round(float(np.mean(per_process)), 2),
        "steps_per_s_total": round(float(np.sum(per_process)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="libero_spatial")
    parser.add_argument("--task-id", type=int, default=0)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--results-dir", default="results")
    args = parser.parse_args()

    from rsdlib.libero.render import configure_rendering
    from rsdlib.paths import repo_path
    from rsdlib.results import new_run, write_json

    backend = configure_rendering()
    settings = [(False, False, args.resolutions[0])]
    settings += [(True, fast, res) for res in args.resolutions for fast in (False, True)]
    rows = []
    print(f"{args.suite} task {args.task_id}, {args.steps} steps, MUJOCO_GL={backend}, {os.cpu_count()} CPUs")
    print(f"{'render':>8} {'res':>5} {'procs':>5} {'ms/step':>8} {'steps/s/proc':>13} {'steps/s total':>14}")
    for render, fast, res in settings:
        for n in args.processes:
            row = measure(args.suite, args.task_id, res, render, fast, args.steps, n)
            rows.append(row)
            print(
                f"{row['render']:>8} {str(row['resolution'] or '-'):>5} {n:>5} {row['median_step_ms']:>8.1f} "
                f"{row['steps_per_s_per_process']:>13.1f} {row['steps_per_s_total']:>14.1f}",
                flush=True,
            )
    run = new_run("bench_env", vars(args) | {"backend": backend}, root=repo_path(args.results_dir))
    write_json(run / "metrics.json", {"rows": rows})
    print(f"wrote {run / 'metrics.json'}")


if __name__ == "__main__":
    main()
