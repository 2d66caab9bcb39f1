"""Training data from demonstration files: action chunks with the observations they follow.

::

    from rsdlib.libero.dataset import load_demos

    data = load_demos("libero_spatial", horizon=8, val_fraction=0.1, rng=np.random.default_rng(0))
    item = data.train[0]          # actions (8, 7) normalised, agentview_rgb (128, 128, 3), proprio (8,), ...
    data.normaliser.denormalise(torch.as_tensor(x))   # back to env units

Item ``t`` of an episode is the chunk of actions ``t .. t+H-1`` (past the end the last action
repeats, see :func:`rsdlib.actions.chunk_episode`; ``valid`` marks real steps) with the
observation at step ``t``. Actions are normalised by the project's one
:class:`~rsdlib.tokenizers.normaliser.Normaliser` (default percentiles to [-1, 1], clamped;
the gripper stays -1/+1), fitted on the training episodes only. Descriptive statistics (q01,
q99, mean, std over every episode) are saved beside the files as ``norm_stats.json``. Train
and validation splits are by episode, never by step (neighbouring steps are near-duplicates),
stratified by task.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby, islice
from pathlib import Path
from typing import Any

import numpy as np

from rsdlib.actions import GRIPPER, chunk_episode
from rsdlib.libero.demos import (
    DEMOS_DIR,
    FIXTURES_ATTR,
    OBJECTS_KEY,
    DemoFileError,
    _is_opengl,
    _open,
    demo_names,
    language_of,
)
from rsdlib.observations import CAMERA_KEYS
from rsdlib.tokenizers.normaliser import Normaliser

STATS_FILE = "norm_stats.json"


@dataclass(frozen=True)
class NormStats:
    """Per-dimension action statistics of a set of demonstrations (a description of the data;
    the normalisation itself is a :class:`Normaliser`).

    Attributes:
        q01, q99, mean, std: (A,) statistics over every step of every episode.
        binary_dims: dimensions kept as they are (the gripper, already -1/+1).
        num_episodes, num_steps: how much data they were computed from.
    """

    q01: np.ndarray
    q99: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    binary_dims: tuple[int, ...] = (GRIPPER,)
    num_episodes: int = 0
    num_steps: int = 0

    @classmethod
    def from_actions(
        cls, episodes: Sequence[np.ndarray], binary_dims: tuple[int, ...] = (GRIPPER,)
    ) -> NormStats:
        """Statistics over the concatenated (T, A) actions of ``episodes``."""
        if not episodes:
            raise ValueError("no episodes to compute normalisation statistics from")
        steps = np.concatenate([np.asarray(e, dtype=np.float64) for e in episodes])
        return cls(
            q01=np.quantile(steps, 0.01, axis=0),
            q99=np.quantile(steps, 0.99, axis=0),
            mean=steps.mean(0),
            std=steps.std(0),
            binary_dims=tuple(binary_dims),
            num_episodes=len(episodes),
            num_steps=len(steps),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "q01": self.q01.tolist(),
            "q99": self.q99.tolist(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "binary_dims": list(self.binary_dims),
            "num_episodes": self.num_episodes,
            "num_steps": self.num_steps,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NormStats:
        arrays = {k: np.asarray(data[k], dtype=np.float64) for k in ("q01", "q99", "mean", "std")}
        return cls(
            **arrays,
            binary_dims=tuple(data["binary_dims"]),
            num_episodes=data["num_episodes"],
            num_steps=data["num_steps"],
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> NormStats:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"normalisation statistics {path} do not exist; load_demos() writes them")
        return cls.from_json(json.loads(path.read_text()))


@dataclass(frozen=True)
class EpisodeRef:
    """Where one demonstration lives, and what it is."""

    path: str
    demo: str
    length: int
    suite: str
    task_name: str
    instruction: str


def demo_files(suites: str | Sequence[str], root: str | Path = DEMOS_DIR) -> list[Path]:
    """The demonstration files of ``suites`` under ``root`` (sorted).

    Raises:
        DemoFileError: a suite folder has no ``*_demo.hdf5`` files.
    """
    suites = [suites] if isinstance(suites, str) else list(suites)
    files = []
    for suite in suites:
        found = sorted((Path(root) / suite).glob("*_demo.hdf5"))
        if not found:
            raise DemoFileError(
                f"no demonstrations in {Path(root) / suite}; generate them with notebooks/01_demonstrations.ipynb "
                f"or `python scripts/generate_demos.py --suite {suite}`"
            )
        files.extend(found)
    return files


def index_episodes(files: Sequence[str | Path], *, need_images: bool = False) -> list[EpisodeRef]:
    """One :class:`EpisodeRef` per demo in ``files``.

    Raises:
        DemoFileError: a file is unreadable, or ``need_images`` and it holds no camera images.
    """
    refs = []
    for path in files:
        path = Path(path)
        names = demo_names(path)
        with _open(path) as f:
            data = f["data"]
            if need_images and not bool(data.attrs.get("has_images", True)):
                raise DemoFileError(
                    f"{path} holds no camera images yet (stage 1 only); render them with "
                    "`python scripts/generate_demos.py --suite <suite>`, or load with images=False"
                )
            suite = str(data.attrs.get("suite", path.parent.name))
            ours = data.attrs.get("generator") == "rsdlib scripted expert"
            if need_images and ours and not data.attrs.get(FIXTURES_ATTR, False):
                warnings.warn(
                    f"{path}: its images were rendered with the cabinets and stoves up to 1.3 cm from where "
                    "the episodes had them; render them again with `python scripts/generate_demos.py "
                    f"--suite {suite} --rerender-images --resolution <px> [--fast-render]`",
                    stacklevel=2,
                )
            task_name = str(data.attrs.get("task_name", path.name.removesuffix("_demo.hdf5")))
            language = language_of(data.attrs)
            for name in names:
                if "actions" not in data[name]:
                    raise DemoFileError(f"{path}: {name} has no actions")
                refs.append(
                    EpisodeRef(str(path), name, len(data[name]["actions"]), suite, task_name, language)
                )
    return refs


def split_episodes(
    refs: Sequence[EpisodeRef], val_fraction: float, rng: np.random.Generator
) -> tuple[list[EpisodeRef], list[EpisodeRef]]:
    """Split episodes into train and validation, by episode and stratified by task.

    Each task with at least two episodes gives ``round(val_fraction * n)`` of them (at least one
    when ``val_fraction > 0``) to validation.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction ({val_fraction}) must be in [0, 1)")
    by_task: dict[tuple[str, str], list[EpisodeRef]] = {}
    for ref in refs:
        by_task.setdefault((ref.suite, ref.task_name), []).append(ref)
    train, val = [], []
    for key in sorted(by_task):
        episodes = by_task[key]
        order = rng.permutation(len(episodes))
        n_val = 0 if val_fraction == 0 or len(episodes) < 2 else max(1, round(val_fraction * len(episodes)))
        val.extend(episodes[i] for i in sorted(order[:n_val]))
        train.extend(episodes[i] for i in sorted(order[n_val:]))
    return train, val


