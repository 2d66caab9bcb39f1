"""Per-dimension action normalisation: 0.1st/99.9th percentile to [-1, 1], gripper kept binary.

Every tokenizer works in normalised space and hands back environment units. The map is
affine per dimension, ``y = clamp((x - centre) / half_range, -1, 1)``, so its inverse on
[-1, 1] is exact up to floating-point rounding. Values beyond the fitted percentiles are
clamped: the 0.1% tails of each dimension are what a tokenizer gives up. The design named
the 1st/99th percentiles; on the scripted demonstrations those clamp the expert's yaw turns
(errors up to ~1 in env units on held-out chunks, see notebook 02), so the project default is
:data:`DEFAULT_PERCENTILES`, used by the tokenizers and the demonstration dataset alike.

The gripper is a binary command (LIBERO: -1 open, +1 close); it is thresholded, never
scaled, so a decoded chunk always carries a valid gripper command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rsdlib.actions import ACTION_DIM, GRIPPER
from rsdlib.tokenizers.errors import REGENERATE, TokenizerFileError

#: (lower, upper) percentiles mapped to -1 and +1 everywhere in the project.
DEFAULT_PERCENTILES = (0.1, 99.9)

#: Half-ranges below this are treated as a constant dimension (it normalises to 0).
MIN_HALF_RANGE = 1e-6


class Normaliser:
    """Maps actions between environment units and [-1, 1], per dimension.

    Args:
        action_dim: A, the size of one action.
        gripper_dim: index of the binary gripper command, or None when there is none.
        lower_percentile: percentile mapped to -1.
        upper_percentile: percentile mapped to +1.
        gripper_threshold: environment value above which the gripper counts as closed (+1).
        gripper_values: (open, closed) environment values the gripper decodes to.
    """

    def __init__(
        self,
        *,
        action_dim: int = ACTION_DIM,
        gripper_dim: int | None = GRIPPER,
        lower_percentile: float = DEFAULT_PERCENTILES[0],
        upper_percentile: float = DEFAULT_PERCENTILES[1],
        gripper_threshold: float = 0.0,
        gripper_values: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        if action_dim < 1:
            raise ValueError(f"action_dim ({action_dim}) must be at least 1")
        if gripper_dim is not None and not 0 <= gripper_dim < action_dim:
            raise ValueError(
                f"gripper_dim ({gripper_dim}) must index an action of {action_dim} dims, or be None"
            )
        if not 0 <= lower_percentile < upper_percentile <= 100:
            raise ValueError(
                f"percentiles must satisfy 0 <= lower ({lower_percentile}) < upper ({upper_percentile}) <= 100"
            )
        self.action_dim = action_dim
        self.gripper_dim = gripper_dim
        self.lower_percentile = float(lower_percentile)
        self.upper_percentile = float(upper_percentile)
        self.gripper_threshold = float(gripper_threshold)
        self.gripper_values = (float(gripper_values[0]), float(gripper_values[1]))
        self.centre: Tensor | None = None  # (A,) float64
        self.half_range: Tensor | None = None  # (A,) float64

    @property
    def fitted(self) -> bool:
        return self.centre is not None

    def fit(self, actions: Tensor | np.ndarray) -> Normaliser:
        """Fit the percentiles on actions of shape (..., A) in environment units.

        Raises:
            ValueError: wrong last dimension, no rows, or non-finite values.
        """
        x = _as_float64(actions).reshape(-1, actions.shape[-1])
        self._check_dim(x)
        if len(x) == 0:
            raise ValueError("cannot fit a normaliser on zero actions")
        lo = torch.quantile(x, self.lower_percentile / 100, dim=0)
        hi = torch.quantile(x, self.upper_percentile / 100, dim=0)
        self.centre = (hi + lo) / 2
        self.half_range = ((hi - lo) / 2).clamp_min(MIN_HALF_RANGE)
        return self

    def normalise(self, actions: Tensor) -> Tensor:
        """Environment units to [-1, 1]; shape (..., A) kept, dtype kept (float)."""
        self._check_fitted()
        self._check_dim(actions)
        x = _as_float64(actions)
        y = ((x - self.centre) / self.half_range).clamp(-1.0, 1.0)
        if self.gripper_dim is not None:
            closed = x[..., self.gripper_dim] > self.gripper_threshold
            y[..., self.gripper_dim] = torch.where(closed, 1.0, -1.0)
        return y.to(_float_dtype(actions))

    def denormalise(self, normalised: Tensor) -> Tensor:
        """[-1, 1] to environment units (the exact inverse of :meth:`normalise` inside the range).

        The gripper decodes to ``gripper_values[1]`` where the normalised value is > 0, else
        ``gripper_values[0]``, whatever a tokenizer's decoder produced for it.
        """
        self._check_fitted()
        self._check_dim(normalised)
        y = _as_float64(normalised)
        x = y.clamp(-1.0, 1.0) * self.half_range + self.centre
        if self.gripper_dim is not None:
            opened, closed = self.gripper_values
            x[..., self.gripper_dim] = torch.where(y[..., self.gripper_dim] > 0, closed, opened)
        return x.to(_float_dtype(normalised))

    # -- persistence -----------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this normaliser, as plain JSON values (floats exact)."""
        self._check_fitted()
        return {
            "action_dim": self.action_dim,
            "gripper_dim": self.gripper_dim,
            "lower_percentile": self.lower_percentile,
            "upper_percentile": self.upper_percentile,
            "gripper_threshold": self.gripper_threshold,
            "gripper_values": list(self.gripper_values),
            "centre": self.centre.tolist(),
            "half_range": self.half_range.tolist(),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Normaliser:
        config = dict(config)
        centre, half_range = config.pop("centre"), config.pop("half_range")
        config["gripper_values"] = tuple(config["gripper_values"])
        norm = cls(**config)
        norm.centre = torch.tensor(centre, dtype=torch.float64)
        norm.half_range = torch.tensor(half_range, dtype=torch.float64)
        if norm.centre.shape != (norm.action_dim,) or norm.half_range.shape != (norm.action_dim,):
            raise ValueError(
                f"normaliser config holds statistics of the wrong size for action_dim {norm.action_dim}"
            )
        return norm

    def save(self, path: str | Path) -> Path:
        """Write the normaliser as JSON (Python's float repr round-trips exactly)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.config(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Normaliser:
        """Read a normaliser saved by :meth:`save`.

        Raises:
            FileNotFoundError: there is no file at ``path``.
            TokenizerFileError: the file is truncated or holds no normaliser (the message names it).
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(
                f"normaliser file {path} does not exist; fit a tokenizer and save it first"
            )

        try:
            return cls.from_config(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as err:  # ValueError: also bad JSON, wrong sizes
            raise TokenizerFileError(
                f"normaliser file {path} is truncated or not a normaliser ({type(err).__name__}: {err}); "
                f"{REGENERATE}"
            ) from err

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Normaliser):
            return NotImplemented
        return self.fitted == other.fitted and (not self.fitted or self.config() == other.config())

    def __repr__(self) -> str:
        state = "fitted" if self.fitted else "unfitted"
        return f"Normaliser(action_dim={self.action_dim}, gripper_dim={self.gripper_dim}, {state})"

    # -- checks ----------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError("the normaliser is not fitted: call fit(actions) or load a saved one")

    def _check_dim(self, x: Tensor | np.ndarray) -> None:
        if x.shape[-1] != self.action_dim:
            raise ValueError(f"actions must end in action_dim={self.action_dim}, got shape {tuple(x.shape)}")


def _as_float64(x: Tensor | np.ndarray) -> Tensor:
    t = torch.as_tensor(x)
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"actions must be numbers, got dtype {t.dtype}")
    t = t.to(torch.float64)
    if not torch.isfinite(t).all():
        raise ValueError("actions contain NaN or inf; clean the data before tokenizing")
    return t


def _float_dtype(x: Tensor | np.ndarray) -> torch.dtype:
    t = torch.as_tensor(x)
    return t.dtype if t.is_floating_point() else torch.float32
