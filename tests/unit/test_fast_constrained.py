"""Constrained ``fast_ar`` decoding: every sequence spells exactly H*A FAST coefficients.

A tiny FAST tokenizer is fitted on random smooth chunks and a tiny random ``fast_ar`` policy
decodes with its ids. Unconstrained, such a model emits sequences the tokenizer cannot decode;
under :class:`FastLengthConstraint` every row decodes, greedy or sampled, within the length cap.
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch
from scipy.fft import dct

from rsdlib.decoding.methods import Decoder
from rsdlib.decoding.plain import FastLengthConstraint, decode_fast_ar
from rsdlib.decoding.spec import MethodSpec
from rsdlib.policies.heads import FastAutoregressive
from rsdlib.tokenizers.fast import FASTTokenizer, MalformedTokens
from tests.unit.fake_rfsq import observations, tiny_policy

H, A = 4, 7
CHUNK = H * A
BATCH = 6


def smooth_chunks(n: int, seed: int) -> np.ndarray:
    """n random sinusoidal chunks (n, H, A): the low-frequency shape FAST compresses well."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, H)[None, :, None]
    freq, phase, amp = (rng.uniform(lo, hi, (n, 1, A)) for lo, hi in ((0.2, 1.0), (0.0, 1.0), (0.2, 1.0)))
    return amp * np.sin(2 * np.pi * (freq * t + phase))


@pytest.fixture(scope="module")
def tokenizer() -> FASTTokenizer:
    return FASTTokenizer(horizon=H, action_dim=A, scale=2.0, vocab_size=40).fit(smooth_chunks(300, seed=0))


def fast_policy(
    tokenizer: FASTTokenizer, *, max_tokens: int = CHUNK + 1, seed: int = 0
) -> FastAutoregressive:
    """A seeded random ``fast_ar`` policy over the tokenizer's ids plus the end token."""
    return tiny_policy(
        "fast_ar", seed=seed, horizon=H, action_dim=A, fast_vocab=tokenizer.vocab_size + 1,
        fast_max_tokens=max_tokens,
    )  # fmt: skip


def rows(tokens: torch.Tensor) -> list[torch.Tensor]:
    return [row[row >= 0] for row in tokens.cpu()]


def spelt(tokenizer: FASTTokenizer, ids: torch.Tensor) -> int:
    """Coefficients a row of ids expands to, by the tokenizer's count."""
    return int(tokenizer.coefficients_per_token[ids.numpy()].sum())


def malformed_rows(tokenizer: FASTTokenizer, tokens: torch.Tensor) -> int:
    bad = 0
    for row in rows(tokens):
        try:
            tokenizer.decode([row])
        except MalformedTokens:
            bad += 1
    return bad


# -- the tokenizer's per-id coefficient counts ----------------------------------------------------


def test_coefficient_counts_agree_with_decode_on_random_sequences(tokenizer):
    counts = tokenizer.coefficients_per_token
    assert counts.shape == (tokenizer.vocab_size,) and counts.dtype == np.int64 and counts.min() >= 1
    assert counts.max() > 1  # BPE merged some coefficients
    assert tokenizer.coefficients_per_token is counts  # computed once
    rng = np.random.default_rng(1)
    for _ in range(50):
        ids = torch.as_tensor(rng.integers(0, tokenizer.vocab_size, rng.integers(1, 12)))
        n = spelt(tokenizer, ids)
        if n == CHUNK:
            assert tokenizer.decode([ids]).shape == (1, H, A)
            continue
        with pytest.raises(MalformedTokens) as err:
            tokenizer.decode([ids])
        # decode names how many coefficients it counted: the same number, independently derived
        assert int(re.search(r"decodes to (\d+) DCT coefficients", str(err.value)).group(1)) == n
    for ids in tokenizer.encode(smooth_chunks(40, seed=2)):
        assert spelt(tokenizer, ids) == CHUNK


def test_every_coefficient_the_quantiser_can_produce_is_a_single_token(tokenizer):
    """Rounded coefficients lie in [-M, M] (normalised values are clipped to [-1, 1]); each has
    its own one-coefficient id, so no chunk is unspellable."""
    values = set()
    for single in np.flatnonzero(tokenizer.coefficients_per_token == 1):
        x = tokenizer.decode_normalised([[int(single)] * CHUNK]).numpy()
        coeff = np.unique(np.rint(dct(x, type=2, norm="ortho", axis=1) * tokenizer.scale))
        assert len(coeff) == 1
        values.add(int(coeff[0]))
    m = tokenizer.max_coefficient
    assert values == set(range(-m, m + 1))