class DemoDataset:
    """Action chunks with the observation they start from (a ``torch.utils.data.Dataset``).

    Args:
        refs: the episodes.
        normaliser: the fitted action normaliser (environment units to [-1, 1]).
        horizon: chunk length H.
        images: read camera images (lazily, from the HDF5 files; one open handle per process).
        objects: read the object rows of the ``lowdim`` modality (all at once; they are small).
        preloaded: ``{(path, demo): (actions, proprio)}`` already read (see :func:`read_episode`),
            so that :func:`load_demos` reads each episode's arrays once.

    Each item is a dict: ``actions`` (H, 7) float32 normalised, ``actions_raw`` (H, 7) float32 in
    env units, ``valid`` (H,) bool, ``proprio`` (8,) float32, ``agentview_rgb`` and
    ``eye_in_hand_rgb`` (128, 128, 3) uint8 upright (with ``images``), ``objects`` (K, 10) and
    ``object_kinds`` (with ``objects``), ``instruction``, ``task_name``, ``episode`` (index into
    ``refs``), ``step``.
    """

    def __init__(
        self,
        refs: Sequence[EpisodeRef],
        normaliser: Normaliser,
        horizon: int = 8,
        *,
        images: bool = True,
        objects: bool = False,
        preloaded: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        if horizon < 1:
            raise ValueError(f"horizon ({horizon}) must be at least 1")
        self.refs = list(refs)
        if not normaliser.fitted:
            raise ValueError("DemoDataset needs a fitted Normaliser (fit it on the training episodes)")
        self.normaliser = normaliser
        self.horizon = horizon
        self.images = images
        self.objects = objects
        self._objects = [read_objects(ref) for ref in self.refs] if objects else []
        self._actions: list[np.ndarray] = []
        self._proprio: list[np.ndarray] = []
        for ref in self.refs:
            key = (ref.path, ref.demo)
            actions, proprio = preloaded[key] if preloaded and key in preloaded else read_episode(ref)
            self._actions.append(actions)
            self._proprio.append(proprio)
        lengths = np.array([len(a) for a in self._actions], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(lengths)])
        self._files: dict[str, Any] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(episode, step) of item ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range for a dataset of {len(self)} chunks")
        episode = int(np.searchsorted(self._starts, index, side="right") - 1)
        return episode, int(index - self._starts[episode])

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.chunk(*self.locate(int(index)), images=self.images)

    def chunk(self, episode: int, step: int, *, images: bool = False) -> dict[str, Any]:
        """The item starting at ``step`` of ``episode`` (camera images only with ``images``)."""
        actions = self._actions[episode]
        chunk = chunk_episode(actions[step : step + self.horizon], self.horizon)[0]  # (H, A)
        valid = np.arange(self.horizon) < len(actions) - step
        ref = self.refs[episode]
        item = {
            "actions": self.normaliser.normalise(chunk).numpy().astype(np.float32),
            "actions_raw": chunk.astype(np.float32),
            "valid": valid,
            "proprio": self._proprio[episode][step],
            "instruction": ref.instruction,
            "task_name": ref.task_name,
            "episode": episode,
            "step": step,
        }
        if images:
            item |= self.episode_images(episode, step)
        if self.objects:
            rows, kinds = self._objects[episode]
            item |= {"objects": rows[step], "object_kinds": kinds}
        return item

    def episode_images(self, episode: int, steps: int | slice = slice(None)) -> dict[str, np.ndarray]:
        """Both cameras' upright images of ``episode`` at ``steps`` (one read per camera)."""
        ref = self.refs[episode]
        f = self._file(ref.path)
        if "obs" not in f["data"][ref.demo]:
            raise DemoFileError(
                f"{ref.path}: {ref.demo} has no obs group; the file is incomplete: regenerate it with "
                "notebooks/01_demonstrations.ipynb or scripts/generate_demos.py"
            )
        obs = f["data"][ref.demo]["obs"]
        flip = _is_opengl(f["data"].attrs)
        out = {}
        for key in CAMERA_KEYS:
            if key not in obs:
                raise DemoFileError(f"{ref.path}: {ref.demo} has no obs/{key}; render the images first")
            image = obs[key][steps]
            out[key] = np.ascontiguousarray(image[..., ::-1, ::-1, :]) if flip else image
        return out

    def episode_actions(self, episode: int) -> np.ndarray:
        """The (T, 7) actions of one episode in env units."""
        return self._actions[episode]

    def _file(self, path: str):
        if os.getpid() != self._pid:  # a DataLoader worker: handles do not survive fork
            self._files, self._pid = {}, os.getpid()
        if path not in self._files:
            self._files[path] = _open(Path(path))
        return self._files[path]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_files"] = {}
        return state


