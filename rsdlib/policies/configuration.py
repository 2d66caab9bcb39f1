"""What a policy is made of, as validated dataclasses (everything a checkpoint's JSON holds).

``TrunkConfig`` sizes the shared transformer trunk (image encoder, instruction embedding,
proprio, a ``LlamaModel`` body). ``ActionSpace`` is the tokenizer contract the heads are sized
from (L layers of N tokens over a V-code vocabulary; H x A actions). ``PolicyConfig`` names a
head and ties the two together; ``HeadDrafterConfig`` sizes the EAGLE-style draft head.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import torch

from rsdlib.actions import ACTION_DIM
from rsdlib.observations import MODALITIES, OBJECT_DIM, PROPRIO_DIM
from rsdlib.policies.proprio import ORIENTATIONS, proprio_feature_dim

if TYPE_CHECKING:
    from rsdlib.tokenizers.base import ActionTokenizer

#: Heads that run on a trunk (``rsdlib.policies.heads``).
HEAD_KINDS = ("rfsq_ar", "rfsq_parallel", "l1_regression", "fast_ar")


@dataclass(frozen=True)
class TrunkConfig:
    """The shared transformer trunk.

    Attributes:
        hidden_size: width of every token (D).
        num_layers: transformer layers.
        num_heads: attention heads (``hidden_size`` must divide by it).
        intermediate_size: MLP width.
        image_size: square camera resolution the encoder expects (LIBERO renders 128).
        num_cameras: cameras read per observation (agentview, wrist).
        image_channels: channels of the CNN encoder's stages, one stride-2 conv per entry.
        proprio_dim: proprioception size (LIBERO: 8).
        max_instruction_tokens: instruction length in word tokens (padded or truncated).
        instruction_vocab: words the instruction tokenizer knows (filled when it is trained).
        attn_implementation: ``"sdpa"`` or ``"eager"`` attention in the transformers body.
        kind: ``"llama"`` (the default small trunk: CNN patches + a ``LlamaModel``) or ``"llava"``
            (a transformers LLaVA vision-language model's vision tower, projector and language model).
        vlm_config: for ``"llava"``: the ``LlavaConfig`` as a dict (``LlavaConfig.to_dict()``);
            its text hidden size must equal ``hidden_size``.
        vlm_path: for ``"llava"``: a local folder with pretrained weights to start from (never
            downloaded); None builds random weights from ``vlm_config``.
        modality: ``"rgb"`` (camera images) or ``"lowdim"`` (one token per task object; the
            image fields are then unused): see :mod:`rsdlib.observations`.
        object_kinds: ``lowdim``: the object kinds it knows (each gets a learned embedding).
        max_objects: ``lowdim``: object tokens in the prefix (fewer are padded).
        observation_stats: ``lowdim``: ``object_mean``/``object_std`` (OBJECT_DIM each) and
            ``proprio_mean``/``proprio_std`` (of the proprio features, see ``proprio_orientation``)
            of the training data; the trunk standardises its inputs with them (positions vary by
            centimetres around offsets of a metre: raw, a small network resolves them slowly).
            Empty: inputs as they come.
        proprio_orientation: how the trunk reads the eef orientation in proprio:
            ``"axis_angle"`` as it comes (discontinuous where LIBERO's gripper points: the default
            only because checkpoints made before this option lack the field) or ``"rot6d"``
            (rotation-matrix columns; what ``prepare`` picks): see :mod:`rsdlib.policies.proprio`.
    """

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    image_size: int = 128
    num_cameras: int = 2
    image_channels: tuple[int, ...] = (16, 32, 64, 64, 128)
    proprio_dim: int = PROPRIO_DIM
    max_instruction_tokens: int = 20
    instruction_vocab: tuple[str, ...] = ()
    attn_implementation: str = "sdpa"
    kind: str = "llama"
    vlm_config: dict[str, Any] = field(default_factory=dict)
    vlm_path: str | None = None
    modality: str = "rgb"
    object_kinds: tuple[str, ...] = ()
    max_objects: int = 0
    observation_stats: dict[str, Any] = field(default_factory=dict)
    proprio_orientation: str = "axis_angle"

    def __post_init__(self) -> None:
        if self.proprio_orientation not in ORIENTATIONS:
            raise ValueError(
                f"TrunkConfig.proprio_orientation ({self.proprio_orientation!r}) must be one of {ORIENTATIONS}"
            )
        if self.kind not in ("llama", "llava"):
            raise ValueError(f"TrunkConfig.kind ({self.kind!r}) must be 'llama' or 'llava'")
        if self.modality not in MODALITIES:
            raise ValueError(f"TrunkConfig.modality ({self.modality!r}) must be one of {MODALITIES}")
        object.__setattr__(self, "object_kinds", tuple(str(k) for k in self.object_kinds))
        object.__setattr__(self, "observation_stats", json.loads(json.dumps(self.observation_stats)))
        sizes = {"object_mean": OBJECT_DIM, "object_std": OBJECT_DIM}
        features = proprio_feature_dim(self.proprio_dim, self.proprio_orientation)
        sizes |= {"proprio_mean": features, "proprio_std": features}
        wrong = {k: len(v) for k, v in self.observation_stats.items() if len(v) != sizes.get(k, -1)}
        if wrong or (self.observation_stats and set(self.observation_stats) != set(sizes)):
            raise ValueError(
                f"TrunkConfig.observation_stats needs {sizes} numbers under exactly those keys; got lengths "
                f"{ {k: len(v) for k, v in self.observation_stats.items()} }"
            )
        if any(s <= 0 for k, v in self.observation_stats.items() if k.endswith("_std") for s in v):
            raise ValueError("TrunkConfig.observation_stats: every standard deviation must be positive")
        if self.modality == "lowdim":
            if self.kind != "llama":
                raise ValueError("the lowdim modality runs on the 'llama' trunk (a VLM reads images)")
            if (
                not self.object_kinds
                or self.max_objects < 1
                or len(set(self.object_kinds)) != len(self.object_kinds)
            ):
                raise ValueError(
                    f"a lowdim trunk needs distinct object_kinds (got {self.object_kinds}) and max_objects >= 1 "
                    f"(got {self.max_objects}); prepare() reads both from the demonstrations"
                )
        # JSON-normal form, so a config equals itself after a checkpoint round trip.
        object.__setattr__(self, "vlm_config", json.loads(json.dumps(self.vlm_config)))
        if self.kind == "llava":
            text = self.vlm_config.get("text_config", {})
            if not self.vlm_config and not self.vlm_path:
                raise ValueError(
                    "TrunkConfig.kind 'llava' needs vlm_config (LlavaConfig.to_dict()) or vlm_path"
                )
            if self.vlm_config and text.get("hidden_size") != self.hidden_size:
                raise ValueError(
                    f"TrunkConfig.hidden_size ({self.hidden_size}) must equal the VLM's text hidden size "
                    f"({text.get('hidden_size')})"
                )
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "num_cameras"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrunkConfig.{name} ({getattr(self, name)}) must be at least 1")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"TrunkConfig.hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError(
                f"head size hidden_size/num_heads ({self.hidden_size}/{self.num_heads}) must be even for rotary positions"
            )
        if not self.image_channels:
            raise ValueError("TrunkConfig.image_channels must name at least one conv stage")
        if (
            self.kind == "llama"
            and self.modality == "rgb"
            and self.image_size % (2 ** len(self.image_channels))
        ):
            raise ValueError(
                f"TrunkConfig.image_size ({self.image_size}) must be divisible by 2**len(image_channels) "
                f"({2 ** len(self.image_channels)}): each stage halves the resolution"
            )
        if self.proprio_dim < 0 or self.max_instruction_tokens < 1:
            raise ValueError(
                f"proprio_dim ({self.proprio_dim}) must be >= 0 and max_instruction_tokens "
                f"({self.max_instruction_tokens}) >= 1"
            )
        if self.attn_implementation not in ("sdpa", "eager"):
            raise ValueError(f"attn_implementation ({self.attn_implementation!r}) must be 'sdpa' or 'eager'")
        object.__setattr__(self, "image_channels", tuple(int(c) for c in self.image_channels))
        object.__setattr__(self, "instruction_vocab", tuple(str(w) for w in self.instruction_vocab))

    @property
    def image_tokens_per_camera(self) -> int:
        """Patch tokens one camera adds to the prefix (the ``llama`` trunk's CNN)."""
        side = self.image_size // 2 ** len(self.image_channels)
        return side * side

    @property
    def prefix_length(self) -> int:
        """Prefix tokens of the ``llama`` trunk: image patches (or object tokens), instruction
        words, one proprio token.

        A trunk's own ``prefix_length`` attribute is authoritative (the ``llava`` trunk's
        depends on its vision tower).
        """
        observed = (
            self.max_objects if self.modality == "lowdim" else self.num_cameras * self.image_tokens_per_camera
        )
        return observed + self.max_instruction_tokens + (1 if self.proprio_dim else 0)


@dataclass(frozen=True)
class ActionSpace:
    """The action tokenizer's shape, as the heads see it (the tokenizer contract).

    Attributes:
        num_layers: RFSQ layers L (coarse to fine).
        num_latents: tokens per layer N.
        codebook_size: codes per layer V (product of the FSQ levels); with levels per layer, the
            largest layer's.
        layer_codebook_sizes: each layer's codes when they differ (coarse layers with fewer
            codes); empty when every layer has V. A head masks each layer's logits past its codes.
        horizon: action steps per chunk H.
        action_dim: action dimensions A.
        fast_vocab: FAST BPE vocabulary (``fast_ar`` only; 0 when unused).
        fast_max_tokens: longest FAST sequence including the end token (``fast_ar`` only).
    """

    num_layers: int = 4
    num_latents: int = 4
    codebook_size: int = 1024  # rsdlib.tokenizers.RFSQTokenizer's default levels [2] * 10
    layer_codebook_sizes: tuple[int, ...] = ()
    horizon: int = 8
    action_dim: int = ACTION_DIM
    fast_vocab: int = 0
    fast_max_tokens: int = 0

    def __post_init__(self) -> None:
        for name in ("num_layers", "num_latents", "codebook_size", "horizon", "action_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"ActionSpace.{name} ({getattr(self, name)}) must be at least 1")
        sizes = tuple(int(v) for v in self.layer_codebook_sizes)
        object.__setattr__(self, "layer_codebook_sizes", sizes)  # a JSON list back to a tuple
        if sizes and (len(sizes) != self.num_layers or min(sizes) < 1 or max(sizes) != self.codebook_size):
            raise ValueError(
                f"ActionSpace.layer_codebook_sizes ({list(sizes)}) must give each of the {self.num_layers} "
                f"layers its codes, the largest equal to codebook_size ({self.codebook_size})"
            )
        if self.fast_vocab < 0 or self.fast_max_tokens < 0:
            raise ValueError(
                f"fast_vocab ({self.fast_vocab}) and fast_max_tokens ({self.fast_max_tokens}) must be >= 0"
            )

    @classmethod
    def from_tokenizer(cls, tokenizer: ActionTokenizer, **extra: int) -> ActionSpace:
        """Read L, N, V, H, A from an object that satisfies the RFSQ tokenizer contract."""
        missing = [
            a
            for a in ("num_layers", "num_latents", "codebook_size", "horizon", "action_dim")
            if not hasattr(tokenizer, a)
        ]
        if missing:
            raise TypeError(f"{type(tokenizer).__name__} lacks {missing} of the RFSQ tokenizer contract")
        sizes = tuple(getattr(tokenizer, "layer_codebook_sizes", ()))
        return cls(
            num_layers=int(tokenizer.num_layers),
            num_latents=int(tokenizer.num_latents),
            codebook_size=int(tokenizer.codebook_size),
            layer_codebook_sizes=sizes if len(set(sizes)) > 1 else (),
            horizon=int(tokenizer.horizon),
            action_dim=int(tokenizer.action_dim),
            **extra,
        )

    def code_mask(self) -> torch.Tensor | None:
        """``(L, V)`` added to each layer's logits: 0 for the codes layer l has, -inf past them.

        None when every layer has all V codes (nothing to add)."""
        if not self.layer_codebook_sizes:
            return None
        codes = torch.arange(self.codebook_size)
        sizes = torch.tensor(self.layer_codebook_sizes)[:, None]
        return torch.zeros(self.num_layers, self.codebook_size).masked_fill(codes >= sizes, float("-inf"))


@dataclass(frozen=True)
class PolicyConfig:
    """A trunk plus one head.

    Attributes:
        head: one of :data:`HEAD_KINDS`.
        trunk: the trunk's sizes.
        actions: the action tokenizer's shape.
        metadata: free JSON (tokenizer path, normaliser stats, training run); not used to build.
    """

    head: str = "rfsq_ar"
    trunk: TrunkConfig = field(default_factory=TrunkConfig)
    actions: ActionSpace = field(default_factory=ActionSpace)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.head not in HEAD_KINDS:
            raise ValueError(f"PolicyConfig.head ({self.head!r}) must be one of {HEAD_KINDS}")
        if isinstance(self.trunk, dict):
            object.__setattr__(self, "trunk", _build(TrunkConfig, self.trunk))
        if isinstance(self.actions, dict):
            object.__setattr__(self, "actions", _build(ActionSpace, self.actions))
        if self.head == "fast_ar" and (self.actions.fast_vocab < 3 or self.actions.fast_max_tokens < 2):
            raise ValueError(
                f"head 'fast_ar' needs actions.fast_vocab >= 3 (got {self.actions.fast_vocab}) and "
                f"fast_max_tokens >= 2 (got {self.actions.fast_max_tokens})"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise."""
        return _build(cls, data)


@dataclass(frozen=True)
class HeadDrafterConfig:
    """The EAGLE-style draft head that reads the main trunk's prefix states.

    Attributes:
        trunk_hidden_size: width of the main trunk's prefix states it reads.
        hidden_size: its own width.
        num_blocks: residual MLP blocks per drafted layer.
        reads_blocks: also read the main trunk's final states of the last verified block (the
            block that produced the newest committed layer; free from the pass that verified it),
            as EAGLE reads the target model's features. False: the prefix alone (what heads made
            before this field read).
        shares_main_io: embed drafted tokens and score codes with the main policy's token
            embedding and output layer (frozen, as EAGLE shares the target's LM head), which the
            head then neither learns nor stores; it needs ``hidden_size`` equal to the main
            trunk's and is attached to its main policy when loaded
            (:meth:`rsdlib.policies.drafters.HeadDrafter.attach`). False: its own (heads made
            before this field).
        actions: the action tokenizer's shape (must match the main policy's).
        metadata: free JSON.
    """

    trunk_hidden_size: int = 128
    hidden_size: int = 128
    num_blocks: int = 2
    reads_blocks: bool = False
    shares_main_io: bool = False
    actions: ActionSpace = field(default_factory=ActionSpace)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("trunk_hidden_size", "hidden_size", "num_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"HeadDrafterConfig.{name} ({getattr(self, name)}) must be at least 1")
        if isinstance(self.actions, dict):
            object.__setattr__(self, "actions", _build(ActionSpace, self.actions))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadDrafterConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise."""
        return _build(cls, data)


def _build(cls: type, data: dict[str, Any]) -> Any:
    """Construct a config dataclass from a dict, naming unknown keys."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{cls.__name__} got unknown keys {unknown}; known: {sorted(known)}")
    return cls(**data)
