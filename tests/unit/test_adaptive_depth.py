"""Adaptive depth: a monitor stops RFSQ decoding early; what is decoded is exactly the RFSQ decode
of the layers kept, and a monitor that never stops changes nothing."""

from __future__ import annotations

import math

import pytest
import torch
from fake_rfsq import FakeRFSQ, observations

from rsdlib.decoding import decode_rfsq_ar, make_rule, speculative_decode
from rsdlib.decoding.methods import Decoder
from rsdlib.decoding.monitors import MONITORS, DepthHistory, DepthMonitor, MonitorInput
from rsdlib.decoding.spec import MethodSpec
from rsdlib.policies import RandomDrafter

entropy, jerk, plan_instability = (MONITORS[n].value for n in ("entropy", "jerk", "plan_instability"))

L, N, V = 3, 2, 6

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def obs(main):
    return main.prepare(observations(6))


def random_drafter(seed: int = 3) -> RandomDrafter:
    return RandomDrafter(num_layers=L, num_latents=N, codebook_size=V, seed=seed)


def rsd(main, obs, monitor=None, rule="exact", **kw):
    return speculative_decode(
        main,
        random_drafter(),
        obs,
        rule=make_rule(rule, **kw),
        gamma=2,
        tokenizer=FakeRFSQ(),
        monitor=monitor,
    )


# -- the invariants -----------------------------------------------------------------------------------


def test_a_monitor_that_never_stops_changes_nothing(main, obs):
    full = decode_rfsq_ar(main, obs, tokenizer=FakeRFSQ())
    never = decode_rfsq_ar(main, obs, tokenizer=FakeRFSQ(), monitor=DepthMonitor("never", 0.0))
    assert torch.equal(never.tokens, full.tokens) and torch.equal(never.actions, full.actions)
    # layer 0 comes with the prefix pass: L - 1 main passes after it
    assert [t.main_passes for t in never.traces] == [L - 1] * 6 and all(
        t.layers_used == L for t in never.traces
    )
    speculative_full = rsd(main, obs)
    speculative_never = rsd(main, obs, DepthMonitor("never", 0.0))
    assert torch.equal(speculative_never.tokens, speculative_full.tokens)
    assert torch.equal(speculative_never.tokens, full.tokens)  # exact RSD is still greedy decoding


@pytest.mark.parametrize("k", [1, 2])
def test_the_chunk_at_depth_k_is_the_rfsq_decode_of_the_first_k_layers(main, obs, k):
    tok = FakeRFSQ()
    full = decode_rfsq_ar(main, obs, tokenizer=tok)
    for result in (decode_rfsq_ar(main, obs, tokenizer=tok, monitor=DepthMonitor("fixed", k)),
                   rsd(main, obs, DepthMonitor("fixed", k))):  # fmt: skip
        assert [t.layers_used for t in result.traces] == [k] * 6
        assert torch.equal(result.tokens[:, :k], full.tokens[:, :k])  # the kept layers are greedy's
        assert bool((result.tokens[:, k:] == -1).all())  # the rest were not decoded
        want = tok.decode(full.tokens[:, :k].transpose(1, 2))
        assert torch.equal(result.actions, want)
        assert all(len(t.tokens) == k and len(t.sources) == k for t in result.traces)
    plain = decode_rfsq_ar(main, obs, tokenizer=tok, monitor=DepthMonitor("fixed", k))
    assert [t.main_passes for t in plain.traces] == [k - 1] * 6  # fewer main passes: the point of it


