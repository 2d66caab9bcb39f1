"""How the shipped models are made: prepare the data, train every model, describe the result.

Three stages, each usable alone (``scripts/train_policies.py`` runs them; notebook
``03_train_policies`` runs them on a smoke profile):

1. :func:`prepare` runs where the demonstrations are. It splits them by episode, fits the
   normaliser, the RFSQ tokenizer and the FAST tokenizer on the training episodes, and packs the
   training and validation chunks (:class:`~rsdlib.policies.packed.PackedChunks`) with their
   token targets. The folder it writes is all that training needs: no LIBERO, no HDF5.
2. :func:`train_models` runs anywhere torch runs (this CPU, or a GPU machine the prepared folder
   was copied to). Each model gets ``<out>/<name>/`` with its checkpoint and ``log.jsonl``, and
   resumes from there.
3. :func:`write_cards` decodes the validation split with every model and writes ``card.json``
   per model and a ``README.md`` table for the folder.

The models (:data:`MODELS`): the main policy ``rfsq_ar``, the baselines ``rfsq_parallel``,
``l1_regression`` and ``fast_ar`` on the same trunk, and the two drafters: ``head_drafter``
(reads the main trunk's prefix states; trained after the main policy, on its frozen trunk) and
``tiny_policy`` (a small independent ``rfsq_ar``). Both drafters imitate the demonstrations'
tokens. Distilling them from the main policy's own greedy tokens would target acceptance more
directly, but the main policy is trained in the same run, so imitation keeps the drafters
trainable in parallel with it and their accuracy comparable with the main policy's.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsdlib.policies import checkpoints
from rsdlib.policies.configuration import ActionSpace, HeadDrafterConfig, PolicyConfig, TrunkConfig
from rsdlib.policies.packed import PackedBatches, PackedChunks
from rsdlib.policies.processor import build_instruction_vocab

#: Files of a prepared folder.
TRAIN_FILE, VAL_FILE, PREPARED_FILE = "train.npz", "val.npz", "prepared.json"
RFSQ_DIR, FAST_DIR = "tokenizer_rfsq", "tokenizer_fast"

#: Every model the recipe knows, in training order (the head drafter needs the main policy).
MODELS = ("rfsq_ar", "rfsq_parallel", "l1_regression", "fast_ar", "tiny_policy", "head_drafter")


@dataclass(frozen=True)
class Sizes:
    """Trunk sizes of the main policy and baselines (``main``) and of the tiny drafter (``tiny``),
    and the head drafter's width."""

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


