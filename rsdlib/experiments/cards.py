"""Stage 3 of the training recipe: a card per trained model and a README table for the folder.

:func:`write_cards` decodes the validation split with every model and writes ``card.json``
per model and a ``README.md`` table for the folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rsdlib.experiments.prepare import FAST_DIR, RFSQ_DIR, VAL_FILE, read_prepared
from rsdlib.experiments.train_models import MODELS
from rsdlib.experiments.validation import evaluate_policy, validation_loss
from rsdlib.policies import checkpoints
from rsdlib.policies.depth_head import ResidualNormHead, evaluate_depth_head, remaining_residual
from rsdlib.policies.drafters import HeadDrafter, head_drafter_loss
from rsdlib.policies.packed import PackedChunks
from rsdlib.results import write_json
from rsdlib.tokenizers import Normaliser, load_tokenizer


def write_cards(
    folder: str | Path,
    *,
    prepared_dir: str | Path | None = None,
    batch_size: int = 128,
    sample_size: int = 256,
    only: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Decode the validation split with every trained model in ``folder``; write the cards.

    Each ``<folder>/<name>/card.json`` holds the data, the training run (steps, wall time,
    device) and the validation metrics: teacher-forced per-layer token accuracy (token models),
    and ``action_mae``, the mean absolute action error of the greedy decoded chunk in environment
    units; for the depth head, how well it predicts the remaining residual
    (:func:`~rsdlib.policies.depth_head.evaluate_depth_head`). ``<folder>/README.md`` tabulates them.

    Args:
        folder: what :func:`train_models` wrote.
        prepared_dir: where ``val.npz`` is (default: ``folder``).
        sample_size: validation chunks saved as ``val_sample.npz`` beside the models.
        only: the models to measure again (one retrained or distilled alone); the others keep
            the cards they have. None: every model.
    """

    folder = Path(folder)
    info = read_prepared(folder)
    val_file = Path(prepared_dir or folder) / VAL_FILE
    val_set = PackedChunks.load(val_file)
    rfsq_tok, fast_tok = load_tokenizer(folder / RFSQ_DIR), load_tokenizer(folder / FAST_DIR)
    normaliser: Normaliser = rfsq_tok.normaliser
    cards = {}
    for name in MODELS:
        if not (folder / name / checkpoints.WEIGHTS).is_file():
            continue
        if only is not None and name not in only and (folder / name / "card.json").is_file():
            cards[name] = json.loads((folder / name / "card.json").read_text())
            continue
        model = checkpoints.load(folder / name)
        if isinstance(model, HeadDrafter):
            main = checkpoints.load(folder / "rfsq_ar")
            model = checkpoints.attach_head(model, main, folder / name)
            metrics = validation_loss(model, val_set, main.config.trunk, head_drafter_loss(main, model))
        elif isinstance(model, ResidualNormHead):
            main = checkpoints.load(folder / "rfsq_ar")
            targets = remaining_residual(rfsq_tok, val_set.tokens)
            metrics = evaluate_depth_head(model, main, val_set, targets, batch_size=batch_size)
        else:
            metrics = evaluate_policy(
                model, val_set, tokenizer=rfsq_tok, fast_tokenizer=fast_tok,
                denormalize=lambda x: normaliser.denormalise(x).numpy(), batch_size=batch_size,
            )  # fmt: skip
        training = json.loads((folder / name / "training.json").read_text())
        card = {
            "model": name,
            "suite": info["suite"],
            "data": {
                "splits": info["splits"],
                "stride": info["stride"],
                "image_size": info["image_size"],
                "modality": info.get("modality", "rgb"),
                "starts": training_starts(info),
                "training_data": training_data_label(info),
                "proprio_orientation": info.get("proprio_orientation", "axis_angle"),
                "demos_per_task": info.get("max_per_task") or "all",
            },  # fmt: skip
            "training": training,
            # what it holds now (a head moved onto its main policy's embedding and output layer
            # after training holds fewer than it trained with)
            "parameters": sum(p.numel() for p in model.parameters()),
            "validation": metrics,
        }
        write_json(folder / name / "card.json", card)
        cards[name] = card
    (folder / "README.md").write_text(cards_markdown(cards, info))
    # A small validation sample ships with the models (notebook 04 reads it; JPEG keeps it small).
    pick = torch.randperm(len(val_set), generator=torch.Generator().manual_seed(0))[:sample_size]
    val_set.subset(pick.sort().values).save(folder / "val_sample.npz", jpeg_quality=90)
    return cards


