"""How observations are shaped for a trunk: camera images, instruction word ids, proprio.

The instruction tokenizer is word-level (``tokenizers``' ``WordLevel`` with lower-casing and
whitespace/punctuation splitting). Its vocabulary is a sorted word list stored in the trunk's
config, so a checkpoint's JSON rebuilds exactly the tokenizer its embedding was trained with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from rsdlib.observations import CAMERA_KEYS
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
        images: ``(B, C, 3, S, S)`` float in [0, 1], cameras in :data:`CAMERA_KEYS` order.
        instruction_ids: ``(B, T)`` word ids.
        instruction_mask: ``(B, T)`` True on real words.
        proprio: ``(B, P)`` float.
    """

    images: torch.Tensor
    instruction_ids: torch.Tensor
    instruction_mask: torch.Tensor
    proprio: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> ObservationBatch:
        """Move to a device (float tensors also to ``dtype``)."""
        return ObservationBatch(
            images=self.images.to(device=device, dtype=dtype or self.images.dtype),
            instruction_ids=self.instruction_ids.to(device),
            instruction_mask=self.instruction_mask.to(device),
            proprio=self.proprio.to(device=device, dtype=dtype or self.proprio.dtype),
        )

    def repeat(self, times: int) -> ObservationBatch:
        """Each observation ``times`` times in a row (for many draws from one observation)."""
        return ObservationBatch(
            images=self.images.repeat_interleave(times, 0),
            instruction_ids=self.instruction_ids.repeat_interleave(times, 0),
            instruction_mask=self.instruction_mask.repeat_interleave(times, 0),
            proprio=self.proprio.repeat_interleave(times, 0),
        )


def prepare_observations(
    observations: Sequence[Mapping[str, Any]], *, config: TrunkConfig, tokenizer: InstructionTokenizer
) -> ObservationBatch:
    """Stack LIBERO observation dicts into an :class:`ObservationBatch`.

    Args:
        observations: dicts with ``agentview_rgb`` and ``eye_in_hand_rgb`` ``(S, S, 3)`` uint8
            (upright), ``proprio`` ``(P,)`` and ``instruction`` str.
        config: the trunk's config (image size, cameras, proprio size).
        tokenizer: the instruction tokenizer built from ``config.instruction_vocab``.

    Raises:
        ValueError: a missing key, or an image or proprio of the wrong shape.
    """
    if not observations:
        raise ValueError("prepare_observations got no observations")
    cams = CAMERA_KEYS[: config.num_cameras]
    images, proprio, texts = [], [], []
    for i, obs in enumerate(observations):
        missing = [k for k in (*cams, "proprio", "instruction") if k not in obs]
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
        images.append(torch.stack(per_cam))  # (C, 3, S, S)
        p = np.asarray(obs["proprio"], dtype=np.float32).reshape(-1)
        if p.shape[0] != config.proprio_dim:
            raise ValueError(
                f"observation {i}: proprio has {p.shape[0]} values, expected {config.proprio_dim}"
            )
        proprio.append(torch.from_numpy(p))
        texts.append(str(obs["instruction"]))
    ids, mask = tokenizer(texts)
    return ObservationBatch(
        images=torch.stack(images).float() / 255.0,  # (B, C, 3, S, S)
        instruction_ids=ids,
        instruction_mask=mask,
        proprio=torch.stack(proprio),  # (B, P)
    )
