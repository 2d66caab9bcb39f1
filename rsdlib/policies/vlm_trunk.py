"""A transformers vision-language model behind the :class:`Trunk` interface (LLaVA family).

Each camera image goes through the VLM's vision tower and multimodal projector (the model's
own image path, ``LlavaModel.get_image_features``), the instruction through a word embedding,
the proprio through a linear map; the VLM's language model is the body, run on
``inputs_embeds`` with the same block-causal 4-D mask and croppable ``DynamicCache`` as the
default trunk. Everything is built from ``TrunkConfig.vlm_config`` or loaded from the local
folder ``TrunkConfig.vlm_path``; nothing is downloaded.

The instruction uses the workbench's word-level tokenizer rather than the VLM's own: its
tokenizer files are not part of a random test config. With a real checkpoint, swapping in its
tokenizer means replacing :attr:`word_embed` with the language model's input embeddings.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache, LlavaConfig, LlavaModel

from rsdlib.policies.configuration import TrunkConfig
from rsdlib.policies.processor import ObservationBatch
from rsdlib.policies.proprio import proprio_feature_dim, proprio_features
from rsdlib.policies.trunk import Trunk, cache_kwarg

#: CLIP's input normalisation (LLaVA's image processor default).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class LlavaTrunk(Trunk):
    """A LLaVA model's vision tower, projector and language model as the trunk.

    Args:
        config: ``kind="llava"`` with ``vlm_config`` and/or ``vlm_path``.
    """

    def __init__(self, *, config: TrunkConfig) -> None:
        super().__init__()
        if config.kind != "llava":
            raise ValueError(f"LlavaTrunk needs TrunkConfig.kind 'llava', got {config.kind!r}")
        self.config = config
        if config.vlm_path:
            self.vlm = LlavaModel.from_pretrained(config.vlm_path, local_files_only=True)
        else:
            self.vlm = LlavaModel(LlavaConfig.from_dict(config.vlm_config))
        vlm_cfg = self.vlm.config
        text = vlm_cfg.text_config
        if text.hidden_size != config.hidden_size:
            raise ValueError(
                f"TrunkConfig.hidden_size ({config.hidden_size}) != the VLM's text hidden size ({text.hidden_size})"
            )
        self.hidden_size = text.hidden_size
        vision = vlm_cfg.vision_config
        if vision.image_size != config.image_size:
            raise ValueError(
                f"TrunkConfig.image_size ({config.image_size}) != the vision tower's image_size ({vision.image_size})"
            )
        patches = (vision.image_size // vision.patch_size) ** 2
        self.image_tokens = patches + (0 if vlm_cfg.vision_feature_select_strategy == "default" else 1)
        D = self.hidden_size
        self.camera_embed = nn.Parameter(torch.randn(config.num_cameras, self.image_tokens, D) * 0.02)
        self.word_embed = nn.Embedding(len(config.instruction_vocab) + 2, D)
        self.word_pos_embed = nn.Parameter(torch.randn(config.max_instruction_tokens, D) * 0.02)
        features = proprio_feature_dim(config.proprio_dim, config.proprio_orientation)
        self.proprio_proj = nn.Linear(features, D) if config.proprio_dim else None
        self.prefix_length = (
            config.num_cameras * self.image_tokens
            + config.max_instruction_tokens
            + (1 if config.proprio_dim else 0)
        )
        self.register_buffer("pixel_mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        # The body reads inputs_embeds only; the language model's token embedding is never used.
        self.vlm.language_model.embed_tokens.requires_grad_(False)

    def embed_prefix(self, obs: ObservationBatch) -> tuple[torch.Tensor, torch.Tensor]:
        B, C = obs.images.shape[:2]
        if self.config.num_cameras != C:
            raise ValueError(f"got {C} cameras, the trunk was built for {self.config.num_cameras}")
        pixels = (obs.images.flatten(0, 1) - self.pixel_mean.to(obs.images.dtype)) / self.pixel_std.to(
            obs.images.dtype
        )  # (B*C, 3, S, S)
        cfg = self.vlm.config
        feats = self.vlm.get_image_features(
            pixels,
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        ).pooler_output
        patches = torch.stack(list(feats)).unflatten(0, (B, C)) + self.camera_embed  # (B, C, T_img, D)
        words = self.word_embed(obs.instruction_ids) + self.word_pos_embed  # (B, T, D)
        parts = [patches.flatten(1, 2), words]
        valid = [
            torch.ones(B, C * self.image_tokens, dtype=torch.bool, device=words.device),
            obs.instruction_mask,
        ]
        if self.proprio_proj is not None:
            parts.append(
                self.proprio_proj(proprio_features(obs.proprio, self.config.proprio_orientation))[:, None]
            )
            valid.append(torch.ones(B, 1, dtype=torch.bool, device=words.device))
        return torch.cat(parts, dim=1), torch.cat(valid, dim=1)

    def body(
        self,
        embeds: torch.Tensor,
        *,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: DynamicCache | None,
    ) -> torch.Tensor:
        out = self.vlm.language_model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            use_cache=cache is not None,
            **cache_kwarg(self.vlm.language_model, cache),
        )
        return out.last_hidden_state

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.vlm.config.text_config)
