"""The one interface every action tokenizer implements.

A tokenizer turns action chunks (B, H, A) in environment units into token ids and back. It
owns a :class:`~rsdlib.tokenizers.normaliser.Normaliser`: ids always describe normalised
actions, and :meth:`ActionTokenizer.decode` always returns environment units. Fixed-length
tokenizers (RFSQ, binning) return one LongTensor for a batch; FAST is variable length and
returns one 1-D LongTensor per chunk.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from rsdlib.tokenizers.errors import REGENERATE, TokenizerFileError
from rsdlib.tokenizers.normaliser import Normaliser

#: Token ids of a batch: a (B, ...) LongTensor, or one 1-D LongTensor per chunk (FAST).
TokenIds = Tensor | list[Tensor]
CONFIG_FILE = "config.json"
NORMALISER_FILE = "normaliser.json"


#: What to do about a damaged tokenizer file (every :class:`TokenizerFileError` says it).
class ActionTokenizer(ABC):
    """Fit on chunks, encode chunks to ids, decode ids to chunks, save and load.

    Subclasses set :attr:`kind` (the name in saved configs) and implement the abstract methods.
    """

    kind: ClassVar[str]
    #: Every concrete tokenizer, by :attr:`kind`, for :func:`load_tokenizer`.
    registry: ClassVar[dict[str, type[ActionTokenizer]]] = {}

    horizon: int
    action_dim: int
    normaliser: Normaliser

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            ActionTokenizer.registry[cls.kind] = cls

    # -- the interface ---------------------------------------------------------------------

    @abstractmethod
    def fit(self, chunks: Tensor | np.ndarray) -> ActionTokenizer:
        """Fit on training chunks (B, H, A) in environment units (and the normaliser, if unfitted)."""

    @abstractmethod
    def encode(self, chunks: Tensor | np.ndarray) -> TokenIds:
        """Chunks (B, H, A) in environment units to token ids."""

    @abstractmethod
    def decode(self, ids: TokenIds) -> Tensor:
        """Token ids to chunks (B, H, A) in environment units (float32)."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of distinct token ids (per RFSQ layer for RFSQ)."""

    @property
    @abstractmethod
    def fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`load`) has run."""

    def num_tokens(self, ids: TokenIds) -> Tensor:
        """Tokens per chunk, (B,) LongTensor (constant for fixed-length tokenizers)."""
        if isinstance(ids, Tensor):
            return torch.full((ids.shape[0],), ids[0].numel() if len(ids) else 0, dtype=torch.long)
        return torch.tensor([len(i) for i in ids], dtype=torch.long)

    def bits_per_token(self) -> float:
        """log2 of the vocabulary: the information one token can carry."""
        return math.log2(self.vocab_size)

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain JSON values."""

    # -- persistence -----------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json``, ``normaliser.json`` and the tokenizer's own state to ``directory``."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(
            json.dumps({"kind": self.kind, **self.config()}, indent=2) + "\n"
        )
        self.normaliser.save(directory / NORMALISER_FILE)
        self._save_state(directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ActionTokenizer:
        """Load a tokenizer saved by :meth:`save` (on a subclass: check it is that kind).

        Raises:
            FileNotFoundError: no tokenizer in ``directory``, or one of its files is missing.
            TokenizerFileError: a file is truncated or corrupt (the message names it).
            ValueError: an unknown kind, or another kind than the class loading it.
        """
        config = _read_config(directory)
        kind = config.pop("kind")
        if kind not in ActionTokenizer.registry:
            raise ValueError(
                f"{directory} holds an unknown tokenizer kind {kind!r}; known: {sorted(cls.registry)}"
            )
        target = ActionTokenizer.registry[kind]
        if cls is not ActionTokenizer and target is not cls:
            raise ValueError(f"{directory} holds a {kind!r} tokenizer, not a {cls.kind!r} one")
        normaliser = Normaliser.load(Path(directory) / NORMALISER_FILE)
        try:
            tokenizer = target(**config, normaliser=normaliser)
        except TypeError as err:  # keys this version's constructor does not take: another file's config
            raise TokenizerFileError(
                f"{Path(directory) / CONFIG_FILE} does not hold {target.__name__} arguments ({err}); "
                f"{REGENERATE}"
            ) from err
        tokenizer._load_state(Path(directory))
        return tokenizer

    def _save_state(self, directory: Path) -> None:
        """Write learned state beyond the config and normaliser (weights, vocabularies)."""
        return None

    def _load_state(self, directory: Path) -> None:
        """Read what :meth:`_save_state` wrote."""
        return None

    # -- helpers for subclasses ------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(chunks) or load a saved one")

    def _check_chunks(self, chunks: Tensor | np.ndarray) -> Tensor:
        """Validate chunks (B, H, A) and return them as a float64 tensor."""
        x = torch.as_tensor(chunks)
        if x.ndim != 3 or tuple(x.shape[1:]) != (self.horizon, self.action_dim):
            raise ValueError(
                f"chunks must have shape (B, H={self.horizon}, A={self.action_dim}), got {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise ValueError("chunks hold no chunk (B = 0)")
        if not x.is_floating_point():
            raise TypeError(f"chunks must be floating point, got {x.dtype}")
        if not torch.isfinite(x).all():
            raise ValueError("chunks contain NaN or inf")
        return x.to(torch.float64)

    def _normalised(self, chunks: Tensor | np.ndarray, *, fit: bool = False) -> Tensor:
        """Validated chunks in normalised units (float64), fitting the normaliser first if asked."""
        x = self._check_chunks(chunks)
        if fit and not self.normaliser.fitted:
            self.normaliser.fit(x.reshape(-1, self.action_dim))
        return self.normaliser.normalise(x)


def _read_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"no tokenizer at {directory} ({CONFIG_FILE} missing); notebook 02_action_tokenizers saves them"
        )
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TokenizerFileError(f"{path} is not valid JSON (truncated?): {err}; {REGENERATE}") from err
    if not isinstance(config, dict) or "kind" not in config:
        raise TokenizerFileError(f"{path} is not a tokenizer config (it names no 'kind'); {REGENERATE}")
    return config


def load_tokenizer(directory: str | Path) -> ActionTokenizer:
    """Load any saved tokenizer, whatever its kind (errors as :meth:`ActionTokenizer.load`)."""
    return ActionTokenizer.load(directory)