def read_episode(ref: EpisodeRef) -> tuple[np.ndarray, np.ndarray]:
    """The (T, 7) float64 actions and (T, 8) float32 proprio (eef pos, axis-angle, gripper) of one episode.

    Raises:
        DemoFileError: the file is unreadable, or the demo lacks its actions or proprio keys.
    """
    with _open(Path(ref.path)) as f:
        try:
            g = f["data"][ref.demo]
            obs = g["obs"]
            proprio = np.concatenate(
                [obs["ee_pos"][()], obs["ee_ori"][()], obs["gripper_states"][()]], axis=1
            )
            return g["actions"][()].astype(np.float64), proprio.astype(np.float32)
        except KeyError as err:  # h5py names the missing key, not the file
            raise DemoFileError(
                f"{ref.path}: {ref.demo} lacks a key LIBERO's layout has ({err}; needs actions, "
                "obs/ee_pos, obs/ee_ori, obs/gripper_states); the file is incomplete: regenerate it "
                "with notebooks/01_demonstrations.ipynb or scripts/generate_demos.py"
            ) from err


def read_objects(ref: EpisodeRef) -> tuple[np.ndarray, tuple[str, ...]]:
    """The (T, K, 10) float32 object rows of one episode and the K kinds (``lowdim``).

    Raises:
        DemoFileError: the file holds no object poses (official LIBERO files, or ours from before
            they were recorded): the message says how to get them.
    """
    with _open(Path(ref.path)) as f:
        data = f["data"]
        obs = data[ref.demo].get("obs", {})
        if OBJECTS_KEY not in obs or "object_kinds" not in data.attrs:
            raise DemoFileError(
                f"{ref.path}: {ref.demo} holds no object poses (obs/{OBJECTS_KEY}), which a lowdim policy "
                "trains on. Official LIBERO files and files generated before they were recorded have none: "
                "generate the demonstrations again with scripts/generate_demos.py (about 2 s per episode "
                "without images), or train an rgb policy on this file"
            )
        return obs[OBJECTS_KEY][()].astype(np.float32), tuple(json.loads(data.attrs["object_kinds"]))


