"""Stage 2 of the training recipe: train every model of a prepared folder.

:func:`train_models` runs anywhere torch runs (this CPU, or a GPU machine the prepared folder
was copied to). Each model gets ``<out>/<name>/`` with its checkpoint and ``log.jsonl``, and
resumes from there.

The models (:data:`MODELS`): the main policy ``rfsq_ar``, the baselines ``rfsq_parallel``,
``l1_regression`` and ``fast_ar`` on the same trunk, the two drafters: ``head_drafter``
(reads the main trunk's prefix states; trained after the main policy, on its frozen trunk) and
``tiny_policy`` (a small independent ``rfsq_ar``), and ``depth_head``, the ``learned`` depth
monitor's model (reads the main trunk's pooled prefix state; trained after the main policy, on its
frozen trunk, to predict how much the finer RFSQ layers still add to each demonstration chunk,
its targets decoded once from the packed tokens with the prepared folder's RFSQ tokenizer).

Both drafters imitate the demonstrations' tokens. Distilling them from the main policy's own
greedy tokens would target acceptance more directly, but the main policy is trained in the same
run, so imitation keeps the drafters trainable in parallel with it and their accuracy comparable
with the main policy's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from rsdlib.experiments.prepare import FAST_DIR, PREPARED_FILE, RFSQ_DIR, TRAIN_FILE, VAL_FILE, read_prepared
from rsdlib.experiments.validation import evaluate_policy, validation_loss
from rsdlib.policies import checkpoints
from rsdlib.policies.configuration import ActionSpace, HeadDrafterConfig, PolicyConfig, TrunkConfig
from rsdlib.policies.depth_head import (
    DepthHeadConfig,
    ResidualNormHead,
    depth_head_loss,
    evaluate_depth_head,
    remaining_residual,
)
from rsdlib.policies.drafters import HeadDrafter, head_drafter_loss
from rsdlib.policies.heads import RFSQAutoregressive, build_policy
from rsdlib.policies.packed import PackedBatches, PackedChunks
from rsdlib.policies.processor import build_instruction_vocab
from rsdlib.results import describe_device, write_json
from rsdlib.tokenizers import rfsq as rfsq_tokenizer
from rsdlib.train import TrainConfig, train

#: Every model the recipe knows, in training order (the head drafter and the depth head need the
#: main policy).
MODELS = ("rfsq_ar", "rfsq_parallel", "l1_regression", "fast_ar", "tiny_policy", "head_drafter", "depth_head")


@dataclass(frozen=True)
class Sizes:
    """Trunk sizes of the main policy and baselines (``main``) and of the tiny drafter (``tiny``),
    the head drafter's width, blocks and whether it reads the main policy's token embedding and
    output layer (``HeadDrafterConfig.shares_main_io``), and the depth head's width."""

    main: TrunkConfig = field(
        default_factory=lambda: TrunkConfig(
            hidden_size=192, num_layers=4, num_heads=6, intermediate_size=576,
            image_size=64, image_channels=(32, 64, 64, 128),
        )
    )  # fmt: skip
    tiny: TrunkConfig = field(
        default_factory=lambda: TrunkConfig(
            hidden_size=64, num_layers=2, num_heads=2, intermediate_size=192,
            image_size=64, image_channels=(16, 32, 32, 64),
        )
    )  # fmt: skip
    head_hidden: int = 192
    head_blocks: int = 2
    head_shares_main_io: bool = False
    depth_head_hidden: int = 64


#: The lowdim track's sizes: its prefix is a few object tokens, so a narrower trunk trains in
#: minutes on a CPU.
LOWDIM_SIZES = Sizes(
    main=TrunkConfig(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=384),
    tiny=TrunkConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=192),
    head_hidden=128,
    # The head's embedding and output layer are half its weights: sharing the main policy's keeps
    # a suite's shipped folder ~1.8 MB smaller (four suites fit checkpoints/'s 60 MB).
    head_shares_main_io=True,
)


def default_sizes(prepared: dict[str, Any]) -> Sizes:
    """The recipe's sizes for the modality a prepared folder was packed for."""
    return LOWDIM_SIZES if prepared.get("modality", "rgb") == "lowdim" else Sizes()


