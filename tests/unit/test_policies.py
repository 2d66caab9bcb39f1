"""Policies: configs, observation processing, the block-causal mask, the cache, drafters, checkpoints."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from fake_rfsq import INSTRUCTIONS, observations, tiny_llava_policy, tiny_policy, trunk_config

from rsdlib.policies import (
    ActionSpace,
    CheckpointError,
    HeadDrafter,
    HeadDrafterConfig,
    InstructionTokenizer,
    PolicyConfig,
    PolicyDrafter,
    TrunkConfig,
    block_causal_mask,
    build_instruction_vocab,
    load,
    save,
)

L, N, V = 3, 2, 6


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def main():
    return tiny_policy(seed=0)


@pytest.fixture(scope="module")
def obs(main):
    return main.prepare(observations(4))


# -- configs and inputs -------------------------------------------------------------------------------


def test_configs_name_the_bad_value():
    with pytest.raises(ValueError, match=r"hidden_size \(30\).*num_heads \(4\)"):
        TrunkConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match=r"image_size \(100\)"):
        TrunkConfig(image_size=100)
    with pytest.raises(ValueError, match="'nope'"):
        PolicyConfig(head="nope")
    with pytest.raises(ValueError, match=r"num_layers \(0\)"):
        ActionSpace(num_layers=0)
    with pytest.raises(ValueError, match="fast_vocab"):
        PolicyConfig(head="fast_ar")
    with pytest.raises(ValueError, match="unknown keys"):
        PolicyConfig.from_dict({"head": "rfsq_ar", "colour": "blue"})
    cfg = PolicyConfig(trunk=trunk_config())
    assert PolicyConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_instruction_tokenizer_is_word_level_with_padding():
    vocab = build_instruction_vocab(INSTRUCTIONS)
    tok = InstructionTokenizer(vocab=vocab, max_tokens=6)
    ids, mask = tok(["Pick up the BLACK bowl", "open the zebra"])
    assert ids[0, :5].tolist() == [vocab.index(w) + 2 for w in ("pick", "up", "the", "black", "bowl")]
    assert ids[1, 2] == 1  # unknown word
    assert mask.tolist() == [[True] * 5 + [False], [True] * 3 + [False] * 3]
    assert ids[1, 3:].tolist() == [0, 0, 0]


def test_prepare_observations_checks_shapes(main):
    bad = observations(1)
    bad[0]["agentview_rgb"] = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"agentview_rgb is uint8\(8, 8, 3\)"):
        main.prepare(bad)
    missing = observations(1)
    del missing[0]["proprio"]
    with pytest.raises(ValueError, match="lacks \\['proprio'\\]"):
        main.prepare(missing)


# -- the block-causal mask ----------------------------------------------------------------------------


def test_block_causal_mask_pattern():
    blocks = torch.tensor([[-1, -1, 0, 0, 1, 1]])
    valid = torch.tensor([[True, False, True, True, True, True]])
    m = block_causal_mask(blocks, valid, blocks)[0, 0].int().tolist()
    assert m == [
        [1, 0, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 0],
        [1, 0, 1, 1, 0, 0],
        [1, 0, 1, 1, 0, 0],
        [1, 0, 1, 1, 1, 1],
        [1, 0, 1, 1, 1, 1],
    ]


def test_later_blocks_do_not_change_earlier_logits(main, obs):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, V, (4, L, N), generator=g)
    changed = tokens.clone()
    changed[:, 1] = (changed[:, 1] + 1) % V  # layer 1 feeds block 2 only
    with torch.no_grad():
        a = main.teacher_forced_logits(obs, tokens)
        b = main.teacher_forced_logits(obs, changed)
    assert torch.equal(a[:, :2], b[:, :2])
    assert not torch.allclose(a[:, 2], b[:, 2])


def test_attention_is_bidirectional_inside_a_block(main, obs):
    tokens = torch.zeros(4, L, N, dtype=torch.long)
    changed = tokens.clone()
    changed[:, 0, 0] = 3  # block 1, latent 0's input
    with torch.no_grad():
        a = main.teacher_forced_logits(obs, tokens)
        b = main.teacher_forced_logits(obs, changed)
    assert not torch.allclose(a[:, 1, 1], b[:, 1, 1])  # latent 1 of the same block sees it
    assert torch.equal(a[:, 0], b[:, 0])


def test_prefix_reaches_the_action_blocks(main, obs):
    other = main.prepare(observations(4, seed=9))
    tokens = torch.zeros(4, L, N, dtype=torch.long)
    with torch.no_grad():
        assert not torch.allclose(
            main.teacher_forced_logits(obs, tokens), main.teacher_forced_logits(other, tokens)
        )


# -- the cache ----------------------------------------------------------------------------------------


def test_cached_ragged_blocks_and_truncation_equal_full_recomputation(main, obs):
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, V, (4, L, N), generator=g)
    wrong = (tokens + 1) % V
    with torch.no_grad():
        full = main.teacher_forced_logits(obs, tokens)  # (B, L, N, V)
        state = main.prefix(obs)
        # items run different numbers of blocks, some with wrong inputs that are cropped later
        got = main.block_logits(state, wrong, torch.zeros(4, dtype=torch.long), torch.tensor([1, 2, 3, 0]))
        assert torch.allclose(got[:3, 0], full[:3, 0], atol=1e-12)
        main.trunk.truncate(state, torch.tensor([1, 1, 1, 0]))  # keep block 0 where it ran
        assert state.blocks_held().tolist() == [1, 1, 1, 0]
        start = torch.tensor([1, 1, 1, 0])
        got = main.block_logits(state, tokens, start, L - start)
        assert torch.allclose(got[:3, : L - 1], full[:3, 1:], atol=1e-12)
        assert torch.allclose(got[3], full[3], atol=1e-12)


def test_an_item_does_not_depend_on_its_batch(main, obs):
    tokens = torch.randint(0, V, (4, L, N), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        together = main.teacher_forced_logits(obs, tokens)
        alone = main.teacher_forced_logits(main.prepare(observations(4)[2:3]), tokens[2:3])
    assert torch.allclose(together[2:3], alone, atol=1e-12)


# -- drafters -----------------------------------------------------------------------------------------


def test_policy_drafter_reuses_its_cache_correctly(main, obs):
    """Draft, then commit something else: the next draft equals the main greedy continuation."""
    drafter = PolicyDrafter(policy=main)
    state = main.prefix(obs)
    drafter.begin(obs=obs, main_state=state)
    tokens = torch.zeros(4, L, N, dtype=torch.long)
    committed = torch.zeros(4, dtype=torch.long)
    d0 = drafter.propose(tokens=tokens, committed=committed, gamma=2, temperature=0.0, generator=None)
    tokens[:, 0] = d0.tokens[:, 0]
    tokens[:2, 1] = (d0.tokens[:2, 1] + 1) % V  # items 0, 1 reject layer 1; items 2, 3 accept it
    tokens[2:, 1] = d0.tokens[2:, 1]
    committed = torch.tensor([2, 2, 2, 2])
    d1 = drafter.propose(tokens=tokens, committed=committed, gamma=1, temperature=0.0, generator=None)
    with torch.no_grad():
        want = main.teacher_forced_logits(obs, tokens)[:, 2].argmax(-1)
    assert torch.equal(d1.tokens[:, 0], want)


def test_head_drafter_proposes_shapes_and_trains(main, obs):
    cfg = HeadDrafterConfig(trunk_hidden_size=16, hidden_size=8, num_blocks=1, actions=main.config.actions)
    head = HeadDrafter(config=cfg).double()
    with torch.no_grad():
        state = main.prefix(obs)
    head.begin(obs=obs, main_state=state)
    d = head.propose(
        tokens=torch.zeros(4, L, N, dtype=torch.long),
        committed=torch.tensor([0, 1, 2, 3]),
        gamma=2,
        temperature=1.0,
        generator=torch.Generator().manual_seed(0),
    )
    assert d.tokens.shape == (4, 2, N) and d.q.shape == (4, 2, N, V)
    assert torch.allclose(d.q.sum(-1), torch.ones(4, 2, N, dtype=torch.float64))
    batch = {
        "prefix_hidden": state.prefix_hidden,
        "prefix_valid": state.prefix_valid,
        "tokens": torch.zeros(4, L, N, dtype=torch.long),
    }
    loss, metrics = head.loss(batch)
    loss.backward()
    assert set(metrics) == {"loss", *(f"{m}_layer{i}" for m in ("acc", "match") for i in range(3))}


@pytest.mark.parametrize("head", ["rfsq_ar", "rfsq_parallel", "l1_regression", "fast_ar"])
def test_every_head_has_a_differentiable_loss(head):
    policy = tiny_policy(head, fast_vocab=7, fast_max_tokens=5) if head == "fast_ar" else tiny_policy(head)
    obs = policy.prepare(observations(3))
    batch = {
        "obs": obs,
        "tokens": torch.randint(0, V, (3, L, N)),
        "actions": torch.randn(3, 8, 7, dtype=torch.float64),
        "fast_tokens": torch.tensor([[0, 2, 6, -100, -100], [1, 6, -100, -100, -100], [3, 3, 3, 3, 6]]),
    }
    loss, metrics = policy.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and metrics["loss"] == loss.item()
    grads = [p.grad for p in policy.trunk.image_encoder.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


# -- checkpoints --------------------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["rfsq_ar", "rfsq_parallel", "l1_regression", "fast_ar"])
def test_checkpoint_round_trip(tmp_path, head):
    extra = {"fast_vocab": 7, "fast_max_tokens": 5} if head == "fast_ar" else {}
    policy = tiny_policy(head, **extra)
    save(policy, tmp_path / head, metadata={"steps": 3})
    back = load(tmp_path / head)
    assert type(back) is type(policy) and back.config == policy.config
    for (k, a), (_, b) in zip(policy.state_dict().items(), back.state_dict().items(), strict=True):
        if "embed_tokens" not in k:
            assert a.dtype == b.dtype and torch.equal(a, b), k


def test_head_drafter_checkpoint_round_trip(tmp_path):
    head = HeadDrafter(config=HeadDrafterConfig(trunk_hidden_size=16, hidden_size=8))
    save(head, tmp_path / "h")
    back = load(tmp_path / "h")
    assert isinstance(back, HeadDrafter)
    assert all(
        torch.equal(a, b) for a, b in zip(head.state_dict().values(), back.state_dict().values(), strict=True)
    )


def test_checkpoint_errors_name_the_file_and_the_mismatch(tmp_path):
    policy = tiny_policy()
    path = save(policy, tmp_path / "ck")
    with pytest.raises(CheckpointError, match="nowhere/config.json does not exist"):
        load(tmp_path / "nowhere")

    doc = json.loads((path / "config.json").read_text())
    doc["config"]["actions"]["codebook_size"] = 7
    (path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(
        CheckpointError, match=r"model.safetensors does not match .*out_weight: file \(3, 16, 6\)"
    ):
        load(path)

    doc["config"]["actions"]["codebook_size"] = 6
    doc["config"]["trunk"]["num_layers"] = 3
    (path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"missing \[trunk.body_model.layers.2"):
        load(path)

    doc["config"]["trunk"]["num_layers"] = 2
    doc["config"]["head"] = "hydra"
    (path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="config.json: the config does not build.*hydra"):
        load(path)

    doc["config"]["head"] = "rfsq_ar"
    (path / "config.json").write_text(json.dumps(doc))
    load(path)  # restored: loads again
    (path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="model.safetensors is not a readable safetensors file"):
        load(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        load(path)


# -- a transformers vision-language model behind the same interface ---------------------------------


def test_llava_trunk_caches_decodes_exactly_and_round_trips(tmp_path):
    from rsdlib.decoding import decode_rfsq_ar, make_rule, speculative_decode
    from rsdlib.policies import RandomDrafter

    policy = tiny_llava_policy()
    obs = policy.prepare(observations(3))
    assert policy.trunk.prefix_length == 2 * 4 + 6 + 1  # (16/8)**2 patches per camera (CLS dropped)
    greedy = decode_rfsq_ar(policy, obs).tokens
    tokens = torch.zeros_like(greedy)
    with torch.no_grad():
        for layer in range(L):
            tokens[:, layer] = policy.teacher_forced_logits(obs, tokens)[:, layer].argmax(-1)
    assert torch.equal(tokens, greedy)
    assert len({tuple(t.flatten().tolist()) for t in greedy}) > 1  # the images matter
    drafter = RandomDrafter(num_layers=L, num_latents=N, codebook_size=V, seed=1)
    assert torch.equal(
        speculative_decode(policy, drafter, obs, rule=make_rule("exact"), gamma=2).tokens, greedy
    )
    save(policy, tmp_path / "llava")
    back = load(tmp_path / "llava")
    assert back.config == policy.config
    assert torch.equal(decode_rfsq_ar(back, obs).tokens, greedy)


def test_llava_trunk_config_is_checked():
    with pytest.raises(ValueError, match="needs vlm_config"):
        TrunkConfig(kind="llava")
    with pytest.raises(ValueError, match=r"hidden_size \(32\) must equal the VLM's text hidden size \(16\)"):
        TrunkConfig(kind="llava", hidden_size=32, vlm_config={"text_config": {"hidden_size": 16}})


def test_load_drafter_wraps_policies_and_refuses_baselines(tmp_path):
    from rsdlib.policies import load_drafter

    save(tiny_policy(seed=3, hidden=8), tmp_path / "tiny")
    assert isinstance(load_drafter(tmp_path / "tiny"), PolicyDrafter)
    save(HeadDrafter(config=HeadDrafterConfig(trunk_hidden_size=16, hidden_size=8)), tmp_path / "head")
    assert isinstance(load_drafter(tmp_path / "head"), HeadDrafter)
    save(tiny_policy("l1_regression"), tmp_path / "l1")
    with pytest.raises(CheckpointError, match="'l1_regression' policy, which cannot draft"):
        load_drafter(tmp_path / "l1")


def test_a_head_sharing_the_main_policys_io_stores_only_what_it_learns(tmp_path):
    from rsdlib.decoding.methods import check_drafter
    from rsdlib.policies import load_drafter

    main = tiny_policy(seed=1, sharpen=3.0)
    cfg = HeadDrafterConfig(
        trunk_hidden_size=16, hidden_size=16, shares_main_io=True, actions=main.config.actions
    )
    torch.manual_seed(0)
    head = HeadDrafter(config=cfg).double()
    own = HeadDrafter(config=dataclasses.replace(cfg, shares_main_io=False))
    # neither learnt nor stored: the embedding and output layer are the main policy's
    assert not any(k.startswith(("token_embed", "out_")) for k in head.state_dict())
    io = main.token_embed.weight.numel() + main.out_weight.numel() + main.out_bias.numel()
    assert sum(p.numel() for p in own.parameters()) - sum(p.numel() for p in head.parameters()) == io
    with pytest.raises(RuntimeError, match="not attached"):
        head.begin(obs=main.prepare(observations(2)), main_state=main.prefix(main.prepare(observations(2))))
        head.propose(tokens=torch.zeros(2, 3, 2, dtype=torch.long), committed=torch.zeros(2, dtype=torch.long),
                     gamma=1, temperature=0.0, generator=None)  # fmt: skip
    head.attach(main).eval()
    obs = main.prepare(observations(3))
    pooled = head.pool(main.prefix(obs).prefix_hidden, main.prefix(obs).prefix_valid)
    layer, prev = torch.ones(3, dtype=torch.long), torch.tensor([[0, 1], [2, 3], [4, 5]])
    logits = head.layer_logits(pooled, layer, prev)
    with torch.no_grad():  # the main policy's output layer moves the head's logits with it
        main.out_bias[1] += 1.0
    assert torch.allclose(head.layer_logits(pooled, layer, prev), logits + 1.0)
    save(head, tmp_path / "head")
    with pytest.raises(CheckpointError, match="load it with its main policy"):
        load_drafter(tmp_path / "head")
    back = load_drafter(tmp_path / "head", main=main)
    assert back.attached_to is main
    assert torch.equal(back.layer_logits(pooled, layer, prev), head.layer_logits(pooled, layer, prev))
    other = tiny_policy(seed=2, codebook_size=5)
    with pytest.raises(CheckpointError, match=r"\(L, N, V\) = \(3, 2, 6\)"):
        load_drafter(tmp_path / "head", main=other)
    with pytest.raises(ValueError, match="another policy's token embedding"):
        check_drafter(back, tiny_policy(seed=2))
    with pytest.raises(ValueError, match="nothing to attach"):
        own.attach(main)


def test_the_cache_keyword_follows_the_models_signature():
    """transformers renamed past_key_values to cache; a wrong name would silently drop the cache."""
    from rsdlib.policies.trunk import cache_kwarg

    class Before(torch.nn.Module):
        def forward(self, inputs_embeds=None, past_key_values=None, **kwargs): ...

    class After(torch.nn.Module):
        def forward(self, inputs_embeds=None, cache=None, **kwargs): ...

    assert cache_kwarg(Before(), "c") == {"past_key_values": "c"}
    assert cache_kwarg(After(), "c") == {"cache": "c"}
