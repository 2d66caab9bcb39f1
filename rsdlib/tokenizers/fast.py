"""FAST: frequency-space action tokenization (Pertsch et al., 2025), written from the paper.

A normalised chunk (H, A) goes through a DCT-II over time for each dimension; the
coefficients are multiplied by ``scale`` and rounded to integers, flattened lowest frequency
first (all dimensions' DC terms, then the first harmonic, ...) and compressed with byte-pair
encoding trained by the ``tokenizers`` library. Output length varies per chunk.

Decoding inverts every step and is exact up to the rounding: ``decode(encode(x))`` equals
``idct(round(dct(x) * scale) / scale)``. Unlike the reference implementation, which quietly
decodes a malformed sequence to zeros, a truncated or corrupt id sequence raises
:class:`MalformedTokens`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.fft import dct, idct
from tokenizers import Tokenizer, models, trainers
from torch import Tensor

from rsdlib.actions import ACTION_DIM
from rsdlib.tokenizers.base import ActionTokenizer
from rsdlib.tokenizers.errors import REGENERATE, TokenizerFileError
from rsdlib.tokenizers.normaliser import Normaliser

BPE_FILE = "bpe.json"
#: Coefficient v is written as the character chr(_CHAR_BASE + v + max_coefficient); the CJK
#: block gives 20k consecutive printable code points, far from whitespace and surrogates.
_CHAR_BASE = 0x4E00


class MalformedTokens(ValueError):
    """A FAST id sequence that does not decode to exactly one chunk."""


class FASTTokenizer(ActionTokenizer):
    """DCT + scale-and-round + BPE action tokenizer (variable length).

    Args:
        horizon: H, actions per chunk.
        action_dim: A.
        scale: multiplier before rounding the DCT coefficients (larger: finer, more tokens).
        vocab_size: target BPE vocabulary (the alphabet of rounded coefficients included).
        min_frequency: BPE merges need a pair seen at least this often.
        normaliser: a fitted normaliser to share; by default one is fitted in :meth:`fit`.
    """

    kind = "fast"

    def __init__(
        self,
        *,
        horizon: int = 8,
        action_dim: int = ACTION_DIM,
        scale: float = 10.0,
        vocab_size: int = 1024,
        min_frequency: int = 2,
        normaliser: Normaliser | None = None,
    ) -> None:
        if scale <= 0:
            raise ValueError(f"scale ({scale}) must be positive")
        self.horizon, self.action_dim = horizon, action_dim
        self.scale, self.target_vocab_size, self.min_frequency = (
            float(scale),
            int(vocab_size),
            int(min_frequency),
        )
        # Normalised values lie in [-1, 1], so an orthonormal DCT coefficient is at most sqrt(H)
        # in magnitude: every rounded coefficient is in the alphabet, whatever the data.
        self.max_coefficient = math.ceil(math.sqrt(horizon) * self.scale)
        alphabet_size = 2 * self.max_coefficient + 1
        if self.target_vocab_size < alphabet_size:
            raise ValueError(
                f"vocab_size ({vocab_size}) must hold the {alphabet_size} rounded coefficients at scale {scale}"
            )
        if _CHAR_BASE + alphabet_size >= 0xD800:  # the surrogate block starts there
            raise ValueError(f"scale {scale} gives too many distinct coefficients ({alphabet_size})")
        self.normaliser = normaliser or Normaliser(action_dim=action_dim)
        self.bpe: Tokenizer | None = None
        self._vocab: list[str] = []
        self._coefficient_counts: np.ndarray | None = None

    @property
    def vocab_size(self) -> int:
        """The trained vocabulary's size (at most the target)."""
        self._check_fitted()
        return len(self._vocab)

    @property
    def fitted(self) -> bool:
        return self.bpe is not None

    @property
    def coefficients_per_token(self) -> np.ndarray:
        """``(vocab_size,)`` int64: how many DCT coefficients each id expands to in :meth:`decode`.

        Lets a decoder steer a sequence to exactly H*A coefficients (the only length that decodes).
        A BPE token is a string of coefficient characters (no prefixes or suffixes: see :meth:`fit`),
        so its count is its length. Computed once per vocabulary.

        Raises:
            ValueError: a token holds a character that is no coefficient (it could not be decoded),
                or some coefficient the quantiser can produce has no single-character token (such
                a vocabulary cannot encode every chunk, nor finish every partial sequence).
        """
        self._check_fitted()
        if self._coefficient_counts is None:
            self._coefficient_counts = self._count_coefficients()
        return self._coefficient_counts

    def _count_coefficients(self) -> np.ndarray:
        low, high = _CHAR_BASE, _CHAR_BASE + 2 * self.max_coefficient
        for index, token in enumerate(self._vocab):
            strays = [c for c in token if not low <= ord(c) <= high]
            if strays:
                raise ValueError(
                    f"FAST token id {index} ({token!r}) holds {len(strays)} character(s) outside the "
                    f"coefficient alphabet [-{self.max_coefficient}, {self.max_coefficient}], so its "
                    "coefficient count is unknown; the vocabulary is not this tokenizer's, refit it"
                )
        singles = {ord(token) - low - self.max_coefficient for token in self._vocab if len(token) == 1}
        missing = sorted(set(range(-self.max_coefficient, self.max_coefficient + 1)) - singles)
        if missing:
            raise ValueError(
                f"the FAST vocabulary has no single-coefficient token for the value(s) {missing[:10]} "
                f"(of [-{self.max_coefficient}, {self.max_coefficient}]): chunks using them cannot be "
                "encoded and a decoder cannot always finish a chunk; refit the tokenizer"
            )
        return np.array([len(token) for token in self._vocab], dtype=np.int64)

    def config(self) -> dict[str, Any]:
        return {
            "horizon": self.horizon, "action_dim": self.action_dim, "scale": self.scale,
            "vocab_size": self.target_vocab_size, "min_frequency": self.min_frequency,
        }  # fmt: skip

    # -- the transform ---------------------------------------------------------------------

    def coefficients(self, chunks: Tensor | np.ndarray) -> np.ndarray:
        """Chunks (B, H, A) in environment units -> rounded DCT coefficients (B, H*A) int64, low frequency first."""
        x = self._normalised(chunks).numpy()
        return self._round(x)

    def _round(self, normalised: np.ndarray) -> np.ndarray:
        coeff = dct(normalised, type=2, norm="ortho", axis=1)  # (B, H, A): row f is frequency f
        return np.rint(coeff * self.scale).astype(np.int64).reshape(len(normalised), -1)

    def _chunks_from_coefficients(self, coeff: np.ndarray) -> Tensor:
        """(B, H*A) integer coefficients -> (B, H, A) normalised chunks (float64)."""
        spectrum = coeff.reshape(-1, self.horizon, self.action_dim) / self.scale
        return torch.from_numpy(idct(spectrum, type=2, norm="ortho", axis=1))

    def _to_text(self, coeff: np.ndarray) -> list[str]:
        offset = _CHAR_BASE + self.max_coefficient
        return ["".join(map(chr, row + offset)) for row in coeff]

    # -- fit / encode / decode -------------------------------------------------------------

    def fit(self, chunks: Tensor | np.ndarray) -> FASTTokenizer:
        """Fit the normaliser (if unfitted) and train the BPE vocabulary on chunks (B, H, A)."""
        normalised = self._normalised(chunks, fit=True).numpy()
        offset = _CHAR_BASE + self.max_coefficient
        alphabet = [chr(offset + v) for v in range(-self.max_coefficient, self.max_coefficient + 1)]
        # No normaliser or pre-tokenizer: a chunk's coefficient string is one word to compress.
        bpe = Tokenizer(models.BPE())
        trainer = trainers.BpeTrainer(
            vocab_size=self.target_vocab_size, min_frequency=self.min_frequency, special_tokens=[],
            initial_alphabet=alphabet, limit_alphabet=len(alphabet), show_progress=False,
            max_token_length=self.horizon * self.action_dim,
        )  # fmt: skip
        bpe.train_from_iterator(self._to_text(self._round(normalised)), trainer=trainer)
        self._set_bpe(bpe)
        return self

    def _set_bpe(self, bpe: Tokenizer) -> None:
        vocab = bpe.get_vocab()
        self._vocab = [""] * len(vocab)
        for token, index in vocab.items():
            self._vocab[index] = token
        if "" in self._vocab:
            raise ValueError("the BPE vocabulary has gaps in its ids; refit the FAST tokenizer")
        self.bpe = bpe
        self._coefficient_counts = None  # a new vocabulary: count again when asked

    def encode(self, chunks: Tensor | np.ndarray) -> list[Tensor]:
        """Chunks (B, H, A) in environment units -> B 1-D LongTensors of ids (lengths vary)."""
        self._check_fitted()
        texts = self._to_text(self.coefficients(chunks))
        ids = []
        for text, encoding in zip(texts, self.bpe.encode_batch(texts), strict=True):
            # BPE silently drops characters it has never seen; the full alphabet is in the
            # vocabulary, so a mismatch means a corrupt vocabulary, not odd data.
            if "".join(encoding.tokens) != text:
                raise RuntimeError(
                    "FAST's BPE lost coefficients while encoding; its vocabulary is corrupt, refit it"
                )
            ids.append(torch.tensor(encoding.ids, dtype=torch.long))
        return ids

    def decode_normalised(self, ids: Sequence[Tensor | Sequence[int]]) -> Tensor:
        """B id sequences -> chunks (B, H, A) in normalised units (float64).

        Raises:
            MalformedTokens: an id outside the vocabulary, or a sequence that does not decode to
                exactly H*A coefficients (truncated, padded or corrupt).
        """
        self._check_fitted()
        if isinstance(ids, Tensor) and ids.ndim == 1:
            raise MalformedTokens("FAST decodes a batch: pass a list of 1-D id sequences, e.g. [ids]")
        if len(ids) == 0:
            raise MalformedTokens("FAST got an empty batch of id sequences")
        offset = _CHAR_BASE + self.max_coefficient
        expected = self.horizon * self.action_dim
        rows = []
        for i, seq in enumerate(ids):
            seq = [int(v) for v in (seq.tolist() if isinstance(seq, Tensor) else seq)]
            bad = [v for v in seq if not 0 <= v < len(self._vocab)]
            if bad:
                raise MalformedTokens(
                    f"sequence {i} holds ids outside the vocabulary [0, {len(self._vocab)}): {bad[:5]}"
                )
            text = "".join(self._vocab[v] for v in seq)
            if len(text) != expected:
                raise MalformedTokens(
                    f"sequence {i} ({len(seq)} ids) decodes to {len(text)} DCT coefficients; a chunk needs "
                    f"exactly H*A = {expected}. It is truncated, padded or not from this tokenizer."
                )
            rows.append(np.fromiter((ord(c) - offset for c in text), dtype=np.int64, count=expected))
        return self._chunks_from_coefficients(np.stack(rows))

    def decode(self, ids: Sequence[Tensor | Sequence[int]]) -> Tensor:
        """B id sequences -> chunks (B, H, A) in environment units (float32)."""
        return self.normaliser.denormalise(self.decode_normalised(ids)).float()

    # -- persistence -----------------------------------------------------------------------

    def _save_state(self, directory: Path) -> None:
        (directory / BPE_FILE).write_text(self.bpe.to_str(pretty=True))

    def _load_state(self, directory: Path) -> None:
        path = directory / BPE_FILE
        if not path.exists():
            raise FileNotFoundError(
                f"FAST vocabulary {path} is missing; re-run notebook 02_action_tokenizers"
            )
        try:
            bpe = Tokenizer.from_str(path.read_text())
        except Exception as err:  # the tokenizers library raises a bare Exception on a bad file
            raise TokenizerFileError(
                f"FAST vocabulary {path} is unreadable (truncated?): {err}; {REGENERATE}"
            ) from err
        self._set_bpe(bpe)

    @classmethod
    def load(cls, directory: str | Path) -> FASTTokenizer:
        return super().load(directory)  # type: ignore[return-value]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FASTTokenizer):
            return NotImplemented
        same_bpe = (self.bpe is None) == (other.bpe is None) and (
            self.bpe is None or json.loads(self.bpe.to_str()) == json.loads(other.bpe.to_str())
        )
        return self.config() == other.config() and self.normaliser == other.normaliser and same_bpe