def test_a_vocabulary_that_cannot_be_counted_raises(tokenizer):
    stray = copy.deepcopy(tokenizer)
    stray._vocab[-1] = "##" + stray._vocab[-1]  # a subword prefix: not a coefficient
    stray._coefficient_counts = None
    with pytest.raises(ValueError, match="outside the coefficient alphabet"):
        _ = stray.coefficients_per_token
    lost = copy.deepcopy(tokenizer)
    single = next(i for i, t in enumerate(lost._vocab) if len(t) == 1)
    lost._vocab[single] = lost._vocab[single] * 2  # that value now has no one-coefficient token
    lost._coefficient_counts = None
    with pytest.raises(ValueError, match="no single-coefficient token"):
        _ = lost.coefficients_per_token


# -- constrained decoding ---------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_constrained_decode_always_spells_one_chunk(tokenizer, temperature):
    policy = fast_policy(tokenizer)
    constraint = FastLengthConstraint.build(tokenizer, policy)
    for seed in range(3):
        g = torch.Generator().manual_seed(seed) if temperature > 0 else None
        out = decode_fast_ar(
            policy,
            observations(BATCH, seed=seed),
            temperature=temperature,
            generator=g,
            constraint=constraint,
        )
        assert out.tokens.shape[0] == BATCH
        for row, trace in zip(rows(out.tokens), out.traces, strict=True):
            assert spelt(tokenizer, row) == CHUNK and trace.tokens[0] == row.tolist()
            assert policy.end_token not in trace.tokens[0]
        chunks = tokenizer.decode(rows(out.tokens))
        assert chunks.shape == (BATCH, H, A) and torch.isfinite(chunks).all()


def test_the_same_random_model_is_malformed_without_the_constraint(tokenizer):
    """The constraint is what makes the rows above decode: the free model does not."""
    policy = fast_policy(tokenizer)
    bad = sum(
        malformed_rows(tokenizer, decode_fast_ar(policy, observations(BATCH, seed=s)).tokens)
        for s in range(3)
    )
    assert bad > 0


@pytest.mark.parametrize("favoured", ["end", "longest"])
def test_a_model_that_would_end_early_or_overshoot_still_decodes(tokenizer, favoured):
    policy = fast_policy(tokenizer)
    counts = tokenizer.coefficients_per_token
    token = policy.end_token if favoured == "end" else int(np.argmax(counts))
    with torch.no_grad():
        policy.out.bias[token] += 1e3  # every unconstrained choice is this id
    free = decode_fast_ar(policy, observations(BATCH))
    assert malformed_rows(tokenizer, free.tokens) == BATCH
    out = decode_fast_ar(
        policy, observations(BATCH), constraint=FastLengthConstraint.build(tokenizer, policy)
    )
    assert all(spelt(tokenizer, row) == CHUNK for row in rows(out.tokens))
    assert tokenizer.decode(rows(out.tokens)).shape == (BATCH, H, A)


def test_the_tightest_length_cap_is_respected(tokenizer):
    counts = tokenizer.coefficients_per_token
    fewest = -(-CHUNK // int(counts.max()))  # every length 1..max is in this vocabulary
    assert set(range(1, int(counts.max()) + 1)) <= set(counts.tolist())
    policy = fast_policy(tokenizer, max_tokens=fewest + 1)
    constraint = FastLengthConstraint.build(tokenizer, policy)
    assert int(constraint.fewest_tokens[CHUNK]) == fewest
    g = torch.Generator().manual_seed(0)
    out = decode_fast_ar(policy, observations(BATCH), temperature=1.0, generator=g, constraint=constraint)
    assert all(len(row) <= fewest and spelt(tokenizer, row) == CHUNK for row in rows(out.tokens))
    assert tokenizer.decode(rows(out.tokens)).shape == (BATCH, H, A)
    with pytest.raises(ValueError, match="no chunk fits"):
        FastLengthConstraint.build(tokenizer, fast_policy(tokenizer, max_tokens=fewest))


def test_a_mismatched_tokenizer_is_refused(tokenizer):
    other = tiny_policy(
        "fast_ar", horizon=H, action_dim=A, fast_vocab=tokenizer.vocab_size + 3, fast_max_tokens=9
    )
    with pytest.raises(ValueError, match="FAST tokenizer has"):
        FastLengthConstraint.build(tokenizer, other)


@pytest.mark.parametrize("spec", ["fast_ar", "fast_ar@1.0"])
def test_the_decoder_constrains_fast_ar_so_env_actions_never_fail(tokenizer, spec):
    policy = fast_policy(tokenizer)
    decoder = Decoder(MethodSpec.parse(spec), policy, tokenizer=tokenizer)
    assert decoder.fast_constraint is not None
    result = decoder.decode(observations(BATCH), generator=torch.Generator().manual_seed(0))
    assert decoder.env_actions(result).shape == (BATCH, H, A)