def prepare(
    suite: str,
    out: str | Path,
    *,
    demos_root: str | Path | None = None,
    horizon: int = 8,
    val_fraction: float = 0.1,
    stride: int = 2,
    seed: int = 0,
    rfsq: dict[str, Any] | None = None,
    fast: dict[str, Any] | None = None,
    jpeg_quality: int | None = None,
    progress: bool = True,
) -> Path:
    """Split, fit the tokenizers, pack: everything :func:`train_models` reads, in ``out``.

    Args:
        suite: the demonstrations' suite (``<demos_root>/<suite>/*_demo.hdf5``, with images).
        out: the prepared folder.
        demos_root: demonstrations root (default ``data/demos``).
        horizon: chunk length H.
        val_fraction: share of each task's episodes held out (split by episode).
        stride: pack every ``stride``-th chunk start of each episode.
        seed: the split's and the tokenizers' seed.
        rfsq: :class:`~rsdlib.tokenizers.RFSQTokenizer` settings over its defaults.
        fast: :class:`~rsdlib.tokenizers.FASTTokenizer` settings over its defaults.
        jpeg_quality: store images as JPEG (see :meth:`PackedChunks.save`); None: exact.
    """
    from rsdlib.libero.dataset import DEMOS_DIR, DemoDataset, load_demos
    from rsdlib.tokenizers import FASTTokenizer, RFSQTokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_demos(
        suite, root=demos_root or DEMOS_DIR, horizon=horizon, val_fraction=val_fraction,
        rng=np.random.default_rng(seed), images=True,
    )  # fmt: skip
    actions_only = DemoDataset(data.train.refs, data.normaliser, horizon, images=False)
    chunks = np.stack(
        [actions_only.chunk(*actions_only.locate(i))["actions_raw"] for i in range(len(actions_only))]
    )
    rfsq_tok = RFSQTokenizer(horizon=horizon, seed=seed, normaliser=data.normaliser, **(rfsq or {}))
    rfsq_tok.fit(chunks, progress=progress)
    rfsq_tok.save(out / RFSQ_DIR)
    fast_tok = FASTTokenizer(horizon=horizon, normaliser=data.normaliser, **(fast or {})).fit(chunks)
    fast_tok.save(out / FAST_DIR)
    # The length cap only sizes fast_ar's positions: it covers every chunk of both splits, so no
    # validation target is cut short.
    val_only = DemoDataset(data.val.refs, data.normaliser, horizon, images=False)
    val_chunks = [val_only.chunk(*val_only.locate(i))["actions_raw"] for i in range(len(val_only))]
    all_chunks = np.concatenate([chunks, np.stack(val_chunks)]) if val_chunks else chunks
    fast_lengths = [len(ids) for ids in fast_tok.encode(all_chunks)]
    fast_end, fast_max = fast_tok.vocab_size, max(fast_lengths) + 1
    space = ActionSpace.from_tokenizer(rfsq_tok, fast_vocab=fast_end + 1, fast_max_tokens=fast_max)
    sizes = {}
    for split, dataset in (("train", data.train), ("val", data.val)):
        packed = PackedChunks.from_dataset(
            dataset, stride=stride, tokenizer=rfsq_tok, fast_tokenizer=fast_tok,
            fast_end_token=fast_end, fast_max_tokens=fast_max, progress=progress,
        )  # fmt: skip
        packed.save(out / (TRAIN_FILE if split == "train" else VAL_FILE), jpeg_quality=jpeg_quality)
        sizes[split] = {"chunks": len(packed), "episodes": len(dataset.refs)}
    instructions = sorted({r.instruction for r in data.train.refs} | {r.instruction for r in data.val.refs})
    info = {
        "generation": _generation_config(data.train.refs[0].path),
        "suite": suite,
        "demos_root": str(demos_root or DEMOS_DIR),
        "image_size": packed.image_size,
        "horizon": horizon,
        "stride": stride,
        "val_fraction": val_fraction,
        "seed": seed,
        "jpeg_quality": jpeg_quality,
        "splits": sizes,
        "instructions": instructions,
        "actions": asdict(space),
        "rfsq": rfsq_tok.config(),
        "fast": fast_tok.config() | {"vocab": fast_tok.vocab_size, "max_tokens_seen": max(fast_lengths)},
    }
    (out / PREPARED_FILE).write_text(json.dumps(info, indent=1))
    return out


def _generation_config(path: str | Path) -> dict[str, Any] | None:
    """How a demonstration file was made (its ``generation_config`` attribute), if it says."""
    import h5py

    with h5py.File(path, "r") as f:
        raw = f["data"].attrs.get("generation_config")
        return None if raw is None else json.loads(raw)


def read_prepared(folder: str | Path) -> dict[str, Any]:
    """The ``prepared.json`` of a prepared folder (clear error when it is not one)."""
    file = Path(folder) / PREPARED_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"{folder} is not a prepared folder (no {PREPARED_FILE}); run prepare() first"
        )
    return json.loads(file.read_text())


