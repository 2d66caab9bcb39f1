"""How observations are shaped for a trunk: camera images or object rows, instruction word ids, proprio.

The instruction tokenizer is word-level (``tokenizers``' ``WordLevel`` with lower-casing and
whitespace/punctuation splitting). Its vocabulary is a sorted word list stored in the trunk's
config, so a checkpoint's JSON rebuilds exactly the tokenizer its embedding was trained with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from rsdlib.observations import CAMERA_KEYS, OBJECT_DIM
from rsdlib.policies.configuration import TrunkConfig

PAD, UNK = "[PAD]", "[UNK]"


def _normalizer_and_splitter() -> tuple[Any, Any]:
    norm = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    split = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    return norm, split


def build_instruction_vocab(instructions: Iterable[str]) -> tuple[str, ...]:
    """The sorted set of words in ``instructions`` (what :class:`TrunkConfig` stores)."""
    norm, split = _normalizer_and_splitter()
    words: set[str] = set()
    for text in instructions:
        normalized = norm.normalize_str(text)
        words.update(piece for piece, _ in split.pre_tokenize_str(normalized))
    return tuple(sorted(words))


class InstructionTokenizer:
    """Word-level instruction tokenizer: id 0 is padding, 1 unknown, then the vocabulary.

    Args:
        vocab: words (as :func:`build_instruction_vocab` returns them).
        max_tokens: length every encoding is padded or truncated to.
    """

    def __init__(self, *, vocab: Sequence[str], max_tokens: int) -> None:
        if len(set(vocab)) != len(vocab):
            raise ValueError("instruction vocabulary has duplicate words")
        mapping = {PAD: 0, UNK: 1} | {w: i + 2 for i, w in enumerate(vocab)}
        self._tok = Tokenizer(models.WordLevel(vocab=mapping, unk_token=UNK))
        self._tok.normalizer, self._tok.pre_tokenizer = _normalizer_and_splitter()
        self._tok.enable_padding(pad_id=0, pad_token=PAD, length=max_tokens)
        self._tok.enable_truncation(max_length=max_tokens)
        self.max_tokens = max_tokens
        self.vocab_size = len(mapping)

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode texts.

        Returns:
            ids ``(B, T)`` long and mask ``(B, T)`` bool (True on words).
        """
        encodings = self._tok.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)  # (B, T)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.bool)  # (B, T)
        # An empty instruction would leave nothing to attend to in its segment; keep the first slot.
        mask[:, 0] = True
        return ids, mask


@dataclass
class ObservationBatch:
    """Trunk inputs for B observations.

    Attributes:
        images: ``rgb``: ``(B, C, 3, S, S)`` float in [0, 1], cameras in :data:`CAMERA_KEYS`
            order; None for ``lowdim``.
        instruction_ids: ``(B, T)`` word ids.
        instruction_mask: ``(B, T)`` True on real words.
        proprio: ``(B, P)`` float.
        objects: ``lowdim``: ``(B, K, OBJECT_DIM)`` float object rows; None for ``rgb``.
        object_kinds: ``lowdim``: ``(B, K)`` long, 0 on padding, else 1 + the kind's index in
            the trunk's ``object_kinds``.
    """

    images: torch.Tensor | None
    instruction_ids: torch.Tensor
    instruction_mask: torch.Tensor
    proprio: torch.Tensor
    objects: torch.Tensor | None = None
    object_kinds: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.instruction_ids.shape[0])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> ObservationBatch:
        """Move to a device (float tensors also to ``dtype``)."""

        def move(x: torch.Tensor | None) -> torch.Tensor | None:
            if x is None:
                return None
            return x.to(
                device=device, dtype=dtype if dtype is not None and x.is_floating_point() else x.dtype
            )

        return ObservationBatch(*(move(getattr(self, f.name)) for f in fields(self)))

    def repeat(self, times: int) -> ObservationBatch:
        """Each observation ``times`` times in a row (for many draws from one observation)."""
        return ObservationBatch(
            *(
                None if (x := getattr(self, f.name)) is None else x.repeat_interleave(times, 0)
                for f in fields(self)
            )
        )