@dataclass(frozen=True)
class Schedule:
    """Optimisation of one model (``rsdlib.train.TrainConfig`` plus batch size).

    With ``minutes``, the step count is chosen on the machine that trains: a copy of the model
    takes a few timed steps first, and ``steps`` becomes what fits in the time (recorded in the
    model's ``training.json``; the run is then reproducible by giving that ``steps``).
    """

    steps: int = 6000
    batch_size: int = 128
    lr: float = 3e-4
    warmup_steps: int = 300
    eval_every: int = 1000
    augment: bool = True
    minutes: float | None = None  # set: ``steps`` is what fits in this time, timed on the device first


#: Models whose default schedule is not :class:`Schedule`'s: the depth head is a small MLP with one
#: number per layer to learn, so a short run at a higher rate does.
DEFAULT_SCHEDULES: dict[str, Schedule] = {
    "depth_head": Schedule(steps=1500, batch_size=128, lr=1e-3, warmup_steps=100, eval_every=500),
}


def default_schedule(name: str) -> Schedule:
    """The schedule model ``name`` trains with when none is given."""
    return DEFAULT_SCHEDULES.get(name, Schedule())


def model_config(
    name: str, prepared: dict[str, Any], sizes: Sizes | None = None
) -> PolicyConfig | HeadDrafterConfig | DepthHeadConfig:
    """The config of model ``name`` for the data described by ``prepared``."""
    sizes = sizes or default_sizes(prepared)
    space = ActionSpace(**prepared["actions"])
    vocab = build_instruction_vocab(prepared["instructions"])
    trunk = sizes.tiny if name == "tiny_policy" else sizes.main
    # Data prepared before the option existed was read as axis-angle.
    trunk = replace(trunk, proprio_orientation=prepared.get("proprio_orientation", "axis_angle"))
    if prepared.get("modality", "rgb") == "lowdim":
        trunk = replace(
            trunk, modality="lowdim", object_kinds=tuple(prepared["object_kinds"]),
            max_objects=prepared["max_objects"], instruction_vocab=vocab,
            observation_stats=prepared.get("observation_stats", {}),
        )  # fmt: skip
    else:
        trunk = replace(trunk, image_size=prepared["image_size"], instruction_vocab=vocab)
    if name == "head_drafter":
        return HeadDrafterConfig(
            trunk_hidden_size=sizes.main.hidden_size, hidden_size=sizes.head_hidden,
            num_blocks=sizes.head_blocks, shares_main_io=sizes.head_shares_main_io, actions=space,
        )  # fmt: skip
    if name == "depth_head":
        return DepthHeadConfig(
            trunk_hidden_size=sizes.main.hidden_size, hidden_size=sizes.depth_head_hidden,
            num_layers=space.num_layers,
        )  # fmt: skip
    head = "rfsq_ar" if name == "tiny_policy" else name
    if head not in ("rfsq_ar", "rfsq_parallel", "l1_regression", "fast_ar"):
        raise ValueError(f"unknown model {name!r}; known: {MODELS}")
    return PolicyConfig(head=head, trunk=trunk, actions=space)


def _metadata(name: str) -> dict[str, Any]:
    """Where a model's tokenizer and normaliser are, relative to its checkpoint folder."""
    if name == "fast_ar":
        return {"tokenizer": f"../{FAST_DIR}"}
    if name == "l1_regression":
        return {"normaliser": f"../{RFSQ_DIR}"}  # the tokenizers share the data's normaliser
    return {"tokenizer": f"../{RFSQ_DIR}"}