def model_config(
    name: str, prepared: dict[str, Any], sizes: Sizes = Sizes()
) -> PolicyConfig | HeadDrafterConfig:
    """The config of model ``name`` for the data described by ``prepared``."""
    space = ActionSpace(**prepared["actions"])
    vocab = build_instruction_vocab(prepared["instructions"])
    trunk = sizes.tiny if name == "tiny_policy" else sizes.main
    trunk = replace(trunk, image_size=prepared["image_size"], instruction_vocab=vocab)
    if name == "head_drafter":
        return HeadDrafterConfig(
            trunk_hidden_size=sizes.main.hidden_size, hidden_size=sizes.head_hidden,
            num_blocks=sizes.head_blocks, actions=space,
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
    sizes: Sizes = Sizes(),
    device: str | None = None,
    seed: int = 0,
    progress: bool = True,
    deadline_minutes: float | None = None,
) -> dict[str, float]:
    """Train ``models`` on a prepared folder; checkpoints go to ``<out>/<name>/`` (resumable).

    The prepared folder's tokenizers are copied into ``out`` so the checkpoints' metadata paths
    (``../tokenizer_rfsq``, ``../tokenizer_fast``) resolve wherever ``out`` is moved.

    Args:
        schedules: per-model :class:`Schedule` (missing names use the default schedule).
        device: ``cuda``, ``cpu`` or None (cuda when there is one).
        deadline_minutes: per model, stop after this much wall time even if steps remain (a
            checkpoint is written there; calling again resumes). A safety net for time limits.

    Returns:
        Training wall time in seconds per model.
    """
    import shutil

    from rsdlib.policies.drafters import HeadDrafter, head_drafter_loss
    from rsdlib.policies.heads import RFSQAutoregressive, build_policy
    from rsdlib.train import TrainConfig, train

    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown models {unknown}; known: {MODELS}")
    prepared_dir, out = Path(prepared_dir), Path(out)
    info = read_prepared(prepared_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out.mkdir(parents=True, exist_ok=True)
    for folder in (RFSQ_DIR, FAST_DIR):
        if (prepared_dir / folder).resolve() != (out / folder).resolve():
            shutil.copytree(prepared_dir / folder, out / folder, dirs_exist_ok=True)
    (out / PREPARED_FILE).write_text(json.dumps(info, indent=1))
    train_set = PackedChunks.load(prepared_dir / TRAIN_FILE).to(device)
    val_set = PackedChunks.load(prepared_dir / VAL_FILE).to(device)
    decoders = _decoders(prepared_dir)
    schedules = schedules or {}
    seconds = {}
    for name in models:
        schedule = schedules.get(name, Schedule())
        config = model_config(name, info, sizes)
        meta = _metadata(name) | {"model": name, "suite": info["suite"], "schedule": asdict(schedule)}
        if isinstance(config, HeadDrafterConfig):
            meta["main"] = "../rfsq_ar"
            main = checkpoints.load(out / "rfsq_ar")
            if not isinstance(main, RFSQAutoregressive):
                raise checkpoints.CheckpointError(f"{out / 'rfsq_ar'} is not an rfsq_ar policy")
            main.to(device).eval().requires_grad_(False)
            model = HeadDrafter(config=replace(config, metadata=meta)).to(device)

            def make_loss(m, main=main):
                return head_drafter_loss(main, m)

            loss_fn = make_loss(model)
            trunk = main.config.trunk
        else:
            model = build_policy(replace(config, metadata=meta)).to(device)
            loss_fn = make_loss = None
            trunk = config.trunk
        batches = PackedBatches(
            train_set, trunk_config=trunk, batch_size=schedule.batch_size, augment=schedule.augment
        )
        if schedule.minutes is not None:
            saved = out / name / "last" / checkpoints.CONFIG
            if saved.is_file():  # resuming: keep the step count chosen when the run began
                meta["schedule"] = json.loads(saved.read_text())["config"]["metadata"]["schedule"]
            else:
                step_s = time_steps(model, batches, make_loss)
                steps = max(1, int(schedule.minutes * 60 / step_s))
                meta["schedule"] = asdict(replace(schedule, steps=steps, minutes=None)) | {
                    "timed_step_s": step_s
                }
            schedule = replace(schedule, steps=meta["schedule"]["steps"], minutes=None)
            model = _with_metadata(model, meta)

        def validate(m, loss_fn=loss_fn, trunk=trunk) -> dict[str, float]:
            if loss_fn is not None or decoders is None:  # the head drafter, or no tokenizer code here
                return _validation_loss(m, val_set, trunk, loss_fn)
            from rsdlib.policies.data import evaluate_policy

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
        # that for resuming and is not shipped).
        for file in (checkpoints.WEIGHTS, checkpoints.CONFIG):
            shutil.copy2(out / name / "last" / file, out / name / file)
        _write_json(out / name / "training.json", {
            "model": name, "device": describe_device(device), "seconds": seconds[name],
            "schedule": meta["schedule"], "steps_done": result.steps_done, "parameters": sum(p.numel() for p in model.parameters()),
            "train_chunks": len(train_set), "val_chunks": len(val_set),
        })  # fmt: skip
    return seconds


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


def _with_metadata(model, meta: dict[str, Any]):
    """``model`` with ``meta`` as its config's metadata (the config is frozen; the weights stay)."""
    model.config = replace(model.config, metadata=meta)
    return model


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


@torch.no_grad()
def _validation_loss(model, val_set: PackedChunks, trunk: TrunkConfig, loss_fn) -> dict[str, float]:
    """Teacher-forced validation metrics (the loss's own: loss, per-layer token accuracy)."""
    loss_fn = loss_fn or model.loss
    sums: dict[str, float] = {}
    for batch in val_set.batches(256, trunk_config=trunk):
        n = batch["obs"].batch_size
        for k, v in loss_fn(batch)[1].items():
            sums[k] = sums.get(k, 0.0) + v * n
    return {k: v / len(val_set) for k, v in sums.items()}


def describe_device(device: str | torch.device) -> str:
    """A human name of where something ran (GPU model, or the CPU and its thread count)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _write_json(file: Path, data: dict[str, Any]) -> None:
    file.write_text(json.dumps(data, indent=1) + "\n")


def write_cards(
    folder: str | Path,
    *,
    prepared_dir: str | Path | None = None,
    batch_size: int = 128,
    sample_size: int = 256,
) -> dict[str, dict[str, Any]]:
    """Decode the validation split with every trained model in ``folder``; write the cards.

    Each ``<folder>/<name>/card.json`` holds the data, the training run (steps, wall time,
    device) and the validation metrics: teacher-forced per-layer token accuracy (token models),
    and ``action_mae``, the mean absolute action error of the greedy decoded chunk in environment
    units. ``<folder>/README.md`` tabulates them.

    Args:
        folder: what :func:`train_models` wrote.
        prepared_dir: where ``val.npz`` is (default: ``folder``).
        sample_size: validation chunks saved as ``val_sample.npz`` beside the models.
    """
    from rsdlib.policies.data import evaluate_policy
    from rsdlib.policies.drafters import HeadDrafter, head_drafter_loss
    from rsdlib.tokenizers import Normaliser, load_tokenizer

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
        model = checkpoints.load(folder / name)
        if isinstance(model, HeadDrafter):
            main = checkpoints.load(folder / "rfsq_ar")
            metrics = _validation_loss(model, val_set, main.config.trunk, head_drafter_loss(main, model))
        else:
            metrics = evaluate_policy(
                model, val_set, tokenizer=rfsq_tok, fast_tokenizer=fast_tok,
                denormalize=lambda x: normaliser.denormalise(x).numpy(), batch_size=batch_size,
            )  # fmt: skip
        training = json.loads((folder / name / "training.json").read_text())
        card = {
            "model": name,
            "suite": info["suite"],
            "data": {"splits": info["splits"], "stride": info["stride"], "image_size": info["image_size"]},
            "training": training,
            "validation": metrics,
        }
        _write_json(folder / name / "card.json", card)
        cards[name] = card
    (folder / "README.md").write_text(cards_markdown(cards, info))
    # A small validation sample ships with the models (notebook 04 reads it; JPEG keeps it small).
    pick = torch.randperm(len(val_set), generator=torch.Generator().manual_seed(0))[:sample_size]
    val_set.subset(pick.sort().values).save(folder / "val_sample.npz", jpeg_quality=90)
    return cards


def _generation_lines(gen: dict[str, Any] | None) -> list[str]:
    if not gen:
        return []
    return [
        f"Demonstrations: the scripted expert on {gen['episodes']} init states per task"
        + (f", {gen['repeats']} episodes from each" if gen.get("repeats", 1) > 1 else "")
        + f", action noise "
        f"{gen['noise_std']}, waypoint noise {gen['waypoint_noise']} m, seed {gen['seed']}, "
        f"{gen['protocol']['camera_resolution']} px cameras, fast rendering {gen['fast_render']} "
        "(evaluate with the same resolution and rendering).",
        "",
    ]


def cards_markdown(cards: dict[str, dict[str, Any]], info: dict[str, Any]) -> str:
    """A README table of the cards: parameters, steps, wall time, device, validation metrics."""
    layers = info["actions"]["num_layers"]
    head = ["model", "parameters", "steps", "train time", "device"] + [f"acc L{i}" for i in range(layers)]
    head += ["action MAE", "val loss"]
    lines = [
        f"# Shipped models: {info['suite']}",
        "",
        f"Trained on the scripted-expert demonstrations of {info['suite']} "
        f"({info['splits']['train']['episodes']} training and {info['splits']['val']['episodes']} validation "
        f"episodes, split by episode; a chunk starting every {info['stride']} steps; {info['image_size']} px images). "
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
            f"{t['parameters']:,}",
            str(planned) if done == planned else f"{done} of {planned} (time limit)",
            f"{t['seconds'] / 60:.1f} min",
            t["device"],
        ]
        lines.append("| " + " | ".join(row + accs + [mae, f"{v.get('loss', float('nan')):.4f}"]) + " |")
    return "\n".join(lines) + "\n"


@torch.no_grad()
def layer_accuracy(
    models: dict[str, Any], chunks: PackedChunks, *, batch_size: int = 64
) -> dict[str, list[float]]:
    """Per RFSQ layer: teacher-forced token accuracy of the main policy and the drafters against
    the demonstrations' tokens, and each drafter's agreement with the main policy's greedy tokens.

    Agreement drafts all L layers from the drafter's own earlier choices (as one RSD round with
    gamma = L does) and compares them with plain greedy decoding of the main policy: the share
    the ``exact`` rule would accept at each layer if every earlier layer had been accepted.

    Args:
        models: ``rfsq_ar`` (required), and any of ``tiny_policy``, ``head_drafter``.
        chunks: packed chunks with RFSQ tokens.

    Returns:
        ``{"<model> (teacher-forced)": [acc per layer], "<drafter> (agrees with main)": [...]}``.
    """
    from rsdlib.decoding.plain import decode_rfsq_ar
    from rsdlib.policies.drafters import PolicyDrafter, head_drafter_loss

    main = models["rfsq_ar"]
    trunk = main.config.trunk
    drafters = {name: models[name] for name in ("head_drafter", "tiny_policy") if name in models}
    L = main.L
    forced = {name: np.zeros(L) for name in ["rfsq_ar", *drafters]}
    agree = {name: np.zeros(L) for name in drafters}
    count = 0
    for batch in chunks.batches(batch_size, trunk_config=trunk):
        n = batch["obs"].batch_size
        for name in forced:
            model = models[name]
            loss_fn = head_drafter_loss(main, model) if name == "head_drafter" else model.loss
            metrics = loss_fn(batch)[1]
            forced[name] += n * np.array([metrics[f"acc_layer{i}"] for i in range(L)])
        greedy = decode_rfsq_ar(main, batch["obs"]).tokens  # (n, L, N)
        state = main.prefix(batch["obs"])
        for name, model in drafters.items():
            drafter = model if name == "head_drafter" else PolicyDrafter(policy=model)
            drafter.begin(obs=batch["obs"], main_state=state)
            zeros = torch.zeros_like(greedy)
            draft = drafter.propose(
                tokens=zeros, committed=torch.zeros(n, dtype=torch.long, device=zeros.device),
                gamma=L, temperature=0.0, generator=None,
            )  # fmt: skip
            agree[name] += (draft.tokens == greedy).float().mean(-1).sum(0).cpu().numpy()
        count += n
    out = {f"{k} (teacher-forced)": (v / count).tolist() for k, v in forced.items()}
    return out | {f"{k} (agrees with main)": (v / count).tolist() for k, v in agree.items()}