def prepare_observations(
    observations: Sequence[Mapping[str, Any]], *, config: TrunkConfig, tokenizer: InstructionTokenizer
) -> ObservationBatch:
    """Stack LIBERO observation dicts into an :class:`ObservationBatch`.

    Args:
        observations: dicts with ``proprio`` ``(P,)``, ``instruction`` str and, for an ``rgb``
            trunk, ``agentview_rgb`` and ``eye_in_hand_rgb`` ``(S, S, 3)`` uint8 (upright); for
            a ``lowdim`` trunk, ``objects`` ``(K, OBJECT_DIM)`` and ``object_kinds`` (K names).
        config: the trunk's config (modality, image size, cameras, object kinds, proprio size).
        tokenizer: the instruction tokenizer built from ``config.instruction_vocab``.

    Raises:
        ValueError: a missing key, an image, object rows or proprio of the wrong shape, or an
            object kind the trunk does not know.
    """
    if not observations:
        raise ValueError("prepare_observations got no observations")
    lowdim = config.modality == "lowdim"
    cams = () if lowdim else CAMERA_KEYS[: config.num_cameras]
    observed = ("objects", "object_kinds") if lowdim else cams
    images, proprio, texts = [], [], []
    for i, obs in enumerate(observations):
        missing = [k for k in (*observed, "proprio", "instruction") if k not in obs]
        if missing:
            raise ValueError(f"observation {i} lacks {missing}; it has {sorted(obs)}")
        per_cam = []
        for key in cams:
            img = np.asarray(obs[key])
            want = (config.image_size, config.image_size, 3)
            if img.shape != want or img.dtype != np.uint8:
                raise ValueError(
                    f"observation {i}: {key} is {img.dtype}{img.shape}, expected uint8{want}; "
                    "render at the trunk's image_size or resize first"
                )
            per_cam.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))  # (3, S, S)
        if per_cam:
            images.append(torch.stack(per_cam))  # (C, 3, S, S)
        p = np.asarray(obs["proprio"], dtype=np.float32).reshape(-1)
        if p.shape[0] != config.proprio_dim:
            raise ValueError(
                f"observation {i}: proprio has {p.shape[0]} values, expected {config.proprio_dim}"
            )
        proprio.append(torch.from_numpy(p))
        texts.append(str(obs["instruction"]))
    ids, mask = tokenizer(texts)
    objects, kinds = (
        object_rows(observations, config.object_kinds, config.max_objects) if lowdim else (None, None)
    )
    return ObservationBatch(
        images=torch.stack(images).float() / 255.0 if images else None,  # (B, C, 3, S, S)
        instruction_ids=ids,
        instruction_mask=mask,
        proprio=torch.stack(proprio),  # (B, P)
        objects=objects,
        object_kinds=kinds,
    )


def object_kind_ids(kinds: Sequence[str], known: Sequence[str]) -> list[int]:
    """1 + the index of each kind in ``known`` (a trunk's ``object_kinds``; 0 is padding).

    Raises:
        ValueError: a kind the trunk was not trained with.
    """
    index = {kind: i + 1 for i, kind in enumerate(known)}
    unknown = sorted({k for k in kinds if k not in index})
    if unknown:
        raise ValueError(
            f"object kinds {unknown} are unknown to this policy (it knows {list(known)}): "
            "a lowdim policy acts only in scenes made of the objects it was trained on"
        )
    return [index[k] for k in kinds]


def object_rows(
    observations: Sequence[Mapping[str, Any]], known: Sequence[str], max_objects: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, max_objects, OBJECT_DIM)`` float rows and ``(B, max_objects)`` kind ids (into
    ``known``, see :func:`object_kind_ids`), padded, from observations' ``objects`` and
    ``object_kinds``."""
    B, K = len(observations), max_objects
    rows = torch.zeros(B, K, OBJECT_DIM)
    kinds = torch.zeros(B, K, dtype=torch.long)
    for i, obs in enumerate(observations):
        values = np.asarray(obs["objects"], dtype=np.float32)
        names = list(obs["object_kinds"])
        if values.ndim != 2 or values.shape[1] != OBJECT_DIM or len(names) != len(values):
            raise ValueError(
                f"observation {i}: objects is {values.shape} with {len(names)} kinds; expected "
                f"(K, {OBJECT_DIM}) rows and K kinds"
            )
        if len(values) > K:
            raise ValueError(f"observation {i} has {len(values)} objects; this policy reads at most {K}")
        rows[i, : len(values)] = torch.from_numpy(values)
        kinds[i, : len(values)] = torch.tensor(object_kind_ids(names, known), dtype=torch.long)
    return rows, kinds
