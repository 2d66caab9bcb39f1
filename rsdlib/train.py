"""One training loop for every head and drafter: AdamW, warmup + cosine, clipping, seeded, resumable.

The model supplies ``loss(batch) -> (loss, metrics)`` (or pass ``loss_fn``); the caller supplies
``batches(step, generator) -> batch``. Every step's randomness (batch sampling, dropout,
augmentation) is seeded from ``(seed, step)``, so a run resumed from its last checkpoint makes
exactly the same updates as one that never stopped.

A run folder holds ``last/`` (a loadable checkpoint: ``model.safetensors`` + ``config.json``),
``last/trainer.pt`` (optimizer, scheduler, step) and ``log.jsonl`` (one JSON line per logged
step: loss, metrics, learning rate, seconds; evaluation rows carry ``"split": "val"``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rsdlib.policies import checkpoints
from rsdlib.progress import progress as progress_bar

Batch = Any
LossFn = Callable[[Batch], tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    Attributes:
        steps: optimizer steps in all.
        lr: peak learning rate.
        weight_decay: AdamW decoupled weight decay.
        betas: AdamW betas.
        warmup_steps: linear warmup from 0 to ``lr``.
        min_lr_ratio: the cosine decays to ``lr * min_lr_ratio`` at ``steps``.
        grad_clip: max global gradient norm (0 disables clipping).
        seed: seeds every step's randomness together with the step index.
        log_every: steps between log lines.
        checkpoint_every: steps between checkpoints (the last step always writes one).
        eval_every: steps between ``evaluate`` calls (0: only at the end).
        progress: show a tqdm bar.
    """

    steps: int = 2000
    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    eval_every: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps ({self.steps}) must be at least 1")
        if self.lr <= 0:
            raise ValueError(f"lr ({self.lr}) must be positive")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be in [0, steps={self.steps}]")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio ({self.min_lr_ratio}) must be in [0, 1]")
        if self.grad_clip < 0 or self.log_every < 1 or self.checkpoint_every < 1 or self.eval_every < 0:
            raise ValueError(
                f"grad_clip ({self.grad_clip}) must be >= 0, log_every ({self.log_every}) and "
                f"checkpoint_every ({self.checkpoint_every}) >= 1, eval_every ({self.eval_every}) >= 0"
            )


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of ``config.lr`` for the update made at ``step`` (0-based): warmup, then cosine."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(config.steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / span, 1.0)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def step_seed(seed: int, step: int) -> int:
    """The seed of one step's randomness."""
    return (seed * 1_000_003 + step) % (2**63 - 1)


@dataclass
class TrainResult:
    """What :func:`train` did."""

    steps_done: int  # the step reached (below config.steps when a deadline stopped it)
    resumed_from: int
    last_loss: float
    seconds: float
    run_dir: Path


def train(
    model: nn.Module,
    *,
    batches: Callable[[int, torch.Generator], Batch],
    config: TrainConfig,
    run_dir: str | Path,
    loss_fn: LossFn | None = None,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    resume: bool = True,
    deadline: float | None = None,
) -> TrainResult:
    """Train ``model`` in place, resuming from ``run_dir/last`` when it exists.

    Args:
        model: a policy or head drafter (saved with :func:`rsdlib.policies.checkpoints.save`).
        batches: ``(step, generator) -> batch``, drawing all randomness from the generator.
        config: optimisation settings.
        run_dir: where checkpoints and the log go.
        loss_fn: ``batch -> (loss, metrics)``; defaults to ``model.loss``.
        evaluate: ``model -> metrics`` on validation data, logged with ``"split": "val"``.
        resume: continue from ``run_dir/last`` if present (False starts over and overwrites it).
        deadline: a ``time.time()`` after which training stops at the next step, with a
            checkpoint there (a time limit on a shared machine); calling again resumes from it.

    Returns:
        :class:`TrainResult`.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    loss_fn = loss_fn or model.loss
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=config.betas,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    start = 0
    log_file = run_dir / "log.jsonl"
    if resume and (run_dir / "last" / "trainer.pt").is_file():
        start = _load_state(model, optimizer, scheduler, run_dir / "last")
        _truncate_log(log_file, start)
    elif log_file.exists():
        log_file.unlink()

    model.train()
    t0 = time.perf_counter()
    last_loss = float("nan")
    bar = progress_bar(
        range(start, config.steps), initial=start, total=config.steps, disable=not config.progress
    )
    for step in bar:
        seed = step_seed(config.seed, step)
        torch.manual_seed(seed)  # dropout and augmentation inside the model
        batch = batches(step, torch.Generator().manual_seed(seed))
        loss, metrics = loss_fn(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss.item()} at step {step}; lower lr ({config.lr}) or check the batch"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = (
            float(nn.utils.clip_grad_norm_(params, config.grad_clip)) if config.grad_clip else float("nan")
        )
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        last_loss = loss.item()
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            row = {"step": done, "split": "train", "lr": lr, "grad_norm": grad_norm}
            row |= {k: float(v) for k, v in metrics.items()} | {"loss": last_loss}
            row["seconds"] = time.perf_counter() - t0
            _append(log_file, row)
            bar.set_postfix(loss=f"{last_loss:.4f}")
        out_of_time = deadline is not None and time.time() > deadline and done < config.steps
        if evaluate is not None and (
            (config.eval_every and done % config.eval_every == 0) or done == config.steps or out_of_time
        ):
            model.eval()
            with torch.no_grad():
                val = evaluate(model)
            model.train()
            _append(log_file, {"step": done, "split": "val"} | {k: float(v) for k, v in val.items()})
        if done % config.checkpoint_every == 0 or done == config.steps or out_of_time:
            _save_state(model, optimizer, scheduler, done, config, run_dir / "last")
        if out_of_time:
            _append(
                log_file,
                {"step": done, "split": "stopped", "reason": "deadline", "seconds": time.perf_counter() - t0},
            )
            break
    model.eval()
    return TrainResult(
        steps_done=done if config.steps > start else start,
        resumed_from=start,
        last_loss=last_loss,
        seconds=time.perf_counter() - t0,
        run_dir=run_dir,
    )


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``run_dir/log.jsonl``."""
    file = Path(run_dir) / "log.jsonl"
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def _append(file: Path, row: dict[str, Any]) -> None:
    with file.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _truncate_log(file: Path, step: int) -> None:
    """Drop rows written after the checkpoint being resumed (they will be written again)."""
    if file.exists():
        rows = [r for r in read_log(file.parent) if r["step"] <= step]
        file.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _save_state(model, optimizer, scheduler, step: int, config: TrainConfig, folder: Path) -> None:
    checkpoints.save(model, folder, metadata={"train": asdict(config), "step": step})
    torch.save(
        {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
        folder / "trainer.pt",
    )


def _load_state(model, optimizer, scheduler, folder: Path) -> int:
    loaded = checkpoints.load(folder)
    if loaded.config != model.config:
        raise checkpoints.CheckpointError(
            f"{folder / checkpoints.CONFIG} describes a different model than the one being trained; "
            "use a new run_dir or resume=False"
        )
    model.load_state_dict(loaded.state_dict())
    state = torch.load(folder / "trainer.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"])
