"""The trunk: observation -> prefix states, then blocks of action positions with a croppable KV cache.

Every token carries a *block id*: the prefix is block -1, action block l is block l. One rule
makes the whole mask: a query in block b attends a key iff the key is valid and its block is
<= b. So the prefix is bidirectional, action blocks see the prefix and every earlier block, and
attention inside a block is bidirectional (the block-causal mask of DESIGN.md section 2).

The cache remembers, per batch item, each cached key's block id and whether it is valid.
:meth:`Trunk.truncate` drops an item's blocks from some index on by marking their keys invalid
(so items in one batch may hold different numbers of blocks) and crops the columns that no item
needs any more from the ``DynamicCache``. Padding positions (ragged block counts, padded
instruction words) are written as invalid keys that nobody attends.

The default :class:`LlamaTrunk` is a ``transformers`` ``LlamaModel`` fed ``inputs_embeds``
with an explicit 4-D boolean mask ``(B, 1, q, kv)`` (in transformers 5.24 a 4-D mask is passed
to attention as-is, ``create_causal_mask`` returns it untouched) and explicit ``position_ids``.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache, LlamaConfig, LlamaModel

from rsdlib.observations import OBJECT_DIM
from rsdlib.policies.configuration import TrunkConfig
from rsdlib.policies.processor import ObservationBatch
from rsdlib.policies.proprio import proprio_feature_dim, proprio_features

PREFIX_BLOCK = -1


def pooled_prefix(hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``(B, D)`` mean of the real prefix positions of ``(B, P, D)`` hidden states: one summary of
    what the trunk saw, which the depth monitors (``jerk``, ``learned``) and the depth head read."""
    w = valid.to(hidden.dtype)[..., None]  # (B, P, 1)
    return (hidden * w).sum(dim=1) / w.sum(dim=1).clamp(min=1)


@dataclass
class TrunkState:
    """A batch's KV cache and what each cached key is.

    Attributes:
        cache: the transformers cache (keys ``(B, heads, K, head_dim)`` per layer), or None
            for a trunk run without a cache.
        key_block: ``(B, K)`` block id of every cached key (prefix -1).
        key_valid: ``(B, K)`` whether the key may be attended.
        prefix_hidden: ``(B, P, D)`` the prefix's final hidden states (drafters read them).
        prefix_valid: ``(B, P)`` which prefix positions are real.
    """

    cache: DynamicCache | None
    key_block: torch.Tensor
    key_valid: torch.Tensor
    prefix_hidden: torch.Tensor
    prefix_valid: torch.Tensor

    @property
    def num_keys(self) -> int:
        return int(self.key_block.shape[1])

    def blocks_held(self) -> torch.Tensor:
        """``(B,)`` one more than the highest valid cached block (0 when only the prefix is held)."""
        blocks = torch.where(self.key_valid, self.key_block, torch.full_like(self.key_block, PREFIX_BLOCK))
        return blocks.max(dim=1).values + 1


def cache_kwarg(model: nn.Module, cache: DynamicCache | None) -> dict[str, DynamicCache | None]:
    """The KV cache as the keyword ``model.forward`` takes: ``cache`` in transformers >= 5.2x,
    ``past_key_values`` before. An unknown keyword would be swallowed by ``**kwargs`` silently and
    decoding would run without its cache, so the name is read from the signature."""
    params = inspect.signature(type(model).forward).parameters
    return {"cache" if "cache" in params else "past_key_values": cache}


def block_causal_mask(
    key_block: torch.Tensor, key_valid: torch.Tensor, query_block: torch.Tensor
) -> torch.Tensor:
    """The attention mask: a query in block b sees valid keys in blocks <= b.

    Args:
        key_block: ``(B, K)`` block id per key.
        key_valid: ``(B, K)`` bool.
        query_block: ``(B, q)`` block id per query.

    Returns:
        ``(B, 1, q, K)`` bool, True where attention is allowed.
    """
    allowed = key_valid[:, None, :] & (key_block[:, None, :] <= query_block[:, :, None])  # (B, q, K)
    return allowed[:, None]  # (B, 1, q, K)


