"""Levels per RFSQ layer: what coarse layers with fewer codes cost in reconstruction and buy in drafting.

``exact`` accepts a drafted layer only if all N of its tokens equal the main policy's greedy
ones; a layer of 4 tokens of 10 binary FSQ digits asks 40 binary decisions to agree. Coarse
layers with fewer codes ask fewer. One setting of levels here is measured on the same prepared
data as every other (:func:`~rsdlib.experiments.prepare.retokenize`): the tokenizer refitted,
the main policy (``rfsq_ar``) and the head drafter trained for the same steps, the head distilled
on the main policy's greedy tokens; then, on validation chunks,

- reconstruction MSE per prefix depth k (normalised units; the design's targets: < 1e-3 with all
  layers, < 1e-2 with two);
- the main policy's teacher-forced token accuracy per layer (demonstration tokens);
- the distilled head's agreement with the main greedy tokens per layer, per token and per whole
  layer (the layer is what ``exact`` accepts);
- ``exact`` RSD with the distilled head: acceptance per layer and main passes per chunk, against
  the ``L - 1`` passes of plain decoding (its tokens are checked equal to plain greedy decoding).

Levels are written ``2x10`` (ten channels of two levels, every layer), ``8,5,5,5``, or one group
per layer, ``2x6/2x6/3x6/3x6``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch

from rsdlib.experiments.distill import distill_head_drafter
from rsdlib.experiments.prepare import RFSQ_DIR, VAL_FILE, retokenize
from rsdlib.experiments.train_models import Schedule, Sizes, train_models
from rsdlib.experiments.validation import main_token_accuracy, rsd_on_chunks
from rsdlib.policies import checkpoints
from rsdlib.policies.packed import PackedChunks
from rsdlib.tokenizers import RFSQTokenizer
from rsdlib.tokenizers.evaluate import evaluate_tokenizer

#: Whole-layer acceptance a GPU needs for ``exact`` to beat plain decoding by 1.5x (DESIGN.md, section 2).
NEEDED_LAYER_ACCEPTANCE = 0.65
ROW_FILE, DISTILLED_DIR = "row.json", "head_distilled"


def parse_levels(text: str) -> list[int] | list[list[int]]:
    """``"2x10"`` -> ten 2s; ``"8,5,5,5"``; ``"2x6/2x6/3x6/3x6"`` -> one list per layer."""

    def group(part: str) -> list[int]:
        out: list[int] = []
        for item in part.split(","):
            level, _, times = item.strip().partition("x")
            try:
                out += [int(level)] * (int(times) if times else 1)
            except ValueError:
                raise ValueError(f"levels {text!r}: write 2x10, 8,5,5,5 or 2x6/2x6/3x6/3x6") from None
        return out

    parts = text.split("/")
    return [group(p) for p in parts] if len(parts) > 1 else group(parts[0])


@dataclass(frozen=True)
class SweepBudget:
    """The same for every setting, so that settings differ only in their levels.

    Attributes:
        tokenizer_steps: RFSQ training steps.
        main_steps, head_steps: ``rfsq_ar`` and head-drafter training steps (head on demonstration
            tokens first, as the recipe does).
        distill_steps: head distillation steps on the main policy's greedy tokens.
        eval_chunks: validation chunks for the RSD measurement (evenly spread over the split).
        gammas: draft lengths RSD is measured at.
        batch_size: chunks per decoding batch.
        train_batch_size: chunks per training step (main policy and head).
    """

    tokenizer_steps: int = 3000
    main_steps: int = 1500
    head_steps: int = 300
    distill_steps: int = 1000
    eval_chunks: int = 512
    gammas: tuple[int, ...] = (2, 3)
    batch_size: int = 128
    train_batch_size: int = 128

    def schedule(self, steps: int) -> Schedule:
        """A training schedule of ``steps`` (warm-up a tenth of it, validated once at the end)."""
        return Schedule(steps=steps, batch_size=self.train_batch_size, warmup_steps=max(1, min(300, steps // 10)),
                        eval_every=steps)  # fmt: skip


def run_setting(
    name: str,
    levels: Sequence[int] | Sequence[Sequence[int]],
    prepared: str | Path,
    out: str | Path,
    budget: SweepBudget = SweepBudget(),
    *,
    sizes: Sizes | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure one setting of levels (resumable: each stage skips what ``<out>/<name>`` holds).

    Args:
        sizes: model sizes (default: the recipe's for the prepared data).

    Returns:
        The setting's row (also written to ``<out>/<name>/row.json``).
    """
    folder = Path(out) / name
    row_file = folder / ROW_FILE
    if row_file.is_file():
        row = json.loads(row_file.read_text())
        if row["levels"] == _as_list(levels) and row["budget"] == _budget_dict(budget):
            return row
    seconds: dict[str, float] = {}
    data, models = folder / "prepared", folder / "models"
    t0 = time.perf_counter()
    if not (data / "prepared.json").is_file():
        retokenize(
            prepared, data, {"levels": _as_list(levels), "steps": budget.tokenizer_steps}, progress=progress
        )
    seconds["tokenizer"] = time.perf_counter() - t0
    tokenizer = RFSQTokenizer.load(data / RFSQ_DIR)
    val = PackedChunks.load(data / VAL_FILE)
    mse = [r["mse_normalised"] for r in evaluate_tokenizer(tokenizer, val.actions_raw)]

    t0 = time.perf_counter()
    schedules = {
        "rfsq_ar": budget.schedule(budget.main_steps),
        "head_drafter": budget.schedule(budget.head_steps),
    }
    train_models(data, models, models=["rfsq_ar", "head_drafter"], schedules=schedules, sizes=sizes, device="cpu",
                 progress=progress)  # fmt: skip
    seconds["train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report_file = models / DISTILLED_DIR / "distilled.json"
    if not report_file.is_file():
        distill_head_drafter(
            models, data, out=models / DISTILLED_DIR, steps=budget.distill_steps, progress=progress
        )
    report = json.loads(report_file.read_text())
    seconds["distill"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    main = checkpoints.load(models / "rfsq_ar").eval()
    head = checkpoints.load_drafter(models / DISTILLED_DIR, main=main).eval()
    chunks = val.subset(torch.linspace(0, len(val) - 1, min(budget.eval_chunks, len(val))).long())
    rsd = rsd_on_chunks(main, head, chunks, gammas=budget.gammas, batch_size=budget.batch_size)
    seconds["rsd"] = time.perf_counter() - t0
    L = tokenizer.num_layers
    after = report["val_after"]
    row = {
        "name": name,
        "levels": _as_list(levels),
        "codes": list(tokenizer.layer_codebook_sizes),
        "bits_per_layer": [
            round(tokenizer.num_latents * math.log2(v), 2) for v in tokenizer.layer_codebook_sizes
        ],
        "mse": mse,
        "main_token_accuracy": main_token_accuracy(main, chunks, batch_size=budget.batch_size),
        "head_token_agreement": [after.get(f"acc_layer{li}") for li in range(L)],
        "head_layer_agreement": [after.get(f"match_layer{li}") for li in range(L)],
        "rsd": rsd,
        "plain_main_passes": L - main.prefix_layers,
        "val_chunks": len(chunks),
        "budget": _budget_dict(budget),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    row_file.write_text(json.dumps(row, indent=1) + "\n")
    return row


def plot_layer_levels(rows: Sequence[dict[str, Any]], *, gamma: int = 2) -> plt.Figure:
    """Four panels: reconstruction MSE per depth; the head's whole-layer agreement per layer; the
    same agreement against the main policy's token accuracy on that layer (a main policy that has
    learnt little of a layer answers alike everywhere, which any head copies: agreement is only
    comparable between main policies that know their layers alike); ``exact`` main passes per
    chunk at ``gamma`` against plain decoding's."""
    fig, (ax_mse, ax_agree, ax_known, ax_pass) = plt.subplots(1, 4, figsize=(17, 3.8))
    for i, row in enumerate(rows):
        label = f"{row['name']} ({'/'.join(str(c) for c in row['codes'])} codes)"
        depths = range(1, len(row["mse"]) + 1)
        ax_mse.plot(depths, row["mse"], marker="o", label=label)
        agree = row["head_layer_agreement"]
        layers = [li for li, a in enumerate(agree) if a is not None]
        ax_agree.plot(layers, [agree[li] for li in layers], marker="o", label=label)
        ax_known.scatter([row["main_token_accuracy"][li] for li in layers], [agree[li] for li in layers],
                         color=f"C{i}", label=label)  # fmt: skip
        for li in layers:
            ax_known.annotate(f"L{li}", (row["main_token_accuracy"][li], agree[li]), fontsize=7,
                              xytext=(3, 3), textcoords="offset points")  # fmt: skip
    num_layers = max(len(r["mse"]) for r in rows)
    ax_mse.set_xticks(range(1, num_layers + 1))
    ax_agree.set_xticks(range(num_layers))
    ax_mse.axhline(1e-3, ls="--", c="grey", lw=0.8)
    ax_mse.axhline(1e-2, ls=":", c="grey", lw=0.8)
    ax_mse.set(yscale="log", xlabel="layers decoded k", ylabel="reconstruction MSE (normalised)",
               title="reconstruction (targets: all < 1e-3, two < 1e-2)")  # fmt: skip
    ax_agree.axhline(NEEDED_LAYER_ACCEPTANCE, ls="--", c="grey", lw=0.8)
    ax_agree.set(ylim=(0, 1), xlabel="layer", ylabel="whole layers equal to main greedy",
                 title="distilled head agrees with the main policy")  # fmt: skip
    ax_known.set(xlim=(0, 1), ylim=(0, 1), xlabel="main policy's token accuracy (demonstrations)",
                 ylabel="whole layers equal to main greedy", title="agreement against what the main policy knows")  # fmt: skip
    key = f"g{gamma}"
    names = [r["name"] for r in rows]
    ax_pass.bar(names, [r["rsd"][key]["main_passes"] for r in rows], color="C0")
    ax_pass.axhline(rows[0]["plain_main_passes"], ls="--", c="grey", lw=0.8, label="plain decoding")
    ax_pass.set(ylabel="main passes per chunk after the prefix", title=f"exact RSD, gamma {gamma}")
    ax_pass.legend(fontsize=8)
    ax_agree.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _as_list(levels: Sequence[int] | Sequence[Sequence[int]]) -> list[int] | list[list[int]]:
    return [list(map(int, lv)) if isinstance(lv, (list, tuple)) else int(lv) for lv in levels]  # type: ignore[return-value]


def _budget_dict(budget: SweepBudget) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(budget).items()}