@dataclass
class DemoData:
    """What :func:`load_demos` returns."""

    train: DemoDataset
    val: DemoDataset
    normaliser: Normaliser  # fitted on the training episodes
    stats: NormStats  # over every episode
    stats_path: Path | None


def load_demos(
    suites: str | Sequence[str],
    *,
    root: str | Path = DEMOS_DIR,
    horizon: int = 8,
    val_fraction: float = 0.1,
    rng: np.random.Generator,
    images: bool = True,
    objects: bool = False,
    files: Sequence[str | Path] | None = None,
    max_per_task: int | None = None,
) -> DemoData:
    """Train and validation chunk datasets from the demonstration files of ``suites``.

    Normalisation statistics are computed over every episode found and written beside the
    data (``<root>/<suite>/norm_stats.json`` for a single suite; ``<root>/norm_stats_<a>+<b>.json``
    for several).

    Args:
        suites: suite name(s) whose ``<root>/<suite>/*_demo.hdf5`` files to read.
        root: demonstrations root.
        horizon: chunk length H.
        val_fraction: share of each task's episodes held out.
        rng: generator for the split.
        images: read camera images (files must hold them).
        objects: read object rows (the ``lowdim`` modality; files must hold them).
        files: explicit files instead of the suite folders (for example official LIBERO files).
        max_per_task: read only the first this many demos of each file (a data curve's smaller
            points are prefixes of its larger ones); None: all.
    """
    if max_per_task is not None and max_per_task < 1:
        raise ValueError(f"max_per_task ({max_per_task}) must be at least 1")
    paths = [Path(p) for p in files] if files is not None else demo_files(suites, root)
    refs = index_episodes(paths, need_images=images)
    if max_per_task is not None:
        # index_episodes lists the files one after another, each one's demos in order
        refs = [r for _, demos in groupby(refs, key=lambda r: r.path) for r in islice(demos, max_per_task)]
    episodes = {(r.path, r.demo): read_episode(r) for r in refs}
    stats = NormStats.from_actions([actions for actions, _ in episodes.values()])
    stats_path = None
    if files is None and max_per_task is None:  # a subset's statistics are not the suite's
        names = [suites] if isinstance(suites, str) else list(suites)
        stats_path = (
            Path(root) / names[0] / STATS_FILE
            if len(names) == 1
            else Path(root) / f"norm_stats_{'+'.join(names)}.json"
        )
        stats.save(stats_path)
    train_refs, val_refs = split_episodes(refs, val_fraction, rng)
    if not train_refs:
        raise ValueError(f"no training episodes left after holding out {val_fraction:.0%} of {len(refs)}")
    normaliser = Normaliser().fit(np.concatenate([episodes[(r.path, r.demo)][0] for r in train_refs]))
    return DemoData(
        DemoDataset(train_refs, normaliser, horizon, images=images, objects=objects, preloaded=episodes),
        DemoDataset(val_refs, normaliser, horizon, images=images, objects=objects, preloaded=episodes),
        normaliser,
        stats,
        stats_path,
    )
