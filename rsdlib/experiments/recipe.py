"""The lowdim track's recipe: one suite's every model, from demonstrations to cards, in an hour.

::

    python scripts/generate_demos.py --suite libero_spatial --no-images --episodes 100 --workers 2 \
        --root data/demos_lowdim
    python scripts/train_policies.py lowdim --suite libero_spatial

:func:`train_lowdim_suite` prepares the demonstrations (object rows, no images), trains the
main policy, the baselines, the head drafter and the depth head for the minutes :data:`LOWDIM_MINUTES` gives each
(steps are timed on the machine first, so the budget holds on a slower or faster one), distils
the head drafter on the main policy's greedy tokens (what ``exact`` judges it on), writes the
cards, and records the wall time of every stage in ``recipe.json``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rsdlib.experiments.cards import write_cards
from rsdlib.experiments.distill import distill_head_drafter
from rsdlib.experiments.prepare import prepare, stale_reason
from rsdlib.experiments.train_models import MODELS, Schedule, train_models
from rsdlib.paths import REPO_ROOT
from rsdlib.results import describe_device, write_json

#: Training minutes per model on a 2-core CPU: 42 in all, so that preparing (3 minutes for 200
#: demos per task), training, distilling the head drafter (9) and the cards (3) fit in an hour.
#: The main policy gets the most: everything rests on it. (The run of 2026-11-30 on 200 demos per
#: task had 50 minutes, no loop overhead in its step counts, and took 77.) ``tiny_policy`` is not
#: trained for the lowdim track: on libero_object's validation chunks it accepted no drafted layer
#: under ``exact`` (g2; 0.12 layers per chunk at match_rate 0.5, the head 0.68), so it did not earn
#: its minutes or its megabyte in every shipped folder.
LOWDIM_MINUTES = {
    "rfsq_ar": 26.0,
    "rfsq_parallel": 4.0,
    "l1_regression": 4.0,
    "fast_ar": 5.0,
    "head_drafter": 1.5,  # on demonstration tokens; the distillation after it is what counts
    "depth_head": 1.5,
}
#: Steps of distilling the head drafter on the main policy's greedy tokens (batch 256; about 9
#: minutes on a 2-core CPU: 3.3 decoding every training chunk once, ~6 training). A head that
#: reads the main policy's embedding and output layer (the lowdim default) needs them: on
#: libero_goal it matched the head with its own (whole layers 0-3 agree 0.41/0.41/0.29/0.19)
#: after 3000 steps, and was well short after 1000 (0.32/0.32/0.22/0.12).
DISTILL_STEPS = 3000
#: Optimisation of every lowdim model; its minutes come from :data:`LOWDIM_MINUTES`. A short
#: run on a small trunk takes a higher peak learning rate than the rgb recipe's 3e-4.
LOWDIM_SCHEDULE = Schedule(lr=6e-4, batch_size=128, warmup_steps=200, eval_every=500)
LOWDIM_DEMOS = REPO_ROOT / "data" / "demos_lowdim"
LOWDIM_CHECKPOINTS = REPO_ROOT / "checkpoints" / "lowdim"


def train_lowdim_suite(
    suite: str,
    *,
    demos_root: str | Path = LOWDIM_DEMOS,
    out: str | Path | None = None,
    prepared_dir: str | Path | None = None,
    minutes: dict[str, float] | None = None,
    scale: float = 1.0,
    max_per_task: int | None = None,
    steps: int | None = None,
    rfsq_levels: list[int] | list[list[int]] | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Prepare, train and describe every model of the lowdim track for ``suite``.

    Args:
        demos_root: where ``<suite>/*_demo.hdf5`` (with object poses) are.
        out: the checkpoints folder (default ``checkpoints/lowdim/<suite>``).
        prepared_dir: the prepared folder (default ``build/prepared/<suite>_lowdim``); reused
            when it holds a split prepared from the same files and settings, made again if not.
        minutes: training minutes per model (default :data:`LOWDIM_MINUTES`).
        scale: multiplies every model's minutes (a quick run: 0.1).
        max_per_task: train on the first this many demos of each task (a data curve's point).
        steps: train every model for this many steps instead of its minutes (a data curve holds
            the optimisation fixed and varies only the data).
        rfsq_levels: RFSQ levels, one list or one per layer (default the tokenizer's, ten binary
            channels in every layer; see :mod:`rsdlib.experiments.layer_levels`).

    Returns:
        The recipe record (also written to ``<out>/recipe.json``): seconds per stage and model.
    """
    out = Path(out or LOWDIM_CHECKPOINTS / suite)
    prepared_dir = Path(prepared_dir or REPO_ROOT / "build" / "prepared" / f"{suite}_lowdim")
    budget = {name: m * scale for name, m in (minutes or LOWDIM_MINUTES).items()}
    unknown = sorted(set(budget) - set(MODELS))
    if unknown:
        raise ValueError(f"minutes names unknown models {unknown}; known: {MODELS}")
    record: dict[str, Any] = {"suite": suite, "device": describe_device(device or "cpu"), "minutes": budget}
    begin = start = time.perf_counter()
    stale = stale_reason(prepared_dir, suite, demos_root, max_per_task, rfsq_levels)
    if stale:
        print(f"preparing {prepared_dir}: {stale}")
        prepare(
            suite, prepared_dir, demos_root=demos_root, modality="lowdim", max_per_task=max_per_task,
            rfsq={"levels": rfsq_levels} if rfsq_levels else None, progress=progress,
        )  # fmt: skip
    record["prepare_s"] = round(time.perf_counter() - start, 1)
    schedules = {
        name: replace(LOWDIM_SCHEDULE, steps=steps) if steps else replace(LOWDIM_SCHEDULE, minutes=m)
        for name, m in budget.items()
    }
    record["train_s"] = train_models(
        prepared_dir, out, models=[m for m in MODELS if m in budget], schedules=schedules,
        device=device, progress=progress,
    )  # fmt: skip
    if "head_drafter" in budget:
        start = time.perf_counter()
        distilled = distill_head_drafter(
            out, prepared_dir, steps=max(1, round(DISTILL_STEPS * scale)), progress=progress
        )
        record["distill_s"] = round(time.perf_counter() - start, 1)
        record["head_drafter_agreement"] = {k: distilled[f"val_{k}"] for k in ("before", "after")}
    start = time.perf_counter()
    write_cards(out, prepared_dir=prepared_dir)
    record["cards_s"] = round(time.perf_counter() - start, 1)
    record["total_min"] = round((time.perf_counter() - begin) / 60, 1)
    write_json(out / "recipe.json", record)
    return record
