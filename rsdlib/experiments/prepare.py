"""Stage 1 of the training recipe: split the demonstrations by episode, fit the tokenizers, pack.

:func:`prepare` runs where the demonstrations are. It splits them by episode, fits the
normaliser, the RFSQ tokenizer and the FAST tokenizer on the training episodes, and packs the
training and validation chunks (:class:`~rsdlib.policies.packed.PackedChunks`) with their
token targets. The folder it writes is all that training needs: no LIBERO, no HDF5.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsdlib.libero.dataset import DEMOS_DIR, DemoDataset, demo_files, load_demos
from rsdlib.libero.demos import demo_names, demo_path
from rsdlib.observations import MODALITIES
from rsdlib.policies.configuration import ActionSpace
from rsdlib.policies.packed import PackedChunks
from rsdlib.policies.proprio import proprio_features
from rsdlib.tokenizers import FASTTokenizer, RFSQTokenizer
from rsdlib.tokenizers.rfsq import DEFAULT_LEVELS

#: Files of a prepared folder.
TRAIN_FILE, VAL_FILE, PREPARED_FILE = "train.npz", "val.npz", "prepared.json"


RFSQ_DIR, FAST_DIR = "tokenizer_rfsq", "tokenizer_fast"


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
    modality: str = "rgb",
    max_per_task: int | None = None,
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
        modality: ``"rgb"`` packs the camera images, ``"lowdim"`` the object rows (no images
            needed: stage 1 demonstration files are enough).
        max_per_task: use only the first this many demos of each task (a data curve); None: all.
    """

    if modality not in MODALITIES:
        raise ValueError(f"modality ({modality!r}) must be one of {MODALITIES}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lowdim = modality == "lowdim"
    data = load_demos(
        suite, root=demos_root or DEMOS_DIR, horizon=horizon, val_fraction=val_fraction,
        rng=np.random.default_rng(seed), images=not lowdim, objects=lowdim, max_per_task=max_per_task,
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
    sizes, kinds, max_objects, stats = {}, set(), 0, {}
    for split, dataset in (("train", data.train), ("val", data.val)):
        packed = PackedChunks.from_dataset(
            dataset, stride=stride, tokenizer=rfsq_tok, fast_tokenizer=fast_tok,
            fast_end_token=fast_end, fast_max_tokens=fast_max, progress=progress,
        )  # fmt: skip
        packed.save(out / (TRAIN_FILE if split == "train" else VAL_FILE), jpeg_quality=jpeg_quality)
        sizes[split] = {"chunks": len(packed), "episodes": len(dataset.refs)}
        kinds |= set(packed.kinds)
        max_objects = max(max_objects, packed.max_objects)
        if lowdim and split == "train":
            stats = observation_stats(packed, PROPRIO_ORIENTATION)
    undemonstrated = scenes_without_demos(suite, demo_files(suite, demos_root or DEMOS_DIR)) if lowdim else {}
    for scene in undemonstrated.values():
        kinds |= set(scene)
        max_objects = max(max_objects, len(scene))
    instructions = sorted({r.instruction for r in data.train.refs} | {r.instruction for r in data.val.refs})
    info = {
        "generation": _generation_config(data.train.refs[0].path),
        "suite": suite,
        "demos_root": str(demos_root or DEMOS_DIR),
        "demos": demos_fingerprint(suite, demos_root or DEMOS_DIR),
        "max_per_task": max_per_task,
        "starts": _starts(data.train.refs + data.val.refs),
        "modality": modality,
        "object_kinds": sorted(kinds),
        "max_objects": max_objects,
        "tasks_without_demos": sorted(undemonstrated),
        "observation_stats": stats,
        "proprio_orientation": PROPRIO_ORIENTATION,
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


def retokenize(
    prepared_dir: str | Path, out: str | Path, rfsq: dict[str, Any], *, progress: bool = True
) -> Path:
    """A copy of a prepared folder with another RFSQ tokenizer: the same episodes, split and
    chunks (and FAST tokenizer), the RFSQ tokenizer refitted with ``rfsq`` settings over the
    folder's own (its normaliser and seed kept) and both splits' tokens re-encoded.

    What a tokenizer sweep trains on: every setting sees exactly the same data.
    """
    prepared_dir, out = Path(prepared_dir), Path(out)
    info = read_prepared(prepared_dir)
    out.mkdir(parents=True, exist_ok=True)
    old = RFSQTokenizer.load(prepared_dir / RFSQ_DIR)
    settings = {**old.config(), **rfsq}
    train = PackedChunks.load(prepared_dir / TRAIN_FILE)
    tokenizer = RFSQTokenizer(**settings, normaliser=old.normaliser).fit(train.actions_raw, progress=progress)
    tokenizer.save(out / RFSQ_DIR)
    shutil.copytree(prepared_dir / FAST_DIR, out / FAST_DIR, dirs_exist_ok=True)
    for name, data in ((TRAIN_FILE, train), (VAL_FILE, PackedChunks.load(prepared_dir / VAL_FILE))):
        tokens = tokenizer.encode(data.actions_raw).transpose(1, 2).contiguous()  # (M, L, N)
        replace(data, tokens=tokens).save(out / name, jpeg_quality=info.get("jpeg_quality"))
    extra = {k: info["actions"][k] for k in ("fast_vocab", "fast_max_tokens")}
    info = info | {
        "rfsq": tokenizer.config(),
        "actions": asdict(ActionSpace.from_tokenizer(tokenizer, **extra)),
    }
    (out / PREPARED_FILE).write_text(json.dumps(info | {"retokenized_from": str(prepared_dir)}, indent=1))
    return out


def scenes_without_demos(suite: str, files: list[Path]) -> dict[int, tuple[str, ...]]:
    """The object kinds of each of ``suite``'s tasks that has no file among ``files``, by task id.

    The expert cannot demonstrate every task (libero_10 task 9 puts a mug under a microwave's
    roof). A lowdim policy refuses a scene with object kinds it does not know, so without this it
    would end every episode of such a task in an error; with their kinds in its vocabulary it reads
    the scene and fails the task, which is what the success rate should count. Only when
    ``files`` are the suite's own tasks (a folder of made-up tasks, as in the tests, has none
    missing); each missing task's env is built once to list its objects.
    """
    from rsdlib.libero.env import LiberoEnv, RenderOptions
    from rsdlib.libero.protocol import SUITES
    from rsdlib.libero.tasks import list_tasks

    if suite not in SUITES:
        return {}
    have = {Path(f).name for f in files}
    tasks = {demo_path(suite, t.name, ".").name: t.task_id for t in list_tasks(suite)}
    if not have & set(tasks):
        return {}
    scenes = {}
    for name, task_id in tasks.items():
        if name not in have:
            with LiberoEnv(suite, task_id, render=RenderOptions(enabled=False)) as env:
                scenes[task_id] = tuple(env.object_kinds)
    return scenes


def demos_fingerprint(suite: str, demos_root: str | Path) -> dict[str, int]:
    """Each demonstration file of ``suite`` and how many demos it holds: what a prepared folder
    was made from, so that a recipe notices when the files changed under it."""
    return {Path(p).name: len(demo_names(p)) for p in demo_files(suite, demos_root)}


def stale_reason(
    prepared_dir: str | Path,
    suite: str,
    demos_root: str | Path,
    max_per_task: int | None,
    rfsq_levels: list[int] | list[list[int]] | None = None,
) -> str | None:
    """Why the prepared folder is not what :func:`prepare` would make now (None: it is).

    ``rfsq_levels``: the RFSQ levels asked for (None: the tokenizer's default)."""
    info_path = Path(prepared_dir) / PREPARED_FILE
    if not info_path.is_file():
        return "nothing prepared yet"
    info = json.loads(info_path.read_text())
    if info.get("proprio_orientation") != PROPRIO_ORIENTATION:
        return f"its trunks would read proprio as {info.get('proprio_orientation', 'axis_angle')}"
    if info.get("demos") != demos_fingerprint(suite, demos_root):
        return "the demonstration files changed since it was prepared"
    if info.get("max_per_task") != max_per_task:
        return f"it was prepared from {info.get('max_per_task') or 'all'} demos per task"
    levels = info.get("rfsq", {}).get("levels")
    if levels is not None and levels != list(rfsq_levels or DEFAULT_LEVELS):
        return f"its RFSQ tokenizer has levels {levels}"
    return None


def _generation_config(path: str | Path) -> dict[str, Any] | None:
    """How a demonstration file was made (its ``generation_config`` attribute), if it says."""
    import h5py

    with h5py.File(path, "r") as f:
        raw = f["data"].attrs.get("generation_config")
        return None if raw is None else json.loads(raw)


#: How trunks trained on prepared data read the eef orientation (:mod:`rsdlib.policies.proprio`).
PROPRIO_ORIENTATION = "rot6d"

#: The smallest standard deviation a standardised input is divided by: an upright object's
#: orientation barely varies, and dividing by ~0 would turn noise into signal.
MIN_STD = 1e-2


def observation_stats(train: PackedChunks, orientation: str) -> dict[str, list[float]]:
    """Mean and standard deviation of the object rows (over real objects) and of the proprio
    features (``orientation``) in a training split: what a lowdim trunk standardises its inputs with."""
    if train.objects is None or train.object_kind is None:
        raise ValueError("observation_stats needs chunks packed with object rows (modality lowdim)")
    rows = train.objects[train.object_kind > 0].double()  # (objects in all chunks, OBJECT_DIM)
    proprio = proprio_features(train.proprio.double(), orientation)

    def stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
        return x.mean(0).tolist(), x.std(0).clamp(min=MIN_STD).tolist()

    (om, os_), (pm, ps) = stats(rows), stats(proprio)
    return {"object_mean": om, "object_std": os_, "proprio_mean": pm, "proprio_std": ps}


def _starts(refs) -> str:
    """Where the demonstrations started: ``"sampled"`` (held out from the benchmark's init
    states), ``"benchmark"`` (the evaluation's own init states), or ``"mixed"``."""
    import h5py

    by_file: dict[str, list[str]] = {}
    for r in refs:
        by_file.setdefault(r.path, []).append(r.demo)
    found = set()
    for path, demos in by_file.items():
        with h5py.File(path, "r") as f:
            found |= {str(f["data"][demo].attrs.get("start", "benchmark")) for demo in demos}
    return found.pop() if len(found) == 1 else "mixed"


def read_prepared(folder: str | Path) -> dict[str, Any]:
    """The ``prepared.json`` of a prepared folder (clear error when it is not one)."""
    file = Path(folder) / PREPARED_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"{folder} is not a prepared folder (no {PREPARED_FILE}); run prepare() first"
        )
    return json.loads(file.read_text())
