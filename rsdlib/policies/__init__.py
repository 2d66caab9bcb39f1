"""Policies: a shared trunk, heads (rfsq_ar, rfsq_parallel, l1_regression, fast_ar), drafters, the
depth head, checkpoints."""

from rsdlib.policies.checkpoints import CheckpointError, load, load_drafter, save
from rsdlib.policies.configuration import ActionSpace, HeadDrafterConfig, PolicyConfig, TrunkConfig
from rsdlib.policies.depth_head import DepthHeadConfig, ResidualNormHead, remaining_residual
from rsdlib.policies.drafters import (
    Draft,
    Drafter,
    HeadDrafter,
    PolicyDrafter,
    RandomDrafter,
    ReplayDrafter,
    head_drafter_loss,
)
from rsdlib.policies.heads import (
    FastAutoregressive,
    L1Regression,
    Policy,
    RFSQAutoregressive,
    RFSQParallel,
    build_policy,
)
from rsdlib.policies.processor import (
    InstructionTokenizer,
    ObservationBatch,
    build_instruction_vocab,
    prepare_observations,
)
from rsdlib.policies.trunk import LlamaTrunk, Trunk, TrunkState, block_causal_mask

__all__ = [
    "ActionSpace",
    "CheckpointError",
    "DepthHeadConfig",
    "Draft",
    "Drafter",
    "FastAutoregressive",
    "HeadDrafter",
    "HeadDrafterConfig",
    "InstructionTokenizer",
    "L1Regression",
    "LlamaTrunk",
    "ObservationBatch",
    "Policy",
    "PolicyConfig",
    "PolicyDrafter",
    "RFSQAutoregressive",
    "RFSQParallel",
    "RandomDrafter",
    "ReplayDrafter",
    "ResidualNormHead",
    "Trunk",
    "TrunkConfig",
    "TrunkState",
    "block_causal_mask",
    "build_instruction_vocab",
    "build_policy",
    "load",
    "load_drafter",
    "head_drafter_loss",
    "prepare_observations",
    "remaining_residual",
    "save",
]
