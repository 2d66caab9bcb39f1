"""Turning logits into tokens: greedy at temperature 0, else a draw with an explicit generator."""

from __future__ import annotations

import torch


def probabilities(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(logits / T)`` over the last axis; T = 0 (greedy) reports ``softmax(logits)``.

    At T = 0 the choice is the argmax whatever the probabilities; they are kept for display.
    """
    if temperature < 0:
        raise ValueError(f"temperature ({temperature}) must be >= 0")
    return torch.softmax(logits / (temperature if temperature > 0 else 1.0), dim=-1)


def sample(probs: torch.Tensor, *, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """A token per distribution: argmax at T = 0, else a draw.

    Args:
        probs: ``(..., V)`` from :func:`probabilities`.
        temperature: 0 for greedy.
        generator: required when ``temperature > 0``.

    Returns:
        ``(...)`` long tokens.
    """
    if temperature == 0:
        return probs.argmax(dim=-1)
    if generator is None:
        raise ValueError("sampling at temperature > 0 needs an explicit torch.Generator")
    flat = probs.reshape(-1, probs.shape[-1])
    draws = torch.multinomial(flat, 1, generator=generator)[:, 0]
    return draws.reshape(probs.shape[:-1])
