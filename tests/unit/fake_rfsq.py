"""Stand-ins for the decoding and policy tests: a fake RFSQ tokenizer and tiny seeded models.

:class:`FakeRFSQ` satisfies the RFSQ tokenizer contract (``num_layers``, ``num_latents``,
``levels``, ``codebook_size``, ``horizon``, ``action_dim``, ``encode``, ``decode``,
``index_to_digits``) with a fixed random linear decoder, so these tests do not depend on the
real tokenizer.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rsdlib.policies import (
    ActionSpace,
    PolicyConfig,
    TrunkConfig,
    build_instruction_vocab,
    build_policy,
)

INSTRUCTIONS = ("pick up the black bowl", "put the plate on the stove", "open the drawer")


class FakeRFSQ:
    """Residual FSQ over a fixed random linear map; decode(prefix k) sums k layers' codes."""

    def __init__(
        self, *, num_layers: int = 3, num_latents: int = 2, levels: tuple[int, ...] = (3, 2)
    ) -> None:
        self.num_layers, self.num_latents, self.levels = num_layers, num_latents, list(levels)
        self.codebook_size = int(np.prod(levels))
        self.horizon, self.action_dim = 8, 7
        g = torch.Generator().manual_seed(1234)
        C = len(levels)
        self.weight = torch.randn(
            num_latents * C, self.horizon * self.action_dim, generator=g, dtype=torch.float64
        )
        self.radix = torch.tensor([int(np.prod(levels[i + 1 :])) for i in range(C)])

    def index_to_digits(self, ids: torch.Tensor, layer: object = None) -> torch.Tensor:
        """``(...)`` flat codes -> ``(..., channels)`` per-channel levels (every layer has the same)."""
        return (ids[..., None] // self.radix) % torch.tensor(self.levels)

    def _values(self, ids: torch.Tensor) -> torch.Tensor:
        """``(B, N, k)`` -> summed code vectors ``(B, N, C)``, layer l scaled by 2**-l."""
        lv = torch.tensor(self.levels, dtype=torch.float64)
        d = self.index_to_digits(ids).double()  # (B, N, k, C)
        centred = (d - (lv - 1) / 2) / ((lv - 1) / 2).clamp(min=1)  # in [-1, 1]
        scale = 2.0 ** -torch.arange(ids.shape[-1], dtype=torch.float64)
        return (centred * scale[None, None, :, None]).sum(2)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        B, N, k = ids.shape
        if self.num_latents != N or not 1 <= k <= self.num_layers:
            raise ValueError(
                f"ids {tuple(ids.shape)} do not fit (B, {self.num_latents}, 1..{self.num_layers})"
            )
        if ids.min() < 0 or ids.max() >= self.codebook_size:
            raise ValueError("token out of range")
        z = self._values(ids).reshape(B, -1)  # (B, N*C)
        return (z @ self.weight).reshape(B, self.horizon, self.action_dim).float()

    def encode(self, chunks: torch.Tensor) -> torch.Tensor:
        """Greedy residual quantisation of the least-squares latent (good enough for a fake)."""
        B = chunks.shape[0]
        C = len(self.levels)
        z = (chunks.double().reshape(B, -1) @ torch.linalg.pinv(self.weight)).reshape(B, self.num_latents, C)
        lv = torch.tensor(self.levels, dtype=torch.float64)
        half = ((lv - 1) / 2).clamp(min=1)
        out = []
        for li in range(self.num_layers):
            d = (z / 2.0**-li * half + (lv - 1) / 2).round().clamp(torch.zeros(C), lv - 1)
            out.append((d.long() * self.radix).sum(-1))
            z = z - (d - (lv - 1) / 2) / half * 2.0**-li
        return torch.stack(out, dim=-1)  # (B, N, L)


def trunk_config(*, hidden: int = 16, layers: int = 2, heads: int = 2) -> TrunkConfig:
    return TrunkConfig(
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        intermediate_size=2 * hidden,
        image_size=16,
        image_channels=(4, 8),
        max_instruction_tokens=6,
        instruction_vocab=build_instruction_vocab(INSTRUCTIONS),
    )


def tiny_policy(
    head: str = "rfsq_ar",
    *,
    seed: int = 0,
    num_layers: int = 3,
    num_latents: int = 2,
    codebook_size: int = 6,
    hidden: int = 16,
    sharpen: float = 1.0,
    **actions: int,
):
    """A seeded random policy in float64 (``sharpen`` scales output weights for peakier p)."""
    torch.manual_seed(seed)
    cfg = PolicyConfig(
        head=head,
        trunk=trunk_config(hidden=hidden),
        actions=ActionSpace(
            num_layers=num_layers, num_latents=num_latents, codebook_size=codebook_size, **actions
        ),
    )
    policy = build_policy(cfg).double().eval()
    with torch.no_grad():  # default inits are tiny; wider weights make outputs depend on the observation
        for name, param in policy.named_parameters():
            if param.dim() >= 2 and "out_weight" not in name:
                param.normal_(0.0, 1.0 / math.sqrt(param[0].numel()))
    if sharpen != 1.0 and hasattr(policy, "out_weight"):
        with torch.no_grad():
            policy.out_weight.mul_(sharpen)
    return policy


def observations(n: int, *, seed: int = 0, size: int = 16) -> list[dict]:
    """n random LIBERO-like observation dicts."""
    rng = np.random.default_rng(seed)
    return [
        {
            "agentview_rgb": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
            "eye_in_hand_rgb": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
            "proprio": rng.normal(size=8).astype(np.float32),
            "instruction": INSTRUCTIONS[i % len(INSTRUCTIONS)] + (" now" if i % 2 else ""),
        }
        for i in range(n)
    ]


def tiny_llava_policy(*, seed: int = 0, hidden: int = 16):
    """An ``rfsq_ar`` policy on a tiny random LLaVA (CLIP vision tower + Llama), float64."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
    )
    text = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=32,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    vlm = LlavaConfig(vision_config=vision, text_config=text, image_token_id=31)
    trunk = TrunkConfig(
        hidden_size=hidden,
        num_heads=2,
        image_size=16,
        max_instruction_tokens=6,
        instruction_vocab=build_instruction_vocab(INSTRUCTIONS),
        kind="llava",
        vlm_config=vlm.to_dict(),
    )
    torch.manual_seed(seed)
    cfg = PolicyConfig(
        head="rfsq_ar", trunk=trunk, actions=ActionSpace(num_layers=3, num_latents=2, codebook_size=6)
    )
    policy = build_policy(cfg).double().eval()
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if param.dim() >= 2 and "out_weight" not in name:
                param.normal_(0.0, 1.0 / math.sqrt(param[0].numel()))
    return policy