def test_items_of_a_batch_stop_at_their_own_depth(main, obs):
    """A monitor that stops items at different layers: each chunk decodes its own prefix."""
    tok = FakeRFSQ()
    full = decode_rfsq_ar(main, obs, tokenizer=tok)
    thresholds = sorted({t.monitor_values[0] for t in decode_rfsq_ar(
        main, obs, tokenizer=tok, monitor=DepthMonitor("entropy", -1.0)).traces})  # fmt: skip
    middle = thresholds[len(thresholds) // 2] if len(thresholds) > 1 else thresholds[0]
    result = decode_rfsq_ar(main, obs, tokenizer=tok, monitor=DepthMonitor("entropy", middle))
    depths = [t.layers_used for t in result.traces]
    for i, d in enumerate(depths):
        assert torch.equal(result.tokens[i, :d], full.tokens[i, :d])
        assert torch.equal(result.actions[i], tok.decode(full.tokens[i : i + 1, :d].transpose(1, 2))[0])
        trace = result.traces[i]
        # it stopped at the first layer whose value was not above the threshold
        asked = trace.monitor_values
        assert all(v > middle for v in asked[:-1]) and (d == L or asked[-1] <= middle)


def test_rsd_with_a_monitor_keeps_the_trace_consistent(main, obs):
    result = rsd(main, obs, DepthMonitor("fixed", 2))
    for trace in result.traces:
        assert trace.sources_from_rounds() == trace.sources  # rounds past the depth are cut, not miscounted
        assert trace.diagnostics()["depth"] == 2 and trace.spec == MethodSpec.parse(
            "rsd_random:g2:exact+fixed:2"
        )
        assert trace.to_json()  # strict JSON


# -- the monitors -------------------------------------------------------------------------------------


def test_entropy_is_zero_for_a_certain_layer_and_one_for_a_uniform_one():
    certain = torch.zeros(2, N, V)
    certain[..., 0] = 1
    uniform = torch.full((2, N, V), 1 / V)
    h = torch.zeros(2, 4)
    assert entropy(MonitorInput(1, L, certain, h)).tolist() == pytest.approx([0, 0])
    assert entropy(MonitorInput(1, L, uniform, h)).tolist() == pytest.approx([1, 1])


def test_history_monitors_go_to_full_depth_on_a_first_chunk_and_measure_change_after():
    probs, h = torch.full((2, N, V), 1 / V), torch.randn(2, 4)
    first = MonitorInput(1, L, probs, h, chunk=torch.zeros(2, 8, 7))
    for name in ("action_variance", "jerk", "plan_instability"):
        assert all(math.isinf(v) for v in MONITORS[name].value(first).tolist()), name
    history = DepthHistory()
    history.update(hidden=h, chunk=torch.zeros(2, 8, 7), actions=torch.zeros(2, 8, 7), executed=8)
    same = MonitorInput(1, L, probs, h, chunk=torch.zeros(2, 8, 7), history=history)
    assert jerk(same).tolist() == pytest.approx([0, 0]) and plan_instability(same).tolist() == [0, 0]
    moved = MonitorInput(1, L, probs, -h, chunk=torch.ones(2, 8, 7), history=history)
    assert jerk(moved).tolist() == pytest.approx([2, 2]) and plan_instability(moved).tolist() == [1, 1]
    # with overlap (4 of 8 steps executed), the new chunk's first 4 steps meet the old one's last 4
    history.update(hidden=h, chunk=torch.arange(8.0)[None, :, None].expand(2, 8, 7), actions=torch.zeros(2, 8, 7),
                   executed=4)  # fmt: skip
    shifted = MonitorInput(1, L, probs, h, chunk=torch.arange(4.0, 12.0)[None, :, None].expand(2, 8, 7),
                           history=history)  # fmt: skip
    assert plan_instability(shifted).tolist() == [0, 0]


def test_depth_monitor_settings_are_checked():
    with pytest.raises(ValueError, match="unknown depth monitor"):
        DepthMonitor("bogus", 1.0)
    with pytest.raises(ValueError, match="depth in layers"):
        DepthMonitor("fixed", 0.5)
    for bad in ("fast_ar+entropy:0.3", "rfsq_parallel+fixed:2", "rfsq_ar+bogus:1", "rfsq_ar+entropy:x"):
        with pytest.raises(ValueError):
            MethodSpec.parse(bad)
    for text in ("rfsq_ar+entropy:0.3", "rsd_head:g2:exact+fixed:2", "rsd_head:g3:match_rate:0.5+jerk:0.05",
                 "rfsq_ar+plan_instability:0.1@1"):  # fmt: skip
        assert str(MethodSpec.parse(text)) == text


def test_a_policy_remembers_its_episode_for_the_monitor_and_forgets_it_at_reset(main):
    from rsdlib.libero.learned_policy import LearnedPolicy
    from rsdlib.libero.policy import EpisodeContext

    policy = LearnedPolicy(main, "rfsq_ar+jerk:0.5", tokenizer=FakeRFSQ())
    context = EpisodeContext("libero_spatial", 0, 0, 0, "pick up the black bowl")
    one, two = observations(2)
    policy.reset(context)
    first = policy.act(one).diagnostics
    assert first["monitor_values"][0] is None and first["depth"] == L  # no earlier chunk: full depth
    again = policy.act(one).diagnostics
    assert again["monitor_values"][0] == pytest.approx(0, abs=1e-9) and again["depth"] == 1  # nothing moved
    moved = policy.act(two).diagnostics
    assert moved["monitor_values"][0] > 0
    policy.reset(context)
    assert policy.act(one).diagnostics["monitor_values"][0] is None
    # the Decoder alone: a history passed in is extended with each chunk
    history = DepthHistory()
    Decoder(MethodSpec.parse("rfsq_ar+plan_instability:0.1"), main, tokenizer=FakeRFSQ()).decode(
        main.prepare([one]), history=history
    )
    assert history.chunk is not None and history.hidden is not None and history.actions.shape[1] == 8


def test_the_stepper_says_where_the_monitor_stopped_and_why(main, obs):
    from rsdlib.decoding import TraceStepper
    from rsdlib.widgets import step_html

    trace = decode_rfsq_ar(main, obs, tokenizer=FakeRFSQ(), monitor=DepthMonitor("fixed", 2)).traces[0]
    stepper = TraceStepper(trace)
    assert len(stepper) == 2  # only the decoded layers are stepped through
    stepper.goto(1)
    page = step_html(stepper)
    assert "depth monitor fixed" in page and "stopped at 2 of 3 layers" in page