class Trunk(nn.Module, ABC):
    """The interface every trunk implements (the default small transformer, or a wrapped VLM)."""

    hidden_size: int
    prefix_length: int

    @abstractmethod
    def embed_prefix(self, obs: ObservationBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix token embeddings ``(B, P, D)`` and their validity ``(B, P)``."""

    @abstractmethod
    def body(
        self,
        embeds: torch.Tensor,
        *,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: DynamicCache | None,
    ) -> torch.Tensor:
        """Run the transformer body on ``embeds`` ``(B, q, D)``; return hidden ``(B, q, D)``.

        ``mask`` is ``(B, 1, q, K_past + q)`` bool and ``positions`` ``(B, q)``. With a cache,
        the new keys are appended to it.
        """

    @abstractmethod
    def new_cache(self) -> DynamicCache:
        """An empty cache for :meth:`body`."""

    # -- shared logic -------------------------------------------------------------------------

    def prefix_positions(self, batch: int, length: int, device: torch.device) -> torch.Tensor:
        """``(B, P)`` rotary positions of the prefix tokens: in order, unless a trunk says otherwise."""
        return torch.arange(length, device=device).expand(batch, length)

    def prefix(self, obs: ObservationBatch, *, use_cache: bool = True) -> TrunkState:
        """One pass over the prefix; returns the state to run blocks after."""
        return self._prefix_pass(obs, None, use_cache=use_cache)[0]

    def prefix_and_blocks(
        self,
        obs: ObservationBatch,
        embeds: torch.Tensor,
        *,
        block: torch.Tensor,
        valid: torch.Tensor,
        positions: torch.Tensor,
    ) -> tuple[TrunkState, torch.Tensor]:
        """The prefix and the first action positions in one cached pass (arguments as
        :meth:`extend`). A block whose input depends on no decoded token (block 0) needs no pass
        of its own; the prefix cannot attend to it, so the prefix states are those of :meth:`prefix`.

        Returns:
            the state holding the prefix and those positions, and their hidden ``(B, q, D)``.
        """
        return self._prefix_pass(obs, (embeds, block, valid, positions), use_cache=True)

    def extend(
        self,
        state: TrunkState,
        embeds: torch.Tensor,
        *,
        block: torch.Tensor,
        valid: torch.Tensor,
        positions: torch.Tensor,
    ) -> torch.Tensor:
        """Run action positions after what ``state`` holds and append them to its cache.

        Args:
            state: from :meth:`prefix`, possibly extended and truncated.
            embeds: ``(B, q, D)`` inputs.
            block: ``(B, q)`` block id of each position (>= 0).
            valid: ``(B, q)`` False marks padding, which later queries never attend.
            positions: ``(B, q)`` rotary positions.

        Returns:
            ``(B, q, D)`` hidden states.
        """
        if state.cache is None:
            raise ValueError("this TrunkState was made with use_cache=False; use Trunk.full instead")
        key_block = torch.cat([state.key_block, block], dim=1)  # (B, K + q)
        key_valid = torch.cat([state.key_valid, valid], dim=1)  # (B, K + q)
        mask = block_causal_mask(key_block, key_valid, block)  # (B, 1, q, K + q)
        hidden = self.body(embeds, mask=mask, positions=positions, cache=state.cache)
        state.key_block, state.key_valid = key_block, key_valid
        return hidden

    def truncate(self, state: TrunkState, keep_blocks: torch.Tensor) -> None:
        """Forget every cached block >= ``keep_blocks[i]`` for item i; crop what nobody needs.

        Args:
            state: the state to edit in place.
            keep_blocks: ``(B,)`` blocks to keep per item (the prefix is always kept).
        """
        drop = state.key_block >= keep_blocks[:, None]  # (B, K)
        state.key_valid = state.key_valid & ~drop
        needed = state.key_valid.any(dim=0)  # (K,)
        last = int(needed.nonzero().max()) + 1 if bool(needed.any()) else 0
        last = max(last, int(state.prefix_valid.shape[1]))
        surplus = state.num_keys - last
        if surplus > 0:
            state.cache.crop(-surplus)
            state.key_block = state.key_block[:, :last]
            state.key_valid = state.key_valid[:, :last]

    def full(
        self,
        obs: ObservationBatch,
        embeds: torch.Tensor,
        *,
        block: torch.Tensor,
        valid: torch.Tensor,
        positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix and action positions in one pass without a cache (training, and the parity check).

        Returns:
            prefix hidden ``(B, P, D)`` and action hidden ``(B, q, D)``.
        """
        state, hidden = self._prefix_pass(obs, (embeds, block, valid, positions), use_cache=False)
        return state.prefix_hidden, hidden

    def _prefix_pass(
        self,
        obs: ObservationBatch,
        actions: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None,
        *,
        use_cache: bool,
    ) -> tuple[TrunkState, torch.Tensor | None]:
        """The prefix, then ``actions`` (embeds, block, valid, positions) if given, in one pass."""
        embeds, valid = self.embed_prefix(obs)  # (B, P, D), (B, P)
        B, P, _ = embeds.shape
        prefix_valid = valid
        block = torch.full((B, P), PREFIX_BLOCK, dtype=torch.long, device=embeds.device)
        positions = self.prefix_positions(B, P, embeds.device)
        if actions is not None:
            a_embeds, a_block, a_valid, a_positions = actions
            embeds = torch.cat([embeds, a_embeds], dim=1)
            block = torch.cat([block, a_block], dim=1)
            valid = torch.cat([valid, a_valid], dim=1)
            positions = torch.cat([positions, a_positions], dim=1)
        cache = self.new_cache() if use_cache else None
        mask = block_causal_mask(block, valid, block)
        hidden = self.body(embeds, mask=mask, positions=positions, cache=cache)  # (B, P + q, D)
        state = TrunkState(
            cache=cache,
            key_block=block,
            key_valid=valid,
            prefix_hidden=hidden[:, :P],
            prefix_valid=prefix_valid,
        )
        return state, None if actions is None else hidden[:, P:]


class ImageEncoder(nn.Module):
    """A small CNN shared by the cameras: stride-2 conv stages, then a 1x1 projection to D.

    ``(B, 3, S, S)`` -> ``(B, (S / 2**stages)**2, D)`` patch tokens.
    """

    def __init__(self, *, channels: tuple[int, ...], hidden_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in channels:
            layers += [
                nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1),
                nn.GroupNorm(num_groups=min(8, c_out), num_channels=c_out),
                nn.GELU(),
            ]
            c_in = c_out
        self.stages = nn.Sequential(*layers)
        self.proj = nn.Conv2d(c_in, hidden_size, kernel_size=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.stages(images * 2.0 - 1.0))  # (B, D, s, s)
        return x.flatten(2).transpose(1, 2)  # (B, s*s, D)


class ObjectEncoder(nn.Module):
    """One token per object row: an MLP over its pose (also relative to the end effector) plus a
    learned embedding of its kind; two bowls are two tokens of one kind, apart only by pose.

    ``(B, K, OBJECT_DIM)`` rows (standardised where the trunk has statistics), ``(B, K, 3)`` their
    offsets from the end effector (scaled by :attr:`RELATIVE_SCALE`), ``(B, K)`` kind ids (0:
    padding) -> ``(B, K, D)`` tokens.
    """

    #: Offsets to the hand are a few decimetres; in decimetres they span what the MLP expects.
    RELATIVE_SCALE = 10.0

    def __init__(self, *, num_kinds: int, hidden_size: int) -> None:
        super().__init__()
        self.kind_embed = nn.Embedding(num_kinds + 1, hidden_size)
        self.mlp = nn.Sequential(
            nn.Linear(OBJECT_DIM + 3, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, rows: torch.Tensor, relative: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([rows, relative], dim=-1)) + self.kind_embed(kinds)


class LlamaTrunk(Trunk):
    """The default trunk: CNN image patches (``rgb``) or object tokens (``lowdim``), instruction
    words and proprio, into a ``LlamaModel``.

    Args:
        config: sizes; ``config.instruction_vocab`` fixes the word embedding size.
    """

    def __init__(self, *, config: TrunkConfig) -> None:
        super().__init__()
        self.config = config
        self.hidden_size = config.hidden_size
        self.prefix_length = config.prefix_length
        D = config.hidden_size
        if config.modality == "lowdim":
            self.object_encoder = ObjectEncoder(num_kinds=len(config.object_kinds), hidden_size=D)
            # Standardisation from the config, not the state dict: a checkpoint's JSON rebuilds it.
            for name, value in config.observation_stats.items():
                self.register_buffer(name, torch.tensor(value, dtype=torch.float32), persistent=False)
        else:
            self.image_encoder = ImageEncoder(channels=config.image_channels, hidden_size=D)
            self.camera_embed = nn.Parameter(
                torch.zeros(config.num_cameras, config.image_tokens_per_camera, D)
            )
            nn.init.normal_(self.camera_embed, std=0.02)
        self.word_embed = nn.Embedding(len(config.instruction_vocab) + 2, D)
        self.word_pos_embed = nn.Parameter(torch.zeros(config.max_instruction_tokens, D))
        features = proprio_feature_dim(config.proprio_dim, config.proprio_orientation)
        self.proprio_proj = nn.Linear(features, D) if config.proprio_dim else None
        nn.init.normal_(self.word_pos_embed, std=0.02)
        self.llama_config = LlamaConfig(
            vocab_size=1,
            hidden_size=D,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            num_key_value_heads=config.num_heads,
            max_position_embeddings=4096,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
            attn_implementation=config.attn_implementation,
        )
        self.body_model = LlamaModel(self.llama_config)
        # The body reads inputs_embeds only; its token embedding is never used.
        self.body_model.embed_tokens.requires_grad_(False)

    def embed_prefix(self, obs: ObservationBatch) -> tuple[torch.Tensor, torch.Tensor]:
        words = self.word_embed(obs.instruction_ids) + self.word_pos_embed  # (B, T, D)
        observed, observed_valid = self._embed_observed(obs)  # (B, O, D), (B, O)
        parts, valid = [observed, words], [observed_valid, obs.instruction_mask]
        if self.proprio_proj is not None:
            proprio = proprio_features(obs.proprio, self.config.proprio_orientation)
            proprio = self._standardise(proprio, "proprio")
            parts.append(self.proprio_proj(proprio)[:, None])  # (B, 1, D)
            valid.append(torch.ones(words.shape[0], 1, dtype=torch.bool, device=words.device))
        return torch.cat(parts, dim=1), torch.cat(valid, dim=1)  # (B, P, D), (B, P)

    def prefix_positions(self, batch: int, length: int, device: torch.device) -> torch.Tensor:
        """Object tokens share one position, the one just before the instruction: a set, not a
        sequence, so the policy sees the same scene whatever order the objects come in, and
        however many padding slots the trunk has (every offset to them is the same)."""
        positions = super().prefix_positions(batch, length, device)
        if self.config.modality == "lowdim":
            positions = positions.clone()
            positions[:, : self.config.max_objects] = self.config.max_objects - 1
        return positions

    def _standardise(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """``(x - mean) / std`` with the config's statistics for ``name``, where it has them."""
        if f"{name}_mean" not in self.config.observation_stats:
            return x
        mean, std = getattr(self, f"{name}_mean"), getattr(self, f"{name}_std")
        return (x - mean.to(x.dtype)) / std.to(x.dtype)

    def _embed_observed(self, obs: ObservationBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The modality's tokens: object tokens (padding invalid) or every camera's patches."""
        if self.config.modality == "lowdim":
            if obs.objects is None or obs.object_kinds is None:
                raise ValueError("a lowdim trunk reads object rows; this batch has none (an rgb batch?)")
            rows = self._standardise(obs.objects, "object")
            relative = (obs.objects[..., :3] - obs.proprio[:, None, :3]) * ObjectEncoder.RELATIVE_SCALE
            tokens = self.object_encoder(rows, relative, obs.object_kinds)
            return tokens, obs.object_kinds > 0
        if obs.images is None:
            raise ValueError("an rgb trunk reads camera images; this batch has none (a lowdim batch?)")
        B, C = obs.images.shape[:2]
        if self.config.num_cameras != C:
            raise ValueError(f"got {C} cameras, the trunk was built for {self.config.num_cameras}")
        patches = self.image_encoder(obs.images.flatten(0, 1))  # (B*C, s*s, D)
        patches = (patches.unflatten(0, (B, C)) + self.camera_embed).flatten(1, 2)  # (B, C*s*s, D)
        return patches, torch.ones(B, patches.shape[1], dtype=torch.bool, device=patches.device)

    def body(
        self,
        embeds: torch.Tensor,
        *,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: DynamicCache | None,
    ) -> torch.Tensor:
        out = self.body_model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            use_cache=cache is not None,
            **cache_kwarg(self.body_model, cache),
        )
        return out.last_hidden_state

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.llama_config)
