"""Distil a draft head on the main policy's own greedy tokens.

``exact`` accepts a drafted layer only when every token is the main policy's argmax, and the lossy
rules judge drafts against that argmax too. A head that imitates the demonstrations learns the
wrong target wherever the main policy is unsure (its argmax and the demonstration then differ).
Distillation trains the head on what it is judged on: the main policy's greedy tokens, each layer
conditioned on the main policy's own coarser layers (what RSD feeds the head after acceptance).
Beside the demonstrations' states it can learn on closed-loop ones, the states the main policy
itself visits in LIBERO episodes (:mod:`rsdlib.libero.policy_rollouts`): where RSD runs.

The main policy is frozen and images are not augmented, so its prefix states are computed once
per chunk and kept (float16): training then runs the head alone, fast enough on a CPU. A head that
reads the main trunk's block states (``reads_blocks``, EAGLE-style) also gets the states of every
block, teacher forced on the greedy tokens: what the decoder hands it after each verify pass.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsdlib.decoding.plain import decode_rfsq_ar
from rsdlib.experiments.prepare import read_prepared
from rsdlib.libero.dataset import load_demos
from rsdlib.policies import checkpoints
from rsdlib.policies.drafters import HeadDrafter
from rsdlib.policies.heads import RFSQAutoregressive
from rsdlib.policies.packed import PackedChunks
from rsdlib.progress import progress as progress_bar
from rsdlib.train import TrainConfig, train


@dataclass
class Targets:
    """What the head reads and what it must predict, per chunk.

    Attributes:
        prefix_hidden: ``(n, P, D)`` the main trunk's prefix states (float16).
        prefix_valid: ``(n, P)`` which prefix positions are real.
        tokens: ``(n, L, N)`` the main policy's greedy tokens.
        block_hidden: ``(n, L, N, D)`` the main trunk's states of every block on those tokens
            (float16), for a head that reads them; else None.
    """

    prefix_hidden: torch.Tensor
    prefix_valid: torch.Tensor
    tokens: torch.Tensor
    block_hidden: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def cat(cls, parts: list[Targets]) -> Targets:
        """The targets of several sets of chunks, one after the other."""
        blocks = [p.block_hidden for p in parts]
        return cls(
            torch.cat([p.prefix_hidden for p in parts]),
            torch.cat([p.prefix_valid for p in parts]),
            torch.cat([p.tokens for p in parts]),
            None if any(b is None for b in blocks) else torch.cat(blocks),
        )

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = {
            "prefix_hidden": self.prefix_hidden[index].float(),
            "prefix_valid": self.prefix_valid[index],
            "tokens": self.tokens[index],
        }
        if self.block_hidden is not None:
            batch["block_hidden"] = self.block_hidden[index].float()
        return batch


@torch.no_grad()
def main_targets(
    main: RFSQAutoregressive,
    chunks: PackedChunks,
    *,
    with_blocks: bool = False,
    batch_size: int = 256,
    progress: bool = True,
) -> Targets:
    """Prefix states and greedy tokens of ``main`` on every chunk (no augmentation), and with
    ``with_blocks`` the block states teacher forced on those tokens."""
    hidden, valid, tokens, blocks = [], [], [], []
    batches = chunks.batches(batch_size, trunk_config=main.config.trunk)
    for batch in progress_bar(
        batches, total=-(-len(chunks) // batch_size), desc="main greedy tokens", disable=not progress
    ):
        obs = main.prepare(batch["obs"])
        state = main.trunk.prefix(obs, use_cache=False)
        hidden.append(state.prefix_hidden.half())
        valid.append(state.prefix_valid)
        tokens.append(decode_rfsq_ar(main, obs).tokens)
        if with_blocks:
            blocks.append(main.teacher_forced(obs, tokens[-1]).hidden.half())
    return Targets(
        torch.cat(hidden), torch.cat(valid), torch.cat(tokens), torch.cat(blocks) if blocks else None
    )


def closed_loop_chunks(
    root: str | Path, prepared: str | Path, *, progress: bool = True
) -> tuple[PackedChunks, PackedChunks]:
    """Training and validation chunks of the policy rollouts under ``root`` for the prepared
    folder's suite, split by episode and packed as the prepared folder was (horizon, share held
    out, stride, seed). Only observations matter here: the targets are the main policy's tokens."""
    info = read_prepared(prepared)
    if info.get("modality") != "lowdim":
        raise ValueError(
            "closed-loop states are recorded without images: distil a lowdim main policy with them"
        )
    data = load_demos(
        info["suite"], root=root, horizon=info["horizon"], val_fraction=info["val_fraction"],
        rng=np.random.default_rng(info["seed"]), images=False, objects=True,
    )  # fmt: skip
    train_part, val_part = (
        PackedChunks.from_dataset(split, stride=info["stride"], progress=progress)
        for split in (data.train, data.val)
    )
    return train_part, val_part


def agreement(head: HeadDrafter, targets: Targets, *, batch_size: int = 1024) -> dict[str, float]:
    """Teacher-forced loss and per-layer token agreement of ``head`` with the main greedy tokens."""
    sums: dict[str, float] = {}
    training = head.training
    head.eval()
    with torch.no_grad():
        for start in range(0, len(targets), batch_size):
            index = torch.arange(start, min(start + batch_size, len(targets)))
            for k, v in head.loss(targets.batch(index))[1].items():
                sums[k] = sums.get(k, 0.0) + v * len(index)
    head.train(training)
    return {k: v / len(targets) for k, v in sums.items()}


