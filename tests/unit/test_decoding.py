"""RSD correctness on tiny seeded float64 models: exactness, distribution, pass counts, traces."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from fake_rfsq import FakeRFSQ, observations, tiny_policy
from scipy.stats import chisquare

from rsdlib.decoding import (
    DecodeTrace,
    TraceStepper,
    Verdict,
    acceptance_per_layer,
    decode_fast_ar,
    decode_l1_regression,
    decode_rfsq_ar,
    decode_rfsq_parallel,
    exact,
    expected_main_passes,
    level_distance,
    make_rule,
    match_rate,
    speculative,
    speculative_decode,
    summarize,
    traces_to_frame,
)
from rsdlib.decoding import acceptance as acceptance_module
from rsdlib.policies import HeadDrafter, HeadDrafterConfig, PolicyDrafter, RandomDrafter, ReplayDrafter

L, N, V = 3, 2, 6


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def obs(main):
    return main.prepare(observations(5))


def drafters(main, kind):
    if kind == "self":
        return PolicyDrafter(policy=main)
    if kind == "random":
        return RandomDrafter(num_layers=L, num_latents=N, codebook_size=V, seed=3)
    if kind == "other":
        return PolicyDrafter(policy=tiny_policy(seed=7, hidden=8))
    torch.manual_seed(11)
    shared = kind == "shared head"  # reads the main policy's token embedding and output layer
    cfg = HeadDrafterConfig(trunk_hidden_size=16, hidden_size=16 if shared else 8, num_blocks=1,
                            shares_main_io=shared, actions=main.config.actions)  # fmt: skip
    head = HeadDrafter(config=cfg).double().eval()
    return head.attach(main) if shared else head


# -- the flagship: exact RSD returns the greedy tokens, whatever the drafter --------------------------


@pytest.mark.parametrize("kind", ["self", "random", "other", "head", "shared head"])
@pytest.mark.parametrize("gamma", [1, 2, L])
def test_exact_rule_returns_greedy_tokens_for_any_drafter(main, obs, kind, gamma):
    greedy = decode_rfsq_ar(main, obs)
    rsd = speculative_decode(main, drafters(main, kind), obs, rule=make_rule("exact"), gamma=gamma)
    assert torch.equal(rsd.tokens, greedy.tokens)
    for t in rsd.traces:
        assert 1 <= t.main_passes <= L


def test_layer_0_in_the_prefix_pass_equals_its_own_pass_after_the_prefix(main, obs):
    """Block 0 reads no token, so the prefix pass computes it: the same logits and prefix states
    as a prefix pass and then a block pass, and a cache later blocks continue from alike."""
    B = obs.batch_size
    state, first = main.prefix_and_first_block(obs)
    alone = main.prefix(obs)
    zeros, one = torch.zeros(B, L, N, dtype=torch.long), torch.ones(B, dtype=torch.long)
    after = main.block_logits(alone, zeros, torch.zeros(B, dtype=torch.long), one)[:, 0]
    torch.testing.assert_close(first, after)
    torch.testing.assert_close(state.prefix_hidden, alone.prefix_hidden)
    tokens = decode_rfsq_ar(main, obs).tokens
    torch.testing.assert_close(  # layer 1 from either cache, and from one teacher-forced pass
        main.block_logits(state, tokens, one, one), main.block_logits(alone, tokens, one, one)
    )
    torch.testing.assert_close(main.teacher_forced_logits(obs, tokens)[:, 0], first)
    assert all(t.main_passes == L - 1 and t.prefix_layers == 1 for t in decode_rfsq_ar(main, obs).traces)


def test_greedy_tokens_are_not_trivial(main, obs):
    """Guard for the test above: the greedy tokens vary across items and layers."""
    tokens = decode_rfsq_ar(main, obs).tokens
    assert len({tuple(t.flatten().tolist()) for t in tokens}) > 1


@pytest.mark.parametrize("gamma", [1, 2, L])
def test_main_as_its_own_drafter_accepts_everything_with_minimum_passes(main, obs, gamma):
    rsd = speculative_decode(main, PolicyDrafter(policy=main), obs, rule=make_rule("exact"), gamma=gamma)
    for t in rsd.traces:
        assert all(all(all(f) for f in r.token_accepted) for r in t.rounds)
        assert t.main_passes == math.ceil((L - 1) / (gamma + 1))
        assert t.accepted_layers + sum(r.bonus is not None for r in t.rounds) == L
    alpha = summarize(rsd.traces)["acceptance_per_layer"]
    # layer 0 comes with the prefix pass: never drafted, never judged
    assert alpha[0] is None and alpha[1] == 1.0 and all(a in (1.0, None) for a in alpha)


def test_main_as_its_own_drafter_accepts_everything_when_sampling(main, obs):
    g = torch.Generator().manual_seed(0)
    rsd = speculative_decode(
        main,
        PolicyDrafter(policy=main),
        obs,
        rule=make_rule("speculative"),
        gamma=2,
        temperature=1.0,
        generator=g,
    )
    for t in rsd.traces:
        assert t.main_passes == math.ceil((L - 1) / 3)
        assert all(r.correction is None for r in t.rounds)


@pytest.mark.parametrize("gamma", [1, 2, L])
def test_replayed_greedy_tokens_are_an_oracle_and_wrong_replays_stay_exact(main, obs, gamma):
    greedy = decode_rfsq_ar(main, obs).tokens
    oracle = speculative_decode(
        main, ReplayDrafter(tokens=greedy, codebook_size=V), obs, rule=make_rule("exact"), gamma=gamma
    )
    assert torch.equal(oracle.tokens, greedy)
    assert all(t.main_passes == math.ceil((L - 1) / (gamma + 1)) for t in oracle.traces)
    wrong = greedy.flip(0)  # another item's greedy tokens
    rsd = speculative_decode(
        main, ReplayDrafter(tokens=wrong, codebook_size=V), obs, rule=make_rule("exact"), gamma=gamma
    )
    assert torch.equal(rsd.tokens, greedy)


def test_random_drafter_needs_more_passes_than_self(main, obs):
    rsd = speculative_decode(main, drafters(main, "random"), obs.repeat(4), rule=make_rule("exact"), gamma=2)
    assert np.mean([t.main_passes for t in rsd.traces]) > math.ceil((L - 1) / 3)


def test_redraft_off_continues_plainly_and_stays_exact(main, obs):
    greedy = decode_rfsq_ar(main, obs)
    rsd = speculative_decode(
        main, drafters(main, "random"), obs, rule=make_rule("exact"), gamma=1, redraft=False
    )
    assert torch.equal(rsd.tokens, greedy.tokens)
    for t in rsd.traces:
        assert t.draft_steps == 1
        # rounds[0] is the prefix pass's (layer 0), rounds[1] the one drafted round
        assert not t.rounds[0].draft_tokens and t.rounds[1].draft_tokens
        assert all(not r.draft_tokens for r in t.rounds[2:])


# -- speculative sampling keeps the main distribution ------------------------------------------------

SL, SN, SV = 2, 2, 3  # 81 token tuples


def _exact_distribution(policy, obs1) -> dict[tuple[int, ...], float]:
    """P(tokens) of plain sampling, enumerated with teacher-forced logits."""
    combos = list(itertools.product(range(SV), repeat=SL * SN))
    tokens = torch.tensor(combos).reshape(-1, SL, SN)
    with torch.no_grad():
        logp = torch.log_softmax(policy.teacher_forced_logits(obs1.repeat(len(combos)), tokens), -1)
    lp = logp.gather(-1, tokens[..., None])[..., 0].sum(dim=(1, 2))
    return dict(zip(combos, lp.exp().tolist(), strict=True))


def _chi_square_p(draws: torch.Tensor, dist: dict[tuple[int, ...], float]) -> float:
    """Goodness of fit of ``draws`` (B, L, N) to ``dist``; cells expecting < 5 draws are pooled."""
    n = draws.shape[0]
    counts: dict[tuple[int, ...], int] = {}
    for row in draws.flatten(1).tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    big = [k for k, p in dist.items() if p * n >= 5]
    small = [k for k in dist if k not in big]
    obs_counts = [counts.get(k, 0) for k in big] + [sum(counts.get(k, 0) for k in small)]
    exp_counts = [dist[k] * n for k in big] + [sum(dist[k] for k in small) * n]
    return float(chisquare(obs_counts, exp_counts).pvalue)


@pytest.fixture(scope="module")
def spec_setup():
    main = tiny_policy(seed=1, num_layers=SL, num_latents=SN, codebook_size=SV)
    other = tiny_policy(seed=2, num_layers=SL, num_latents=SN, codebook_size=SV, hidden=8, sharpen=4.0)
    obs1 = main.prepare(observations(1, seed=4))
    return main, other, obs1, _exact_distribution(main, obs1)


DRAWS = 4000
#: A correct implementation fails this with probability 1e-3 (fixed seeds make it deterministic).
P_VALUE_FLOOR = 1e-3


def test_plain_sampling_matches_the_enumerated_distribution(spec_setup):
    """The reference itself: plain sampling passes the same test (so the enumeration is right)."""
    main, _, obs1, dist = spec_setup
    g = torch.Generator().manual_seed(0)
    draws = decode_rfsq_ar(main, obs1.repeat(DRAWS), temperature=1.0, generator=g).tokens
    assert _chi_square_p(draws, dist) > P_VALUE_FLOOR


@pytest.mark.parametrize("gamma", [1, 2])
def test_speculative_rule_preserves_the_main_distribution(spec_setup, gamma):
    main, other, obs1, dist = spec_setup
    g = torch.Generator().manual_seed(gamma)
    rsd = speculative_decode(
        main,
        PolicyDrafter(policy=other),
        obs1.repeat(DRAWS),
        rule=make_rule("speculative"),
        gamma=gamma,
        temperature=1.0,
        generator=g,
    )
    rejected = sum(r.correction is not None for t in rsd.traces for r in t.rounds)
    assert rejected > DRAWS // 10, "the drafter must disagree often, or the test proves nothing"
    assert _chi_square_p(rsd.tokens, dist) > P_VALUE_FLOOR


def _broken_speculative(x, q, p, *, generator):
    """A classic bug: a rejected token redrawn from p instead of norm(max(0, p - q))."""
    v = speculative(x, q, p, generator=generator)
    redraw = torch.multinomial(p.reshape(-1, p.shape[-1]), 1, generator=generator).reshape(x.shape)
    correction = torch.where(v.token_accepted, x, redraw)
    return Verdict(v.token_accepted, v.layer_accepted, correction)


def test_the_distribution_test_catches_a_broken_rule(spec_setup, monkeypatch):
    main, other, obs1, dist = spec_setup
    monkeypatch.setattr(acceptance_module, "speculative", _broken_speculative)
    g = torch.Generator().manual_seed(1)
    rsd = speculative_decode(
        main,
        PolicyDrafter(policy=other),
        obs1.repeat(DRAWS),
        rule=make_rule("speculative"),
        gamma=1,
        temperature=1.0,
        generator=g,
    )
    assert _chi_square_p(rsd.tokens, dist) < P_VALUE_FLOOR


# -- acceptance rules as pure functions ---------------------------------------------------------------


def test_exact_rule_accepts_only_the_argmax():
    p = torch.tensor([[[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]]])  # (1, 2, 3)
    v = exact(torch.tensor([[1, 0]]), p)
    assert v.layer_accepted.tolist() == [True]
    v = exact(torch.tensor([[1, 1]]), p)
    assert v.token_accepted.tolist() == [[True, False]] and v.layer_accepted.tolist() == [False]
    assert v.correction.tolist() == [[1, 0]]


def test_speculative_rule_accepts_when_q_equals_p_and_never_keeps_impossible_tokens():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(50, 4, 5, generator=g, dtype=torch.float64), -1)
    x = torch.multinomial(p.reshape(-1, 5), 1, generator=g).reshape(50, 4)
    assert speculative(x, p, p, generator=g).layer_accepted.all()
    p0 = p.clone()
    p0[..., 0] = 0
    p0 = p0 / p0.sum(-1, keepdim=True)
    q = torch.zeros_like(p)
    q[..., 0] = 1  # the draft always proposes token 0, which the main model never samples
    v = speculative(torch.zeros(50, 4, dtype=torch.long), q, p0, generator=g)
    assert not v.token_accepted.any() and (v.correction != 0).all()


def test_match_rate_and_level_distance_are_lossy_relaxations_of_exact():
    tok = FakeRFSQ(levels=(3, 2))
    p = torch.zeros(1, 2, 6, dtype=torch.float64)
    p[0, 0, 0] = p[0, 1, 5] = 1.0  # argmax tokens 0 and 5
    x = torch.tensor([[0, 3]])  # token 3 = digits (1, 1) vs 5 = (2, 1): one level off in channel 0
    assert match_rate(x, p, tau=0.5).layer_accepted.item()
    assert not match_rate(x, p, tau=1.0).layer_accepted.item()
    assert level_distance(x, p, delta=1, digits=tok.index_to_digits).layer_accepted.item()
    assert not level_distance(x, p, delta=0, digits=tok.index_to_digits).layer_accepted.item()
    x_far = torch.tensor([[0, 1]])  # (0, 1): two levels off
    assert not level_distance(x_far, p, delta=1, digits=tok.index_to_digits).layer_accepted.item()
    for name, params in [("match_rate", {"tau": 0.5}), ("level_distance", {"delta": 1})]:
        assert not make_rule(name, tokenizer=tok, **params).lossless
    assert make_rule("exact").lossless and make_rule("speculative").lossless
    assert "[lossy]" in make_rule("match_rate", tau=0.5).label


def test_action_tolerance_compares_decoded_chunks(main, obs):
    tok = FakeRFSQ()
    greedy = decode_rfsq_ar(main, obs).tokens
    wide = speculative_decode(
        main,
        drafters(main, "random"),
        obs,
        rule=make_rule("action_tolerance", eps=1e9, tokenizer=tok),
        gamma=L,
        tokenizer=tok,
    )
    assert all(t.main_passes == 1 for t in wide.traces)  # everything is within a huge tolerance
    tight = speculative_decode(
        main,
        drafters(main, "random"),
        obs,
        rule=make_rule("action_tolerance", eps=0.0, tokenizer=tok),
        gamma=2,
        tokenizer=tok,
    )
    # eps = 0 accepts only drafts that decode to the same chunk as the argmax: here, the greedy tokens.
    assert torch.equal(tight.tokens, greedy)


def test_rule_settings_are_validated(main, obs):
    with pytest.raises(ValueError, match="unknown acceptance rule"):
        make_rule("nearly")
    with pytest.raises(ValueError, match="tau"):
        make_rule("match_rate", tau=1.5)
    with pytest.raises(ValueError, match="index_to_digits"):
        make_rule("level_distance", delta=1)
    with pytest.raises(ValueError, match="temperature"):
        speculative_decode(
            main, PolicyDrafter(policy=main), obs, rule=make_rule("exact"), gamma=1, temperature=1.0
        )
    with pytest.raises(ValueError, match="Generator"):
        speculative_decode(main, PolicyDrafter(policy=main), obs, rule=make_rule("speculative"), gamma=1)
    with pytest.raises(ValueError, match="gamma"):
        speculative_decode(main, PolicyDrafter(policy=main), obs, rule=make_rule("exact"), gamma=0)
    with pytest.raises(ValueError, match="tokenizer has"):
        decode_rfsq_ar(main, obs, tokenizer=FakeRFSQ(num_layers=2))


# -- traces -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_traces(main, obs):
    tok = FakeRFSQ()
    return speculative_decode(
        main, drafters(main, "random"), obs.repeat(3), rule=make_rule("exact"), gamma=2, tokenizer=tok
    ).with_layer_actions(tok)


def test_trace_accounts_for_every_token(random_traces):
    for t, tokens in zip(random_traces.traces, random_traces.tokens.tolist(), strict=True):
        assert t.sources_from_rounds() == t.sources
        assert sum(len(row) for row in t.sources) == L * N
        assert t.main_passes == len(t.rounds) - 1  # the first round is the prefix pass's (layer 0)
        for r in t.rounds:
            for j in range(r.accepted_layers):
                assert tokens[r.start_layer + j] == r.draft_tokens[j]
            at = r.start_layer + r.accepted_layers
            if r.correction is not None:
                assert tokens[at] == r.correction
            if r.bonus is not None:
                assert tokens[at] == r.bonus
    sources = {s for t in random_traces.traces for row in t.sources for s in row}
    assert "corrected" in sources


def test_trace_diagnostics_are_compact_and_consistent(random_traces):
    for t in random_traces.traces:
        d = t.diagnostics()
        assert json.loads(json.dumps(d)) == d
        assert d["main_passes"] == t.main_passes and d["rounds"] == len(t.rounds)
        assert sum(ok for _, ok in d["judged"]) == t.accepted_layers


def test_trace_json_round_trip_is_lossless(random_traces):
    for t in random_traces.traces:
        back = DecodeTrace.from_json(t.to_json())
        assert back == t
        assert back.to_json() == t.to_json()


def test_trace_holds_decoded_actions_after_each_layer(random_traces, main, obs):
    tok = FakeRFSQ()
    # decoding itself leaves them out (they would count in its latency); asking fills them
    plain = decode_rfsq_ar(main, obs, tokenizer=tok)
    assert plain.traces[0].layer_actions is None
    filled = plain.with_layer_actions(tok).traces[0].layer_actions
    assert torch.allclose(torch.tensor(filled[-1], dtype=torch.float64), plain.actions[0].double(), atol=1e-6)
    t0 = random_traces.traces[0]
    assert len(t0.layer_actions) == L
    last = torch.tensor(t0.layer_actions[-1], dtype=torch.float64)
    assert torch.allclose(last, random_traces.actions[0].double(), atol=1e-6)
    first = tok.decode(random_traces.tokens[:1, :1].transpose(1, 2))[0].double()
    assert torch.allclose(torch.tensor(t0.layer_actions[0], dtype=torch.float64), first, atol=1e-6)


def test_trace_frames_and_summary(random_traces, main, obs):
    frame = traces_to_frame(random_traces.traces)
    assert len(frame) == len(random_traces.traces) * L * N
    assert set(frame["source"]) <= {"accepted", "corrected", "bonus", "plain"}
    base = decode_rfsq_ar(main, obs.repeat(3))
    s = summarize(random_traces.traces, baseline=base.traces)
    alpha = acceptance_per_layer(random_traces.traces)
    assert s["acceptance_per_layer"] == alpha
    assert s["main_passes_per_chunk"] == np.mean([t.main_passes for t in random_traces.traces])
    assert s["measured_speedup"] > 0 and s["predicted_speedup_passes"] >= 1.0 - 1e-9


def test_expected_main_passes_limits():
    assert expected_main_passes([1.0] * 4, 1) == 2  # 2 layers per round
    assert expected_main_passes([1.0] * 4, 4) == 1
    assert expected_main_passes([0.0] * 4, 2) == 4  # one correction per round
    mid = expected_main_passes([0.5] * 4, 2)
    assert 2 < mid < 4


# -- plain baselines share the return type -----------------------------------------------------------


def test_kv_cache_decoding_equals_full_recomputation(main, obs):
    cached = decode_rfsq_ar(main, obs).tokens
    tokens = torch.zeros_like(cached)
    with torch.no_grad():
        for layer in range(L):  # re-run prefix and every block from scratch for each layer
            tokens[:, layer] = main.teacher_forced_logits(obs, tokens)[:, layer].argmax(-1)
    assert torch.equal(tokens, cached)


def test_one_pass_and_fast_baselines_return_traces():
    obs = observations(3)
    par = tiny_policy("rfsq_parallel")
    out = decode_rfsq_parallel(par, obs, tokenizer=FakeRFSQ())
    assert out.tokens.shape == (3, L, N) and out.actions.shape == (3, 8, 7)
    assert all(t.main_passes == 1 for t in out.traces)
    l1 = tiny_policy("l1_regression")
    out = decode_l1_regression(l1, obs)
    assert out.actions.shape == (3, 8, 7) and out.traces[0].main_passes == 1
    fast = tiny_policy("fast_ar", fast_vocab=7, fast_max_tokens=5)
    g = torch.Generator().manual_seed(0)
    out = decode_fast_ar(fast, obs, temperature=1.0, generator=g)
    for t, row in zip(out.traces, out.tokens.tolist(), strict=True):
        assert 1 <= t.main_passes <= 5
        assert t.tokens[0] == [v for v in row if v >= 0]
        assert fast.end_token not in t.tokens[0]


def test_stepper_walks_committed_layers_in_order(random_traces, main, obs):
    for t in random_traces.traces:
        stepper = TraceStepper(t)
        assert len(stepper) == L and stepper.current is None and stepper.main_passes_so_far() == 0
        kinds = []
        while stepper.position < len(stepper) - 1:
            step = stepper.next()
            kinds.append(step.kind)
            assert step.layer == stepper.position
            if step.kind in ("accepted", "corrected"):
                assert len(step.token_accepted) == N and len(step.draft_tokens) == N
            assert step.action == t.layer_actions[step.layer]
        assert stepper.committed() == t.tokens
        assert stepper.main_passes_so_far() == t.main_passes
        assert kinds.count("corrected") == sum(r.correction is not None for r in t.rounds)
        assert stepper.prev().layer == L - 2
        with pytest.raises(IndexError):
            stepper.goto(L)
    plain = TraceStepper(decode_rfsq_ar(main, obs).traces[0])
    plain.goto(L - 1)
    assert plain.main_passes_so_far() == L - 1 and {s.kind for s in plain.steps} == {"plain"}
    one_pass = TraceStepper(decode_rfsq_parallel(tiny_policy("rfsq_parallel"), obs).traces[0])
    one_pass.goto(L - 1)  # every layer came from the one pass
    assert one_pass.main_passes_so_far() == one_pass.trace.main_passes == 1


@pytest.mark.parametrize("gamma", [1, 2, 3, 5])
def test_exact_rule_with_more_layers_and_items_out_of_step(gamma):
    """L = 5; each item's replayed draft is wrong at a different layer, so items commit at different rates."""
    main5 = tiny_policy(seed=3, num_layers=5, num_latents=2, codebook_size=4, sharpen=3.0)
    obs5 = main5.prepare(observations(6, seed=5))
    greedy = decode_rfsq_ar(main5, obs5).tokens  # (6, 5, 2)
    drafts = greedy.clone()
    for i in range(5):
        drafts[i, i] = (drafts[i, i] + 1) % 4  # item i's draft is wrong at layer i; item 5 is all right
    rsd = speculative_decode(
        main5, ReplayDrafter(tokens=drafts, codebook_size=4), obs5, rule=make_rule("exact"), gamma=gamma
    )
    assert torch.equal(rsd.tokens, greedy)
    assert rsd.traces[5].main_passes == math.ceil(4 / (gamma + 1))
    for i, t in enumerate(rsd.traces[:5]):
        assert t.sources_from_rounds() == t.sources
        drafted = {r.start_layer + j for r in t.rounds for j in range(len(r.draft_tokens))}
        # the wrong layer costs a correction exactly when it was drafted (not taken as a bonus)
        assert sum(r.correction is not None for r in t.rounds) == (i in drafted), i
        assert DecodeTrace.from_json(t.to_json()) == t


def test_a_vacuous_level_distance_is_refused():
    """With binary FSQ channels every pair of codes is within distance 1: delta=1 would accept anything."""
    from types import SimpleNamespace

    binary = SimpleNamespace(levels=[2] * 10, index_to_digits=lambda ids: ids)
    with pytest.raises(ValueError, match="accepts every drafted token"):
        make_rule("level_distance", tokenizer=binary, delta=1)
    assert make_rule("level_distance", tokenizer=binary, delta=0).name == "level_distance"
