"""Every chunk of a demonstration split as tensors: fast batches on any device, one portable file.

:class:`rsdlib.libero.dataset.DemoDataset` reads items one at a time, which costs Python per
item and needs the HDF5 files (and so LIBERO's layout) wherever training runs. A
:class:`PackedChunks` holds the chunks of a split as stacked tensors (images stay uint8), with
the RFSQ and FAST targets already encoded, so a batch is one index into each tensor, and the
whole split moves to a GPU machine as one ``.npz`` file that needs neither LIBERO nor the
tokenizers' code there.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rsdlib.observations import CAMERA_KEYS
from rsdlib.policies.data import augment_images, jitter_objects
from rsdlib.policies.processor import InstructionTokenizer, ObservationBatch, object_kind_ids, object_rows
from rsdlib.progress import progress as progress_bar

if TYPE_CHECKING:
    from rsdlib.tokenizers.base import ActionTokenizer

IGNORE = -100  # cross-entropy's ignore index: FAST targets are padded with it after the end token


class PackedFileError(ValueError):
    """A packed-chunks file that cannot be read as one."""


@dataclass
class PackedChunks:
    """The chunks of one split.

    Attributes:
        images: ``(M, C, 3, S, S)`` uint8, cameras in :data:`CAMERA_KEYS` order, or None (packed
            for the ``lowdim`` modality).
        proprio: ``(M, P)`` float32.
        instruction: ``(M,)`` index into ``instructions``.
        actions: ``(M, H, A)`` float32, normalised to [-1, 1].
        actions_raw: ``(M, H, A)`` float32, environment units.
        valid: ``(M, H)`` bool (False past the episode's end).
        episode: ``(M,)`` episode index (chunks of one episode are near-duplicates).
        tokens: ``(M, L, N)`` RFSQ ids, or None.
        fast_tokens: ``(M, T)`` FAST ids ending with the end token, padded with -100, or None.
        instructions: the distinct instruction strings.
        objects: ``(M, K, OBJECT_DIM)`` float32 object rows (``lowdim``), or None.
        object_kind: ``(M, K)`` long, 0 on padding, else 1 + index into ``kinds``; or None.
        kinds: the object kinds ``object_kind`` indexes.
    """

    images: torch.Tensor | None
    proprio: torch.Tensor
    instruction: torch.Tensor
    actions: torch.Tensor
    actions_raw: torch.Tensor
    valid: torch.Tensor
    episode: torch.Tensor
    tokens: torch.Tensor | None
    fast_tokens: torch.Tensor | None
    instructions: tuple[str, ...]
    objects: torch.Tensor | None = None
    object_kind: torch.Tensor | None = None
    kinds: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def device(self) -> torch.device:
        return self.actions.device

    @property
    def image_size(self) -> int | None:
        return None if self.images is None else int(self.images.shape[-1])

    @property
    def max_objects(self) -> int:
        return 0 if self.objects is None else int(self.objects.shape[1])

    @classmethod
    def from_dataset(
        cls,
        dataset: Any,
        *,
        stride: int = 1,
        tokenizer: ActionTokenizer | None = None,
        fast_tokenizer: ActionTokenizer | None = None,
        fast_end_token: int | None = None,
        fast_max_tokens: int | None = None,
        progress: bool = True,
    ) -> PackedChunks:
        """Stack every ``stride``-th chunk of each episode of a :class:`~rsdlib.libero.dataset.DemoDataset`.

        Args:
            dataset: a dataset over files holding both cameras' images (``dataset.images``) or
                the object rows (``dataset.objects``), or both.
            stride: keep steps ``0, stride, 2*stride, ...`` of each episode (neighbouring steps are near-duplicates;
                2 halves memory and file size and loses little).
            tokenizer: an RFSQ tokenizer: fills ``tokens``.
            fast_tokenizer: a FAST tokenizer: fills ``fast_tokens`` (with ``fast_end_token``
                appended, padded to ``fast_max_tokens``; longer sequences are an error).
            progress: show a bar.
        """
        if stride < 1:
            raise ValueError(f"stride ({stride}) must be at least 1")
        if len(dataset) == 0:
            raise ValueError("from_dataset got an empty dataset")
        items = []
        for episode in progress_bar(range(len(dataset.refs)), desc="packing episodes", disable=not progress):
            length = len(dataset.episode_actions(episode))
            steps = list(range(0, length, stride))
            images = dataset.episode_images(episode, slice(0, length, stride)) if dataset.images else {}
            for i, step in enumerate(steps):
                item = dataset.chunk(episode, step)
                item |= {key: frames[i] for key, frames in images.items()}
                items.append(item)
        instructions = tuple(sorted({it["instruction"] for it in items}))
        index = {text: i for i, text in enumerate(instructions)}
        images = None
        if dataset.images:
            stacked = np.stack([np.stack([it[k] for k in CAMERA_KEYS]) for it in items])  # (M, C, S, S, 3)
            images = torch.from_numpy(stacked).permute(0, 1, 4, 2, 3).contiguous()
        objects, object_kind, kinds = (
            _pack_objects(items) if getattr(dataset, "objects", False) else (None, None, ())
        )
        raw = torch.as_tensor(np.stack([it["actions_raw"] for it in items]), dtype=torch.float32)
        tokens = fast = None
        if tokenizer is not None:
            tokens = tokenizer.encode(raw).transpose(1, 2).contiguous()  # (M, L, N)
        if fast_tokenizer is not None:
            if fast_end_token is None or fast_max_tokens is None:
                raise ValueError("a fast_tokenizer needs fast_end_token and fast_max_tokens")
            fast = fast_targets(fast_tokenizer.encode(raw), end_token=fast_end_token, length=fast_max_tokens)
        return cls(
            images=images,
            proprio=torch.as_tensor(np.stack([it["proprio"] for it in items]), dtype=torch.float32),
            instruction=torch.tensor([index[it["instruction"]] for it in items], dtype=torch.long),
            actions=torch.as_tensor(np.stack([it["actions"] for it in items]), dtype=torch.float32),
            actions_raw=raw,
            valid=torch.as_tensor(np.stack([it["valid"] for it in items]), dtype=torch.bool),
            episode=torch.tensor([int(it["episode"]) for it in items], dtype=torch.long),
            tokens=tokens,
            fast_tokens=fast,
            instructions=instructions,
            objects=objects,
            object_kind=object_kind,
            kinds=kinds,
        )

    def to(self, device: torch.device | str) -> PackedChunks:
        """The same chunks on ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            if isinstance(getattr(self, f.name), torch.Tensor)
            else getattr(self, f.name)
            for f in fields(self)
        }
        return PackedChunks(**moved)

    def save(self, path: str | Path, *, jpeg_quality: int | None = None) -> Path:
        """Write one compressed ``.npz``.

        Args:
            jpeg_quality: store the images as JPEG at this quality (1-95) instead of deflated
                pixels: about 5x smaller (what lets a training set travel to a GPU machine), and
                lossy: training then sees slightly blurred images. None keeps them exact.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            f.name: getattr(self, f.name).cpu().numpy()
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        arrays["instructions"] = np.array(self.instructions, dtype=np.str_)
        arrays["kinds"] = np.array(self.kinds, dtype=np.str_)
        if jpeg_quality is not None and self.images is not None:
            arrays.pop("images")
            arrays |= _jpeg_encode(self.images.cpu().numpy(), jpeg_quality)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> PackedChunks:
        """Read what :meth:`save` wrote.

        Raises:
            PackedFileError: the file is missing, truncated, or lacks an array (named).
        """
        path = Path(path)
        if not path.is_file():
            raise PackedFileError(f"{path} does not exist; make it with scripts/train_policies.py prepare")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            if "jpeg_bytes" in arrays:
                arrays["images"] = _jpeg_decode(
                    arrays.pop("jpeg_bytes"), arrays.pop("jpeg_offsets"), arrays.pop("jpeg_shape")
                )
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as err:
            raise PackedFileError(
                f"{path} is not a readable packed-chunks file ({err}); prepare it again"
            ) from err
        optional = ("images", "tokens", "fast_tokens", "objects", "object_kind", "kinds")
        names = ("instructions", "kinds")
        required = [f.name for f in fields(cls) if f.name not in optional]
        missing = [k for k in required if k not in arrays]
        if "images" not in arrays and "objects" not in arrays:
            missing.append("images or objects")
        if missing:
            raise PackedFileError(f"{path} lacks {missing}; prepare it again")
        kwargs: dict[str, Any] = {
            k: torch.from_numpy(arrays[k]) for k in (*required, *optional) if k in arrays and k not in names
        }
        for name in names:
            kwargs[name] = tuple(str(s) for s in arrays.get(name, ()))
        for name in optional:
            kwargs.setdefault(name, None)
        sizes = {k: int(v.shape[0]) for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
        if len(set(sizes.values())) != 1:
            raise PackedFileError(f"{path}: arrays disagree on the number of chunks: {sizes}")
        return cls(**kwargs)

    def subset(self, index: torch.Tensor | Sequence[int]) -> PackedChunks:
        """The chunks at ``index``."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.device)
        picked = {
            f.name: getattr(self, f.name)[idx]
            if isinstance(getattr(self, f.name), torch.Tensor)
            else getattr(self, f.name)
            for f in fields(self)
        }
        return PackedChunks(**picked)

    def batch(
        self, index: torch.Tensor, *, trunk_config: Any, dtype: torch.dtype = torch.float32
    ) -> dict[str, Any]:
        """A batch for ``policy.loss``: ``obs``, ``actions``, ``actions_raw``, ``valid`` and the
        token targets there are."""
        ids, mask = self._instruction_ids(trunk_config)
        which = self.instruction[index]
        obs = ObservationBatch(
            images=None,
            instruction_ids=ids[which],
            instruction_mask=mask[which],
            proprio=self.proprio[index].to(dtype),
        )
        if trunk_config.modality == "lowdim":
            obs.objects, obs.object_kinds = self._objects_for(trunk_config, index, dtype)
        else:
            if self.images is None:
                raise ValueError("these chunks were packed without images (lowdim); an rgb trunk needs them")
            if trunk_config.image_size != self.image_size:
                raise ValueError(
                    f"the packed images are {self.image_size} px but the trunk expects {trunk_config.image_size}; "
                    "pack the demonstrations at the trunk's resolution"
                )
            obs.images = self.images[index, : trunk_config.num_cameras].to(dtype) / 255.0
        batch: dict[str, Any] = {
            "obs": obs,
            "actions": self.actions[index].to(dtype),
            "actions_raw": self.actions_raw[index],
            "valid": self.valid[index],
        }
        if self.tokens is not None:
            batch["tokens"] = self.tokens[index]
        if self.fast_tokens is not None:
            batch["fast_tokens"] = self.fast_tokens[index]
        return batch

    def batches(
        self, batch_size: int, *, trunk_config: Any, dtype: torch.dtype = torch.float32
    ) -> Iterator[dict[str, Any]]:
        """Every chunk once, in order, ``batch_size`` at a time (for validation)."""
        for start in range(0, len(self), batch_size):
            index = torch.arange(start, min(start + batch_size, len(self)), device=self.device)
            yield self.batch(index, trunk_config=trunk_config, dtype=dtype)

    def _objects_for(
        self, trunk_config: Any, index: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Object rows and the trunk's kind ids for ``index``, padded to its ``max_objects``."""
        if self.objects is None or self.object_kind is None:
            raise ValueError("these chunks were packed without object rows; a lowdim trunk needs them")
        K = trunk_config.max_objects
        if self.max_objects > K:
            raise ValueError(
                f"the packed chunks hold {self.max_objects} objects; the trunk reads at most {K}"
            )
        cache = self.__dict__.setdefault("_kind_maps", {})
        if trunk_config.object_kinds not in cache:
            ids = [0, *object_kind_ids(self.kinds, trunk_config.object_kinds)]  # packed id -> trunk id
            cache[trunk_config.object_kinds] = torch.tensor(ids, dtype=torch.long, device=self.device)
        rows = torch.zeros(len(index), K, self.objects.shape[-1], dtype=dtype, device=self.device)
        kinds = torch.zeros(len(index), K, dtype=torch.long, device=self.device)
        rows[:, : self.max_objects] = self.objects[index].to(dtype)
        kinds[:, : self.max_objects] = cache[trunk_config.object_kinds][self.object_kind[index]]
        return rows, kinds

    def _instruction_ids(self, trunk_config: Any) -> tuple[torch.Tensor, torch.Tensor]:
        key = (trunk_config.instruction_vocab, trunk_config.max_instruction_tokens)
        cache = self.__dict__.setdefault("_ids", {})
        if key not in cache:
            tok = InstructionTokenizer(
                vocab=trunk_config.instruction_vocab, max_tokens=trunk_config.max_instruction_tokens
            )
            ids, mask = tok(list(self.instructions))
            cache[key] = (ids.to(self.device), mask.to(self.device))
        return cache[key]


def _pack_objects(items: Sequence[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Object rows of items from several tasks, padded to the most objects any has, with the
    kinds they hold."""
    kinds = tuple(sorted({kind for it in items for kind in it["object_kinds"]}))
    rows, kind = object_rows(items, kinds, max(len(it["object_kinds"]) for it in items))
    return rows, kind, kinds


def fast_targets(sequences: Sequence[torch.Tensor], *, end_token: int, length: int) -> torch.Tensor:
    """FAST id sequences as ``(M, length)`` targets: ids, the end token, then -100.

    Raises:
        ValueError: a sequence (with its end token) longer than ``length``, or an id that collides
            with the end token.
    """
    out = torch.full((len(sequences), length), IGNORE, dtype=torch.long)
    for i, seq in enumerate(sequences):
        seq = torch.as_tensor(seq, dtype=torch.long)
        if seq.numel() + 1 > length:
            raise ValueError(
                f"FAST sequence {i} has {seq.numel()} tokens; with the end token it exceeds fast_max_tokens={length}"
            )
        if seq.numel() and int(seq.max()) >= end_token:
            raise ValueError(f"FAST sequence {i} holds id {int(seq.max())} >= the end token {end_token}")
        out[i, : seq.numel()] = seq
        out[i, seq.numel()] = end_token
    return out


class PackedBatches:
    """``batches(step, generator)`` for :func:`rsdlib.train.train` over :class:`PackedChunks`.

    Indices are drawn from the (CPU) generator, so a run is reproducible on any device; image
    augmentation (:func:`rsdlib.policies.data.augment_images`) runs where the images are.
    ``per_chunk`` adds targets computed outside the packed file (``{"remaining": (M, L)}`` for
    the depth head), indexed like the chunks.
    """

    def __init__(
        self,
        packed: PackedChunks,
        *,
        trunk_config: Any,
        batch_size: int,
        augment: bool = True,
        per_chunk: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        if len(packed) == 0:
            raise ValueError("PackedBatches got no chunks: is the training split empty?")
        if batch_size < 1:
            raise ValueError(f"batch_size ({batch_size}) must be at least 1")
        self.per_chunk = dict(per_chunk or {})
        for key, value in self.per_chunk.items():
            if len(value) != len(packed):
                raise ValueError(f"per_chunk[{key!r}] has {len(value)} rows for {len(packed)} chunks")
        self.packed, self.trunk_config = packed, trunk_config
        self.batch_size, self.augment = batch_size, augment

    def __call__(self, step: int, generator: torch.Generator) -> dict[str, Any]:
        index = torch.randint(0, len(self.packed), (self.batch_size,), generator=generator)
        batch = self.packed.batch(index.to(self.packed.device), trunk_config=self.trunk_config)
        obs = batch["obs"]
        if self.augment and obs.images is not None:
            obs.images = augment_images(obs.images, generator)
        if self.augment and obs.objects is not None:
            obs.objects = jitter_objects(obs.objects, obs.object_kinds, generator)
        for key, value in self.per_chunk.items():
            batch[key] = value[index.to(value.device)]
        return batch


def _jpeg_encode(images: np.ndarray, quality: int) -> dict[str, np.ndarray]:
    """``(M, C, 3, S, S)`` uint8 -> one byte string per frame, concatenated, with offsets."""
    from PIL import Image

    if not 1 <= quality <= 95:
        raise ValueError(f"jpeg_quality ({quality}) must be in 1..95")
    blobs = []
    for frame in images.reshape(-1, *images.shape[2:]):
        buf = io.BytesIO()
        Image.fromarray(frame.transpose(1, 2, 0)).save(buf, format="JPEG", quality=quality)
        blobs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    return {
        "jpeg_bytes": np.concatenate(blobs),
        "jpeg_offsets": offsets,
        "jpeg_shape": np.array(images.shape),
    }


def _jpeg_decode(data: np.ndarray, offsets: np.ndarray, shape: np.ndarray) -> np.ndarray:
    from PIL import Image

    M, C, _, S, _ = (int(v) for v in shape)
    if len(offsets) != M * C + 1:
        raise ValueError(f"{len(offsets) - 1} JPEG frames for {M} chunks of {C} cameras")
    out = np.empty((M * C, S, S, 3), dtype=np.uint8)
    for i in range(M * C):
        out[i] = np.asarray(
            Image.open(io.BytesIO(data[offsets[i] : offsets[i + 1]].tobytes())).convert("RGB")
        )
    return out.reshape(M, C, S, S, 3).transpose(0, 1, 4, 2, 3).copy()