def distill_head_drafter(
    models: str | Path,
    prepared: str | Path,
    *,
    out: str | Path | None = None,
    steps: int = 3000,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    reads_blocks: bool = False,
    shares_main_io: bool = False,
    closed_loop: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``<models>/head_drafter`` on ``<models>/rfsq_ar``'s greedy tokens.

    Args:
        models: a models folder (``rsdlib.policies.recipe`` layout).
        prepared: the prepared folder the models were trained from (its ``train.npz`` and
            ``val.npz``).
        out: where the distilled head goes (default ``<models>/head_drafter``, replaced).
        steps, batch_size, lr: the schedule of :func:`rsdlib.train.train` (AdamW, warmup, cosine).
        reads_blocks: make the head read the main trunk's block states too (EAGLE-style): a head
            that does not yet is extended, its trained weights kept and the new inputs learnt.
        shares_main_io: make the head read the main policy's token embedding and output layer
            instead of its own (``HeadDrafterConfig.shares_main_io``; half the head's weights,
            which it then no longer stores): a head with its own drops them and keeps the rest.
        closed_loop: a root of policy rollouts (``<root>/<suite>/*_demo.hdf5``, written by
            :func:`~rsdlib.libero.policy_rollouts.collect_policy_rollouts`): their states join the
            training chunks, split by episode as the prepared folder was, and the report gives the
            agreement on their held-out episodes too (``val_closed_loop_before`` / ``_after``).

    Returns:
        A report: agreement on the validation split before and after, steps, seconds.
    """

    models, prepared = Path(models), Path(prepared)
    out = Path(out) if out else models / "head_drafter"
    main = checkpoints.load(models / "rfsq_ar").eval().requires_grad_(False)
    if not isinstance(main, RFSQAutoregressive):
        raise checkpoints.CheckpointError(f"{models / 'rfsq_ar'} is not an rfsq_ar policy")
    head = checkpoints.load(models / "head_drafter")
    if not isinstance(head, HeadDrafter):
        raise checkpoints.CheckpointError(f"{models / 'head_drafter'} is not a head drafter")
    if reads_blocks and not head.config.reads_blocks:
        extended = HeadDrafter(config=dataclasses.replace(head.config, reads_blocks=True))
        missing = extended.load_state_dict(head.state_dict(), strict=False).missing_keys
        assert all(k.startswith(("block_proj.", "stale_embed.")) for k in missing), missing
        head = extended
    converted = shares_main_io and not head.config.shares_main_io
    if converted:
        own_io = ("token_embed.", "out_weight", "out_bias")
        kept = {k: v for k, v in head.state_dict().items() if not k.startswith(own_io)}
        head = HeadDrafter(config=dataclasses.replace(head.config, shares_main_io=True))
        head.load_state_dict(kept)
    head = checkpoints.attach_head(head, main, models / "head_drafter")
    blocks = head.config.reads_blocks
    t0 = time.perf_counter()
    targets = main_targets(
        main, PackedChunks.load(prepared / "train.npz"), with_blocks=blocks, progress=progress
    )
    val = main_targets(main, PackedChunks.load(prepared / "val.npz"), with_blocks=blocks, progress=progress)
    val_closed, demo_chunks = None, len(targets)
    if closed_loop is not None:
        train_closed, val_closed = (
            main_targets(main, part, with_blocks=blocks, progress=progress)
            for part in closed_loop_chunks(closed_loop, prepared, progress=progress)
        )
        targets = Targets.cat([targets, train_closed])
    targets_s = time.perf_counter() - t0
    before = agreement(head, val)
    before_closed = None if val_closed is None else agreement(head, val_closed)

    def batches(step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return targets.batch(torch.randint(len(targets), (batch_size,), generator=generator))

    config = TrainConfig(
        steps=steps, lr=lr, warmup_steps=min(100, steps), seed=seed, log_every=max(1, min(50, steps // 20)),
        checkpoint_every=max(1, steps // 4), eval_every=max(1, steps // 3), progress=progress,
    )  # fmt: skip
    t1 = time.perf_counter()
    # The shared loop: resumable from <out>/distill/last, its log in <out>/distill/log.jsonl.
    train(head, batches=batches, config=config, run_dir=out / "distill", loss_fn=head.loss,
          evaluate=lambda m: agreement(m, val))  # fmt: skip
    train_s = time.perf_counter() - t1
    after = agreement(head, val)
    meta = dict(head.config.metadata or {}) | {
        "distilled": {
            "on": "rfsq_ar greedy tokens",
            "reads_blocks": blocks,
            "shares_main_io": head.config.shares_main_io,
            # its embedding and output layer dropped for the main policy's, the rest kept
            "converted_from_own_io": converted,
            "steps": steps,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "closed_loop": None if closed_loop is None else str(closed_loop),
        }
    }
    head = checkpoints.with_metadata(head, meta)
    trained = json.loads((models / "head_drafter" / checkpoints.CONFIG).read_text()).get("metadata", {})
    # How the head was first trained stays on record; stored in float16 like every shipped model.
    checkpoints.save(head, out, metadata=trained, storage_dtype=torch.float16)
    report = {
        "train_chunks": demo_chunks,
        "val_chunks": len(val),
        "targets_s": round(targets_s, 1),
        "train_s": round(train_s, 1),
        "val_before": before,
        "val_after": after,
        **meta["distilled"],
    }
    if val_closed is not None:
        report |= {
            "closed_loop_train_chunks": len(targets) - demo_chunks,
            "closed_loop_val_chunks": len(val_closed),
            "val_closed_loop_before": before_closed,
            "val_closed_loop_after": agreement(head, val_closed),
        }
    (out / "distilled.json").write_text(json.dumps(report, indent=1) + "\n")
    return report