def train_models(
    prepared_dir: str | Path,
    out: str | Path,
    *,
    models: Sequence[str] = MODELS,
    schedules: dict[str, Schedule] | None = None,
    sizes: Sizes | None = None,
    device: str | None = None,
    seed: int = 0,
    progress: bool = True,
    deadline_minutes: float | None = None,
) -> dict[str, float]:
    """Train ``models`` on a prepared folder; checkpoints go to ``<out>/<name>/`` (resumable).

    The prepared folder's tokenizers are copied into ``out`` so the checkpoints' metadata paths
    (``../tokenizer_rfsq``, ``../tokenizer_fast``) resolve wherever ``out`` is moved.

    Args:
        schedules: per-model :class:`Schedule` (missing names use :func:`default_schedule`).
        device: ``cuda``, ``cpu`` or None (cuda when there is one).
        deadline_minutes: per model, stop after this much wall time even if steps remain (a
            checkpoint is written there; calling again resumes). A safety net for time limits.

    Returns:
        Training wall time in seconds per model.
    """
    import shutil

    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown models {unknown}; known: {MODELS}")
    prepared_dir, out = Path(prepared_dir), Path(out)
    info = read_prepared(prepared_dir)
    sizes = sizes or default_sizes(info)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out.mkdir(parents=True, exist_ok=True)
    for folder in (RFSQ_DIR, FAST_DIR):
        if (prepared_dir / folder).resolve() != (out / folder).resolve():
            shutil.copytree(prepared_dir / folder, out / folder, dirs_exist_ok=True)
    if (prepared_dir / RFSQ_DIR).resolve() != (out / RFSQ_DIR).resolve():
        rfsq_tokenizer.compact(out / RFSQ_DIR)  # ships in float16, like the models (see its docstring)
    (out / PREPARED_FILE).write_text(json.dumps(info, indent=1))
    train_set = PackedChunks.load(prepared_dir / TRAIN_FILE).to(device)
    val_set = PackedChunks.load(prepared_dir / VAL_FILE).to(device)
    decoders = _decoders(prepared_dir)
    schedules = schedules or {}
    seconds = {}
    for name in models:
        schedule = schedules.get(name) or default_schedule(name)
        config = model_config(name, info, sizes)
        meta = _metadata(name) | {"model": name, "suite": info["suite"], "schedule": asdict(schedule)}
        per_chunk, evaluate_fn, record = None, None, {}
        if isinstance(config, HeadDrafterConfig | DepthHeadConfig):
            meta["main"] = "../rfsq_ar"
            main = _frozen_main(out / "rfsq_ar", device)
            trunk = main.config.trunk
        if isinstance(config, HeadDrafterConfig):
            model = HeadDrafter(config=replace(config, metadata=meta)).to(device)
            if config.shares_main_io:
                model.attach(main)

            def make_loss(m, main=main):
                return head_drafter_loss(main, m)

            loss_fn = make_loss(model)
        elif isinstance(config, DepthHeadConfig):
            train_targets, val_targets = (
                _depth_targets(part, decoders, prepared_dir).to(device) for part in (train_set, val_set)
            )
            per_chunk = {"remaining": train_targets}
            record["targets"] = _target_summary(train_targets)
            model = ResidualNormHead(config=replace(config, metadata=meta)).to(device)
            model.start_at(train_targets)

            def make_loss(m, main=main):
                return depth_head_loss(main, m)

            def evaluate_fn(m, main=main, val_targets=val_targets):
                return evaluate_depth_head(m, main, val_set, val_targets)

            loss_fn = make_loss(model)
        else:
            model = build_policy(replace(config, metadata=meta)).to(device)
            loss_fn = make_loss = None
            trunk = config.trunk
        batches = PackedBatches(
            train_set, trunk_config=trunk, batch_size=schedule.batch_size, augment=schedule.augment,
            per_chunk=per_chunk,
        )  # fmt: skip
        if schedule.minutes is not None:
            saved = out / name / "last" / checkpoints.CONFIG
            if saved.is_file():  # resuming: keep the step count chosen when the run began
                meta["schedule"] = json.loads(saved.read_text())["config"]["metadata"]["schedule"]
            else:
                step_s = time_steps(model, batches, make_loss)
                steps = max(1, int(schedule.minutes * 60 / (step_s * LOOP_OVERHEAD)))
                meta["schedule"] = asdict(replace(schedule, steps=steps, minutes=None)) | {
                    "timed_step_s": step_s
                }
            schedule = replace(schedule, steps=meta["schedule"]["steps"], minutes=None)
            model = checkpoints.with_metadata(model, meta)

        def validate(m, loss_fn=loss_fn, trunk=trunk, evaluate_fn=evaluate_fn) -> dict[str, float]:
            if evaluate_fn is not None:  # the depth head: its own metrics
                return evaluate_fn(m)
            if loss_fn is not None or decoders is None:  # the head drafter, or no tokenizer code here
                return validation_loss(m, val_set, trunk, loss_fn)
            return evaluate_policy(m, val_set, batch_size=256, **decoders)

        config_t = TrainConfig(
            steps=schedule.steps, lr=schedule.lr, warmup_steps=min(schedule.warmup_steps, schedule.steps),
            seed=seed, log_every=max(1, min(50, schedule.steps // 20)), checkpoint_every=max(1, schedule.steps // 4),
            eval_every=schedule.eval_every, progress=progress,
        )  # fmt: skip
        t0 = time.perf_counter()
        deadline = None if deadline_minutes is None else time.time() + 60 * deadline_minutes
        result = train(
            model, batches=batches, config=config_t, run_dir=out / name, loss_fn=loss_fn, evaluate=validate,
            deadline=deadline,
        )  # fmt: skip
        seconds[name] = time.perf_counter() - t0
        # The shipped checkpoint is the last one without its optimizer state (``last/`` keeps
        # that for resuming and is not shipped), its weights stored in float16 (half the bytes;
        # upcast on load, see checkpoints.compact for what that changes).
        for file in (checkpoints.WEIGHTS, checkpoints.CONFIG):
            shutil.copy2(out / name / "last" / file, out / name / file)
        checkpoints.compact(out / name)
        write_json(out / name / "training.json", {
            "model": name, "device": describe_device(device), "seconds": seconds[name],
            "schedule": meta["schedule"], "steps_done": result.steps_done, "parameters": sum(p.numel() for p in model.parameters()),
            "train_chunks": len(train_set), "val_chunks": len(val_set), **record,
        })  # fmt: skip
    return seconds


def _frozen_main(folder: Path, device: str) -> RFSQAutoregressive:
    """The trained main policy, frozen, for the models trained on its trunk."""
    main = checkpoints.load(folder)
    if not isinstance(main, RFSQAutoregressive):
        raise checkpoints.CheckpointError(f"{folder} is not an rfsq_ar policy")
    return main.to(device).eval().requires_grad_(False)


def _depth_targets(data: PackedChunks, decoders: dict[str, Any] | None, prepared_dir: Path) -> torch.Tensor:
    """``(M, L)`` the depth head's targets for packed chunks (see ``remaining_residual``)."""
    if decoders is None:
        raise RuntimeError(
            "the depth head's targets are decoded with the RFSQ tokenizer of "
            f"{prepared_dir / RFSQ_DIR}, whose code (rsdlib.tokenizers) cannot be imported here: "
            "install the project's tokenizer dependencies, or train depth_head where they are"
        )
    if data.tokens is None:
        raise ValueError(
            f"the chunks of {prepared_dir} hold no RFSQ tokens: prepare them with the RFSQ tokenizer"
        )
    return remaining_residual(decoders["tokenizer"], data.tokens)


def _target_summary(targets: torch.Tensor) -> dict[str, list[float]]:
    """Per layer k, the training chunks' remaining residual: where a threshold would cut."""
    t = targets.double().cpu()
    return {
        "remaining_mean": t.mean(dim=0).tolist(),
        "remaining_median": t.median(dim=0).values.tolist(),
        "remaining_p90": t.quantile(0.9, dim=0).tolist(),
    }


#: The training loop's sustained time per step over the probe's (:func:`time_steps` times bare
#: steps; the loop adds logging, validation and checkpoints, and a CPU slows under sustained
#: load). Measured on the 2-core CPU: 1.05-1.28 per lowdim model (recipe of 2026-11-30), 1.27
#: for ``rfsq_ar`` on 200 demos per task (0.40 s against 0.314).
LOOP_OVERHEAD = 1.2


def time_steps(model, batches: PackedBatches, make_loss=None, *, warmup: int = 5, timed: int = 15) -> float:
    """Seconds per training step of a throwaway copy of ``model`` (forward, backward, AdamW).

    ``make_loss(model) -> loss_fn`` builds the loss of a model whose loss is not its own method.
    """
    import copy

    probe = copy.deepcopy(model).train()
    loss_fn = make_loss(probe) if make_loss is not None else None
    optimizer = torch.optim.AdamW([p for p in probe.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    for i in range(warmup + timed):
        if i == warmup:
            _sync(probe)
            t0 = time.perf_counter()
        loss, _ = (loss_fn or probe.loss)(batches(i, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(probe)
    return (time.perf_counter() - t0) / timed


def _sync(model) -> None:
    if next(model.parameters()).is_cuda:
        torch.cuda.synchronize()


def _decoders(prepared_dir: Path) -> dict[str, Any] | None:
    """What the validation needs to decode actions (``action_mae`` in the log): the tokenizers and
    the denormaliser; None where the tokenizers' code is not installed (a bare GPU machine), and
    the log then holds the loss and token accuracy only."""
    try:
        from rsdlib.tokenizers import load_tokenizer
    except ImportError:
        return None
    rfsq, fast = load_tokenizer(prepared_dir / RFSQ_DIR), load_tokenizer(prepared_dir / FAST_DIR)
    return {
        "tokenizer": rfsq,
        "fast_tokenizer": fast,
        "denormalize": lambda x: rfsq.normaliser.denormalise(torch.as_tensor(x)).numpy(),
    }
