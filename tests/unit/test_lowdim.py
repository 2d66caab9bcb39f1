"""The lowdim modality: object tokens in place of camera images, the same trunk, heads and decoders."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from rsdlib.observations import OBJECT_DIM
from rsdlib.policies import ActionSpace, PolicyConfig, TrunkConfig, build_instruction_vocab, build_policy
from rsdlib.policies.packed import PackedBatches, PackedChunks
from tests.unit.fake_rfsq import INSTRUCTIONS

KINDS = ("akita_black_bowl", "plate", "wooden_cabinet")


def lowdim_trunk(*, max_objects: int = 5) -> TrunkConfig:
    return TrunkConfig(
        hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, max_instruction_tokens=6,
        instruction_vocab=build_instruction_vocab(INSTRUCTIONS), modality="lowdim",
        object_kinds=KINDS, max_objects=max_objects,
    )  # fmt: skip


def lowdim_policy(head: str = "rfsq_ar", *, max_objects: int = 5, seed: int = 0):
    torch.manual_seed(seed)
    cfg = PolicyConfig(
        head=head,
        trunk=lowdim_trunk(max_objects=max_objects),
        actions=ActionSpace(num_layers=3, num_latents=2, codebook_size=6),
    )
    policy = build_policy(cfg).double().eval()
    with torch.no_grad():  # wider than the default init, so outputs depend on the observation
        for name, param in policy.named_parameters():
            if param.dim() >= 2 and "out_weight" not in name:
                param.normal_(0.0, 1.0 / math.sqrt(param[0].numel()))
    return policy


def scene(n: int, *, seed: int = 0) -> list[dict]:
    """n observations of a scene with two identical bowls, a plate and a cabinet."""
    rng = np.random.default_rng(seed)
    kinds = ("akita_black_bowl", "akita_black_bowl", "plate", "wooden_cabinet")
    return [
        {
            "objects": rng.normal(size=(len(kinds), OBJECT_DIM)).astype(np.float32),
            "object_kinds": kinds,
            "proprio": rng.normal(size=8).astype(np.float32),
            "instruction": INSTRUCTIONS[i % len(INSTRUCTIONS)],
        }
        for i in range(n)
    ]


def greedy_tokens(policy, observations) -> torch.Tensor:
    from rsdlib.decoding import decode_rfsq_ar

    with torch.no_grad():
        return decode_rfsq_ar(policy, policy.prepare(observations)).tokens


def test_the_order_objects_are_listed_in_does_not_change_the_decoded_tokens():
    policy = lowdim_policy()
    obs = scene(6)
    order = [3, 1, 0, 2]
    shuffled = [
        o | {"objects": o["objects"][order], "object_kinds": tuple(o["object_kinds"][i] for i in order)}
        for o in obs
    ]
    assert torch.equal(greedy_tokens(policy, obs), greedy_tokens(policy, shuffled))
    moved = [o | {"objects": o["objects"] + np.float32(0.5)} for o in obs]  # the scene itself matters
    assert not torch.equal(greedy_tokens(policy, obs), greedy_tokens(policy, moved))


def test_padding_slots_are_never_attended():
    """The same scene in a trunk with room for more objects: the padded slots change nothing."""
    small, large = lowdim_policy(max_objects=4), lowdim_policy(max_objects=9)
    large.load_state_dict(small.state_dict())
    obs = scene(4, seed=1)
    assert torch.equal(greedy_tokens(small, obs), greedy_tokens(large, obs))


def test_unknown_kinds_and_missing_rows_are_named():
    policy = lowdim_policy()
    with pytest.raises(ValueError, match="\\['ramekin'\\] are unknown to this policy"):
        policy.prepare([scene(1)[0] | {"object_kinds": ("ramekin", "plate", "plate", "plate")}])
    with pytest.raises(ValueError, match="lacks \\['objects', 'object_kinds'\\]"):
        policy.prepare([{"proprio": np.zeros(8, np.float32), "instruction": "x"}])
    with pytest.raises(ValueError, match="reads at most 5"):
        policy.prepare(
            [scene(1)[0] | {"objects": np.zeros((6, OBJECT_DIM), np.float32), "object_kinds": ("plate",) * 6}]
        )


def test_a_lowdim_trunk_is_checked_when_configured():
    with pytest.raises(ValueError, match="object_kinds"):
        TrunkConfig(modality="lowdim")
    with pytest.raises(ValueError, match="modality"):
        TrunkConfig(modality="depth")


def _packed(n: int = 12, *, seed: int = 0) -> PackedChunks:
    rng = np.random.default_rng(seed)
    kinds = ("akita_black_bowl", "plate", "wooden_cabinet")
    object_kind = torch.tensor([[1, 1, 2, 0]] * (n // 2) + [[1, 2, 3, 3]] * (n - n // 2))
    return PackedChunks(
        images=None,
        proprio=torch.as_tensor(rng.normal(size=(n, 8)), dtype=torch.float32),
        instruction=torch.arange(n) % len(INSTRUCTIONS),
        actions=torch.as_tensor(rng.uniform(-1, 1, (n, 8, 7)), dtype=torch.float32),
        actions_raw=torch.as_tensor(rng.uniform(-1, 1, (n, 8, 7)), dtype=torch.float32),
        valid=torch.ones(n, 8, dtype=torch.bool),
        episode=torch.arange(n) // 3,
        tokens=torch.as_tensor(rng.integers(0, 6, (n, 3, 2))),
        fast_tokens=None,
        instructions=tuple(sorted(INSTRUCTIONS)),
        objects=torch.as_tensor(rng.normal(size=(n, 4, OBJECT_DIM)), dtype=torch.float32)
        * (object_kind > 0)[..., None],
        object_kind=object_kind,
        kinds=kinds,
    )


def test_packed_lowdim_chunks_round_trip_and_train(tmp_path):
    packed = _packed()
    back = PackedChunks.load(packed.save(tmp_path / "train.npz"))
    assert back.images is None and back.kinds == packed.kinds
    assert torch.equal(back.objects, packed.objects) and torch.equal(back.object_kind, packed.object_kind)
    policy = lowdim_policy().float().train()
    batches = PackedBatches(back, trunk_config=policy.config.trunk, batch_size=8)
    batch = batches(0, torch.Generator().manual_seed(0))
    # The packed kind ids are mapped onto the trunk's (here the same list) and padded to its slots.
    assert batch["obs"].objects.shape == (8, 5, OBJECT_DIM)
    loss, _ = policy.loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert policy.trunk.object_encoder.kind_embed.weight.grad.abs().sum() > 0


def test_a_packed_batch_equals_the_processor_on_the_same_observation():
    """Training (packed) and acting (processor) feed the trunk the same tensors."""
    packed, policy = _packed(), lowdim_policy()
    trunk = policy.config.trunk
    batch = packed.batch(torch.tensor([0, 7]), trunk_config=trunk, dtype=torch.float64)
    observations = []
    for i in (0, 7):
        n = int((packed.object_kind[i] > 0).sum())
        observations.append({
            "objects": packed.objects[i, :n].numpy(),
            "object_kinds": tuple(packed.kinds[k - 1] for k in packed.object_kind[i, :n].tolist()),
            "proprio": packed.proprio[i].numpy(),
            "instruction": packed.instructions[int(packed.instruction[i])],
        })  # fmt: skip
    direct = policy.prepare(observations)
    for name in ("objects", "object_kinds", "instruction_ids", "instruction_mask"):
        assert torch.equal(
            getattr(batch["obs"], name), getattr(direct, name).to(getattr(batch["obs"], name).dtype)
        ), name


def test_an_rgb_batch_is_refused_by_a_lowdim_trunk_and_back():
    from tests.unit.fake_rfsq import observations, tiny_policy

    rgb, lowdim = tiny_policy(), lowdim_policy()
    with pytest.raises(ValueError, match="lowdim trunk reads object rows"):
        lowdim.trunk.prefix(rgb.prepare(observations(2)))
    with pytest.raises(ValueError, match="rgb trunk reads camera images"):
        rgb.trunk.prefix(lowdim.prepare(scene(2)))


def test_object_jitter_moves_only_real_objects_positions():
    from rsdlib.policies.data import jitter_objects

    packed = _packed()
    rows, kinds = packed.objects, packed.object_kind
    out = jitter_objects(rows, kinds, torch.Generator().manual_seed(0), std=0.01)
    moved = (out - rows).abs()
    assert torch.equal(out[..., 3:], rows[..., 3:])  # orientation and joints untouched
    assert moved[kinds == 0].max() == 0 and moved[kinds > 0][:, :3].min() > 0
    assert 0.005 < moved[kinds > 0][:, :3].mean() < 0.012  # about std * sqrt(2 / pi)


def test_observation_statistics_are_checked_and_rebuild_from_the_config():
    stats = {"object_mean": [0.0] * OBJECT_DIM, "object_std": [1.0] * OBJECT_DIM}
    stats |= {"proprio_mean": [0.0] * 8, "proprio_std": [1.0] * 8}
    with pytest.raises(ValueError, match="observation_stats"):
        TrunkConfig(**{**lowdim_trunk().__dict__, "observation_stats": {"object_mean": [0.0]}})
    with pytest.raises(ValueError, match="positive"):
        TrunkConfig(**{**lowdim_trunk().__dict__, "observation_stats": stats | {"proprio_std": [0.0] * 8}})
    plain = lowdim_policy()

    def with_stats(observation_stats: dict) -> torch.nn.Module:
        """The same weights in a trunk that standardises with ``observation_stats``."""
        trunk = replace(plain.config.trunk, observation_stats=observation_stats)
        policy = build_policy(replace(plain.config, trunk=trunk)).double().eval()
        policy.load_state_dict(plain.state_dict())  # statistics are not weights: the state dict loads
        return policy

    unit = with_stats(stats)
    obs = scene(4, seed=3)
    assert torch.equal(greedy_tokens(plain, obs), greedy_tokens(unit, obs))  # mean 0, std 1: no change
    moved = with_stats({**stats, "object_mean": [0.3] * OBJECT_DIM, "object_std": [0.5] * OBJECT_DIM})

    def prefix(policy):
        with torch.no_grad():
            return policy.trunk.prefix(policy.prepare(obs)).prefix_hidden

    assert torch.equal(prefix(plain), prefix(unit)) and not torch.allclose(prefix(plain), prefix(moved))