def training_starts(info: dict[str, Any]) -> str:
    """Where a prepared folder's demonstrations started: ``sampled``, ``benchmark`` or ``mixed``
    (folders prepared before starts were recorded all used the benchmark's init states)."""
    return str(info.get("starts", "benchmark"))


def training_data_label(info: dict[str, Any]) -> str:
    """How every table and card names a model's training data."""
    modality = info.get("modality", "rgb")
    starts = training_starts(info)
    if starts == "sampled":
        return f"{modality}, demonstrations from sampled init states (held out from evaluation)"
    return f"{modality}, trained on the evaluation init states" + (" (in part)" if starts == "mixed" else "")


def _generation_lines(gen: dict[str, Any] | None) -> list[str]:
    if not gen:
        return []
    start = gen.get("start", "benchmark")
    where = (
        f"{gen['episodes']} starts per task sampled from the BDDL regions (none of the benchmark's)"
        if start == "sampled"
        else f"{gen['episodes']} of the benchmark's init states per task (the evaluation's own)"
    )
    dart = (
        f", DART noise {gen['dart_std']} (correlation {gen['dart_correlation']})"
        if gen.get("dart_std")
        else ""
    )
    return [
        f"Demonstrations: the scripted expert from {where}"
        + (f", {gen['repeats']} episodes from each" if gen.get("repeats", 1) > 1 else "")
        + f", action noise {gen['noise_std']}{dart}, waypoint noise {gen['waypoint_noise']} m, seed {gen['seed']}.",
        "",
    ]


def _per_task(info: dict[str, Any]) -> str:
    cap = info.get("max_per_task")
    return f", the first {cap} demonstrations of each task" if cap else ""


def cards_markdown(cards: dict[str, dict[str, Any]], info: dict[str, Any]) -> str:
    """A README table of the cards: parameters, steps, wall time, device, validation metrics."""
    layers = info["actions"]["num_layers"]
    head = ["model", "parameters", "steps", "train time", "device"] + [f"acc L{i}" for i in range(layers)]
    head += ["action MAE", "val loss"]
    observed = "object poses" if info.get("modality") == "lowdim" else f"{info['image_size']} px images"
    lines = [
        f"# Shipped models: {info['suite']}",
        "",
        f"Training data: **{training_data_label(info)}**.",
        "",
        f"Trained on the scripted-expert demonstrations of {info['suite']} "
        f"({info['splits']['train']['episodes']} training and {info['splits']['val']['episodes']} validation "
        f"episodes{_per_task(info)}, split by episode; a chunk starting every {info['stride']} steps; "
        f"{observed}; proprio orientation read as {info.get('proprio_orientation', 'axis_angle')}). "
        "Regenerate with `scripts/train_policies.py` (see the main README). Metrics are on the validation "
        "episodes: token accuracy is teacher-forced (the true coarser layers given), action MAE is the "
        "mean absolute error of the greedy decoded chunk in environment units.",
        "",
        *(_generation_lines(info.get("generation"))),
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, card in cards.items():
        t, v = card["training"], card["validation"]
        accs = [f"{v[f'acc_layer{i}']:.3f}" if f"acc_layer{i}" in v else "" for i in range(layers)]
        mae = f"{v['action_mae']:.4f}" if "action_mae" in v else ""
        done, planned = t.get("steps_done", t["schedule"]["steps"]), t["schedule"]["steps"]
        row = [
            name,
            f"{card.get('parameters', t['parameters']):,}",
            str(planned) if done == planned else f"{done} of {planned} (time limit)",
            f"{t['seconds'] / 60:.1f} min",
            t["device"],
        ]
        lines.append("| " + " | ".join(row + accs + [mae, f"{v.get('loss', float('nan')):.4f}"]) + " |")
    return "\n".join(lines) + "\n"
