"""RFSQ with levels per layer: the quantizer, the tokenizer, and policies whose layers have fewer codes.

Coarse layers with few codes are what makes a layer draftable (all N tokens must match for
``exact`` to accept it); these tests pin that the per-layer quantizer is ``ResidualFSQ`` where
the levels agree, that ids stay inside each layer's codes end to end, and that RSD stays
lossless (``exact``) and distribution-preserving (``speculative``) on such policies.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from fake_rfsq import observations, tiny_policy
from scipy.stats import chisquare
from vector_quantize_pytorch import ResidualFSQ

from rsdlib.decoding import decode_rfsq_ar, make_rule, speculative_decode
from rsdlib.decoding.graphed import GraphedDecoder
from rsdlib.decoding.monitors import MonitorInput, entropy
from rsdlib.decoding.result import check_tokenizer
from rsdlib.policies import (
    ActionSpace,
    HeadDrafter,
    HeadDrafterConfig,
    PolicyDrafter,
    RandomDrafter,
    checkpoints,
)
from rsdlib.tokenizers import RFSQTokenizer, digits_to_index
from rsdlib.tokenizers.rfsq import PerLayerResidualFSQ

pytestmark = pytest.mark.usefixtures("one_thread")

LEVELS = [[2, 2, 2], [3, 3, 3], [4, 4, 4]]  # 8, 27, 64 codes
SIZES = (2, 4, 6)  # a tiny policy's codes per layer (V = 6)


@pytest.mark.parametrize("levels", [[2] * 10, [8, 5, 5, 5], [3, 4]])
def test_per_layer_quantizer_is_residual_fsq_where_the_levels_agree(levels):
    ref = ResidualFSQ(levels=levels, num_quantizers=4, dim=len(levels), quantize_dropout=True)
    mine = PerLayerResidualFSQ([levels] * 4)
    x = torch.randn(64, 4, len(levels), generator=torch.Generator().manual_seed(0)) * 2
    with torch.no_grad():
        codes_ref, ids_ref = ref.eval()(x)
        codes, ids = mine(x)
        assert torch.equal(ids, ids_ref.long())
        assert torch.equal(codes, codes_ref)
        for k in (1, 2, 4):
            assert torch.equal(
                mine.output_from_ids(ids[..., :k]), ref.get_output_from_indices(ids_ref[..., :k])
            )
    # quantize dropout: the same seed keeps the same layers
    ref.train()
    for seed in range(5):
        _, ids_ref = ref(x, rand_quantize_dropout_fixed_seed=seed)
        keep = int((ids_ref[0, 0] >= 0).sum())
        _, ids = mine(x, keep=keep)
        assert torch.equal(ids, ids_ref.long())


@pytest.fixture(scope="module")
def chunks():
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 8)[None, :, None]
    slope = rng.normal(size=(400, 1, 7))
    return (np.tanh(slope * t + 0.1 * rng.normal(size=(400, 8, 7))) * 0.8).astype(np.float32)


@pytest.fixture(scope="module")
def tokenizer(chunks):
    return RFSQTokenizer(num_latents=2, num_layers=3, levels=LEVELS, hidden=32, steps=60, batch_size=64).fit(
        chunks, progress=False
    )


def test_tokens_stay_inside_each_layer_and_decode_exactly(tokenizer, chunks, tmp_path):
    assert tokenizer.layer_codebook_sizes == (8, 27, 64) and tokenizer.codebook_size == 64
    ids = tokenizer.encode(chunks)  # (B, N, L)
    for layer, size in enumerate(tokenizer.layer_codebook_sizes):
        assert int(ids[..., layer].min()) >= 0 and int(ids[..., layer].max()) < size
        assert len(ids[..., layer].unique()) > 1, "every layer must carry information"
    assert torch.equal(tokenizer.decode(ids), tokenizer.reconstruct(chunks))
    errors = [
        float(((tokenizer.decode(ids[..., :k]) - torch.as_tensor(chunks)) ** 2).mean()) for k in (1, 2, 3)
    ]
    assert errors[2] < errors[0], errors
    # save and load: same config (levels per layer), same ids
    tokenizer.save(tmp_path / "tok")
    loaded = RFSQTokenizer.load(tmp_path / "tok")
    assert loaded.layer_levels == LEVELS and torch.equal(loaded.encode(chunks), ids)
    # truncating keeps the first layers' levels and decodes the same prefixes
    short = tokenizer.truncated(2)
    assert short.layer_levels == LEVELS[:2]
    assert torch.equal(short.decode(ids[..., :2]), tokenizer.decode(ids[..., :2]))
    # a layer's id past its own codes is refused, though it is below the largest layer's
    bad = ids.clone()
    bad[0, 0, 0] = 8
    with pytest.raises(ValueError, match="codes of their layer"):
        tokenizer.decode(bad)


def test_digits_follow_each_layers_levels(tokenizer):
    for layer, levels in enumerate(LEVELS):
        ids = torch.arange(tokenizer.layer_codebook_sizes[layer])
        digits = tokenizer.index_to_digits(ids, layer=layer)
        assert (digits < torch.tensor(levels)).all()
        assert torch.equal(digits_to_index(digits, levels), ids)
    with pytest.raises(ValueError, match="say which layer"):
        tokenizer.index_to_digits(torch.arange(4))
    mixed = tokenizer.index_to_digits(torch.tensor([[7, 26]]), layer=torch.tensor([[0, 1]]))
    assert mixed.tolist() == [[[1, 1, 1], [2, 2, 2]]]


@pytest.mark.parametrize(
    "levels, layers",
    [([[2, 2], [2, 2, 2]], 2), ([[2, 2], [3, 3]], 3), ([[2, 1], [3, 3]], 2), ([], 2)],
)
def test_bad_levels_are_refused(levels, layers):
    with pytest.raises(ValueError, match="levels"):
        RFSQTokenizer(num_layers=layers, levels=levels)


# -- policies over layers with fewer codes -------------------------------------------------------------


@pytest.fixture(scope="module")
def main():
    return tiny_policy(seed=3, sharpen=3.0, layer_codebook_sizes=SIZES)


@pytest.fixture(scope="module")
def obs(main):
    return main.prepare(observations(6))


def test_action_space_checks_the_layer_sizes():
    with pytest.raises(ValueError, match="layer_codebook_sizes"):
        ActionSpace(num_layers=3, num_latents=2, codebook_size=6, layer_codebook_sizes=(2, 4))
    with pytest.raises(ValueError, match="layer_codebook_sizes"):
        ActionSpace(num_layers=3, num_latents=2, codebook_size=6, layer_codebook_sizes=(2, 4, 5))
    assert ActionSpace(num_layers=2, num_latents=2, codebook_size=6).code_mask() is None


def test_a_layer_never_gives_a_code_it_does_not_have(main, obs):
    tokens = decode_rfsq_ar(main, obs).tokens  # (B, L, N)
    logits = main.teacher_forced_logits(obs, tokens)  # (B, L, N, V)
    for layer, size in enumerate(SIZES):
        assert (tokens[:, layer] < size).all()
        assert torch.isneginf(logits[:, layer, :, size:]).all()
        assert torch.isfinite(logits[:, layer, :, :size]).all()
    unmasked = tiny_policy(seed=3, sharpen=3.0)  # the same weights without the mask
    raw = unmasked.teacher_forced_logits(obs, tokens)
    assert (raw[:, 0].argmax(-1) >= SIZES[0]).any(), "the mask must matter for this test to mean anything"
    g = torch.Generator().manual_seed(0)
    sampled = decode_rfsq_ar(main, obs.repeat(50), temperature=1.0, generator=g).tokens
    assert all((sampled[:, layer] < size).all() for layer, size in enumerate(SIZES))


def _head(main, *, reads_blocks=False):
    torch.manual_seed(11)
    cfg = HeadDrafterConfig(
        trunk_hidden_size=16,
        hidden_size=8,
        num_blocks=1,
        actions=main.config.actions,
        reads_blocks=reads_blocks,
    )
    return HeadDrafter(config=cfg).double().eval()


@pytest.mark.parametrize("gamma", [1, 2, 3])
def test_exact_rsd_is_greedy_decoding_on_layers_with_fewer_codes(main, obs, gamma):
    greedy = decode_rfsq_ar(main, obs)
    for drafter in (_head(main), RandomDrafter(num_layers=3, num_latents=2, codebook_size=6, seed=gamma)):
        rsd = speculative_decode(main, drafter, obs, rule=make_rule("exact"), gamma=gamma)
        assert torch.equal(rsd.tokens, greedy.tokens)
    head, B = _head(main), obs.batch_size
    for layer, size in enumerate(SIZES):  # the head masks as the main policy does
        logits = head.layer_logits(
            head.pool(*_prefix(main, obs)), torch.full((B,), layer), torch.zeros(B, 2).long()
        )
        assert torch.isneginf(logits[..., size:]).all() and torch.isfinite(logits[..., :size]).all()
    fixed = GraphedDecoder(main, drafter=_head(main, reads_blocks=True), gamma=gamma)
    assert torch.equal(fixed.plain(obs).tokens, greedy.tokens)
    assert torch.equal(fixed.rsd(obs).tokens, greedy.tokens)


def _prefix(main, obs):
    state = main.trunk.prefix(obs, use_cache=False)
    return state.prefix_hidden, state.prefix_valid


def test_speculative_sampling_keeps_the_distribution_on_layers_with_fewer_codes():
    sizes = (2, 3)
    main = tiny_policy(seed=1, num_layers=2, num_latents=2, codebook_size=3, layer_codebook_sizes=sizes)
    other = tiny_policy(seed=2, num_layers=2, num_latents=2, codebook_size=3, hidden=8, sharpen=4.0,
                        layer_codebook_sizes=sizes)  # fmt: skip
    obs1 = main.prepare(observations(1, seed=4))
    combos = [
        c for c in itertools.product(range(3), repeat=4) if c[0] < 2 and c[1] < 2
    ]  # layer 0 has 2 codes
    tokens = torch.tensor(combos).reshape(-1, 2, 2)
    with torch.no_grad():
        logp = torch.log_softmax(main.teacher_forced_logits(obs1.repeat(len(combos)), tokens), -1)
    dist = logp.gather(-1, tokens[..., None])[..., 0].sum(dim=(1, 2)).exp()
    assert abs(float(dist.sum()) - 1) < 1e-9, "the valid combinations must hold all the probability"
    draws = 3000
    rsd = speculative_decode(main, PolicyDrafter(policy=other), obs1.repeat(draws), rule=make_rule("speculative"),
                             gamma=2, temperature=1.0, generator=torch.Generator().manual_seed(0))  # fmt: skip
    index = {c: i for i, c in enumerate(combos)}
    counts = np.bincount([index[tuple(r)] for r in rsd.tokens.flatten(1).tolist()], minlength=len(combos))
    assert chisquare(counts, dist.numpy() * draws).pvalue > 1e-3


def test_checkpoints_keep_the_layer_sizes(main, obs, tmp_path):
    checkpoints.save(main, tmp_path / "m")
    loaded = checkpoints.load(tmp_path / "m").double().eval()
    assert loaded.config.actions.layer_codebook_sizes == SIZES
    assert torch.equal(decode_rfsq_ar(loaded, obs).tokens, decode_rfsq_ar(main, obs).tokens)


def test_a_tokenizer_of_other_layer_sizes_is_refused(tokenizer):
    space = ActionSpace(num_layers=3, num_latents=2, codebook_size=64)  # every layer 64 codes
    with pytest.raises(ValueError, match="layers have"):
        check_tokenizer(tokenizer, space)
    check_tokenizer(tokenizer, ActionSpace.from_tokenizer(tokenizer))


def test_entropy_is_normalised_by_the_layers_own_codes():
    probs = torch.zeros(1, 2, 6)
    probs[..., :2] = 0.5  # uniform over a 2-code layer
    inp = MonitorInput(layers=1, num_layers=3, probs=probs, hidden=torch.zeros(1, 4), codes=2)
    assert float(entropy(inp)) == pytest.approx(1.0)
