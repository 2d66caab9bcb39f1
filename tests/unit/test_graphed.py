"""The fixed-shape path (rsdlib.decoding.graphed) decodes what the eager engine decodes.

On a CPU the same step functions run without CUDA-graph capture, so these tests pin the
algorithm (block slots, fixed rounds, commits); ``scripts/bench_graphed.py`` repeats the parity
check on a GPU with the graphs before it times them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fake_rfsq import FakeRFSQ, observations, tiny_llava_policy, tiny_policy

from rsdlib.decoding import decode_rfsq_ar, make_rule, speculative_decode
from rsdlib.decoding.graphed import GraphedDecoder
from rsdlib.decoding.methods import Decoder
from rsdlib.decoding.spec import MethodSpec
from rsdlib.decoding.trace import summarize
from rsdlib.policies import HeadDrafter, HeadDrafterConfig, ReplayDrafter
from rsdlib.policies.heads import per_layer_logits

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def main5():
    """L = 5 layers, so rounds start at different layers and items fall out of step."""
    return tiny_policy(seed=3, num_layers=5, num_latents=2, codebook_size=4, sharpen=3.0)


@pytest.fixture(scope="module")
def obs5(main5):
    return main5.prepare(observations(6, seed=5))


def head_for(policy, seed: int = 11, *, reads_blocks: bool = False) -> HeadDrafter:
    torch.manual_seed(seed)
    cfg = HeadDrafterConfig(
        trunk_hidden_size=16,
        hidden_size=8,
        num_blocks=1,
        reads_blocks=reads_blocks,
        actions=policy.config.actions,
    )
    head = HeadDrafter(config=cfg).double().eval()
    if reads_blocks:  # strong block features: drafts then depend on which block the decoder passes
        with torch.no_grad():
            head.block_proj.weight.mul_(30.0)
    return head


def test_plain_decoding_equals_the_eager_engine(main5, obs5):
    eager = decode_rfsq_ar(main5, obs5)
    ours = GraphedDecoder(main5).plain(obs5)
    assert torch.equal(ours.tokens, eager.tokens)
    assert ours.main_passes.tolist() == [t.main_passes for t in eager.traces] == [4] * 6


@pytest.mark.parametrize("reads_blocks", [False, True])
@pytest.mark.parametrize("gamma", [1, 2, 3, 4, 6])
def test_exact_rsd_with_the_head_equals_the_eager_engine_token_and_pass_for_pass(
    main5, obs5, gamma, reads_blocks
):
    head = head_for(main5, reads_blocks=reads_blocks)
    eager = speculative_decode(main5, head, obs5, rule=make_rule("exact"), gamma=gamma)
    ours = GraphedDecoder(main5, head, gamma=gamma).rsd(obs5)
    assert torch.equal(ours.tokens, decode_rfsq_ar(main5, obs5).tokens)
    assert ours.main_passes.tolist() == [t.main_passes for t in eager.traces]


@pytest.mark.parametrize("gamma", [1, 2, 3, 5])
def test_replayed_drafts_wrong_at_different_layers_commit_like_the_eager_engine(main5, obs5, gamma):
    """Item i's draft is wrong at layer i (item 5 is right everywhere): items accept different
    numbers of layers per round, so they verify from different blocks in one pass."""
    greedy = decode_rfsq_ar(main5, obs5).tokens
    drafts = greedy.clone()
    for i in range(5):
        drafts[i, i] = (drafts[i, i] + 1) % 4
    eager = speculative_decode(
        main5, ReplayDrafter(tokens=drafts, codebook_size=4), obs5, rule=make_rule("exact"), gamma=gamma
    )
    ours = GraphedDecoder(main5, "replay", gamma=gamma).rsd(obs5, replay=drafts)
    assert torch.equal(ours.tokens, greedy)
    assert ours.main_passes.tolist() == [t.main_passes for t in eager.traces]
    assert ours.main_passes[5] == math.ceil(4 / (gamma + 1))  # the oracle item


def test_stale_slots_of_an_earlier_chunk_do_not_leak(main5, obs5):
    """Slots are reused across chunks without clearing: a decoder that has just decoded other
    observations must give what a fresh one gives."""
    head = head_for(main5)
    other = main5.prepare(observations(6, seed=99))
    used = GraphedDecoder(main5, head, gamma=2)
    used.rsd(other)
    used.plain(other)
    fresh = GraphedDecoder(main5, head, gamma=2)
    assert torch.equal(used.rsd(obs5).tokens, fresh.rsd(obs5).tokens)
    assert torch.equal(used.plain(obs5).tokens, decode_rfsq_ar(main5, obs5).tokens)


def test_a_new_batch_size_gets_new_buffers(main5, obs5):
    decoder = GraphedDecoder(main5, head_for(main5), gamma=2)
    decoder.rsd(obs5)
    one = main5.prepare(observations(1, seed=5))
    assert torch.equal(decoder.rsd(one).tokens, decode_rfsq_ar(main5, one).tokens)
    assert torch.equal(decoder.rsd(obs5).tokens[:1], decode_rfsq_ar(main5, one).tokens)


def test_the_head_drafts_what_the_eager_head_drafts(main5, obs5):
    """greedy_tokens (no q, no host sync) is the argmax of HeadDrafter.propose."""
    head = head_for(main5)
    state, _ = main5.prefix_and_first_block(obs5)
    head.begin(obs=obs5, main_state=state)
    tokens = torch.randint(0, 4, (6, 5, 2))
    committed = torch.tensor([1, 2, 3, 4, 1, 2])
    eager = head.propose(tokens=tokens, committed=committed, gamma=3, temperature=0.0, generator=None).tokens
    prev = tokens[torch.arange(6), committed - 1]
    assert torch.equal(head.greedy_tokens(head._pooled, committed, prev, 3), eager)


def test_what_it_cannot_decode_is_refused_clearly(main5, obs5):
    with pytest.raises(ValueError, match="llama trunk"):
        GraphedDecoder(tiny_llava_policy())
    with pytest.raises(ValueError, match="rfsq_ar policy"):
        GraphedDecoder(tiny_policy("rfsq_parallel"))
    with pytest.raises(ValueError, match="CUDA device"):
        GraphedDecoder(main5, graphs=True)
    with pytest.raises(ValueError, match="no drafter"):
        GraphedDecoder(main5).rsd(obs5)
    with pytest.raises(ValueError, match="replay= tokens exactly"):
        GraphedDecoder(main5, "replay").rsd(obs5)
    with pytest.raises(ValueError, match="drafter must be"):
        GraphedDecoder(main5, ReplayDrafter(tokens=torch.zeros(1, 5, 2, dtype=torch.long), codebook_size=4))


def _comparable(trace) -> dict:
    """A trace without what only the eager engine computes (probabilities) or what varies (time)."""
    out = trace.to_dict()
    out.pop("timings")
    for r in out["rounds"]:
        for k in ("draft_probs", "main_probs", "main_top_tokens", "main_top_probs"):
            r.pop(k)
    return out


@pytest.mark.parametrize("drafter", ["head", "replay"])
@pytest.mark.parametrize("spec", ["rfsq_ar", "rsd_head:g1:exact", "rsd_head:g2:exact", "rsd_head:g3:exact"])
def test_the_fixed_engine_as_a_decoder_gives_the_eager_traces(main5, obs5, spec, drafter):
    """Decoder(engine="fixed"): same tokens, actions, passes, rounds, verdicts and sources as
    the eager engine, so every table reads its traces as it reads the eager ones. The random head
    is never right; the replayed drafts are right except at layer i of item i, so items accept
    different layers, fall out of step, and get corrections and bonus layers."""
    tokenizer = FakeRFSQ(num_layers=5, num_latents=2, levels=(2, 2))
    if drafter == "head":
        draft = head_for(main5)
    else:
        drafts = decode_rfsq_ar(main5, obs5).tokens.clone()
        for i in range(5):
            drafts[i, i] = (drafts[i, i] + 1) % 4
        draft = ReplayDrafter(tokens=drafts, codebook_size=4)
    eager = Decoder(MethodSpec.parse(spec), main5, draft, tokenizer).decode(obs5)
    fixed_decoder = Decoder(MethodSpec.parse(spec), main5, draft, tokenizer, engine="fixed")
    for _ in range(2):  # the second call reuses the buffers (graphs on a GPU)
        fixed = fixed_decoder.decode(obs5)
        assert torch.equal(fixed.tokens, eager.tokens) and torch.equal(fixed.actions, eager.actions)
        assert [_comparable(t) for t in fixed.traces] == [_comparable(t) for t in eager.traces]
    rounds = [len(t.rounds) for t in fixed.traces]
    if spec != "rfsq_ar":  # the items fell out of step: the comparison covered rounds that differ
        accepted = [t.accepted_layers for t in fixed.traces]
        out_of_step = len(set(rounds)) > 1 or len(set(accepted)) > 1
        assert (out_of_step and min(accepted) > 0) == (drafter == "replay"), (rounds, accepted)
    timings = fixed.traces[0].timings
    assert timings["total"] == pytest.approx(
        sum(v for k, v in timings.items() if k not in ("total", "record"))
    )
    summarize(fixed.traces, baseline=eager.traces)  # the summary tables read these traces as they are


def test_the_fixed_engine_refuses_what_it_does_not_decode(main5):
    head, tokenizer = head_for(main5), FakeRFSQ(num_layers=5, num_latents=2, levels=(2, 2))
    for spec in ("rfsq_ar@1", "rsd_head:g2:match_rate:0.5", "rfsq_ar+entropy:0.3", "rsd_head:g2:exact:once"):
        with pytest.raises(ValueError, match="engine 'fixed' cannot decode"):
            Decoder(MethodSpec.parse(spec), main5, head, tokenizer, engine="fixed")
    with pytest.raises(ValueError, match="engine must be one of"):
        Decoder(MethodSpec.parse("rfsq_ar"), main5, tokenizer=tokenizer, engine="graphs")


def test_per_layer_logits_equal_each_rows_own_layer():
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 3, 5, 8), torch.randn(4, 8, 6), torch.randn(4, 6)
    layer = torch.randint(0, 4, (2, 3, 5))
    expected = torch.einsum("...d,...dv->...v", x, w[layer]) + b[layer]
    assert torch.allclose(per_layer_logits(x, w, b, layer), expected, atol=1e-6)


def test_a_block_reading_head_is_given_the_block_of_the_newest_committed_layer(main5, obs5):
    """The eager loop and the fixed-shape path hand the head the main states of the block that
    produced the newest committed layer: drafting on those states reproduces their drafts, and a
    head given other states (block 0's, always) drafts differently."""
    head = head_for(main5, reads_blocks=True)
    greedy = decode_rfsq_ar(main5, obs5).tokens
    hidden = main5.teacher_forced(obs5, greedy).hidden  # (B, L, N, D): block b's states
    state, _ = main5.prefix_and_first_block(obs5)
    head.begin(obs=obs5, main_state=state)
    committed = torch.full((6,), 2)
    prev = greedy[:, 1]
    right = head.greedy_tokens(head._pooled, committed, prev, 2, hidden[:, 1])
    eager = head.propose(
        tokens=greedy, committed=committed, gamma=2, temperature=0.0, generator=None, main_hidden=hidden[:, 1]
    ).tokens
    assert torch.equal(right, eager)
    assert not torch.equal(right, head.greedy_tokens(head._pooled, committed, prev, 2, hidden[:, 0]))
    with pytest.raises(ValueError, match="block states"):
        head.greedy_tokens(head._pooled, committed, prev, 2)


@pytest.mark.parametrize("path", ["eager", "graphed"])
def test_both_loops_hand_the_head_the_states_of_the_newest_committed_layers_block(
    main5, obs5, path, monkeypatch
):
    head = head_for(main5, reads_blocks=True)
    greedy = decode_rfsq_ar(main5, obs5).tokens
    reference = main5.teacher_forced(obs5, greedy).hidden  # (B, L, N, D), teacher forced on the output
    seen = []
    if path == "eager":
        propose = head.propose
        monkeypatch.setattr(
            head,
            "propose",
            lambda **kw: seen.append((kw["committed"].clone(), kw["main_hidden"])) or propose(**kw),
        )
        speculative_decode(main5, head, obs5, rule=make_rule("exact"), gamma=2)
    else:
        draft = head.greedy_tokens
        monkeypatch.setattr(
            head,
            "greedy_tokens",
            lambda pooled, c, prev, g, h: seen.append((c.clone(), h.clone())) or draft(pooled, c, prev, g, h),
        )
        GraphedDecoder(main5, head, gamma=2).rsd(obs5)
    assert len(seen) >= 2
    for committed, hidden in seen:
        for i in range(6):
            if committed[i] < main5.L:
                assert torch.allclose(hidden[i], reference[i, committed[i] - 1], atol=1e-8), (
                    i,
                    int(committed[i]),
                )


@pytest.mark.slow
def test_gpu_check_script_runs_its_graphed_step_on_a_cpu(tmp_path):
    """The smoke mode of scripts/gpu_check.sh: one results folder with provenance and the
    side-by-side benchmark, whose parity check passed."""
    repo = Path(__file__).resolve().parents[2]
    env = os.environ | {
        "GPU_CHECK_DEVICE": "cpu",
        "GPU_CHECK_QUICK": "1",
        "GPU_CHECK_STEPS": "graphed",
        "PYTHON": sys.executable,
    }
    done = subprocess.run(
        ["bash", str(repo / "scripts" / "gpu_check.sh"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "git commit:" in (tmp_path / "provenance.txt").read_text()
    bench = json.loads((tmp_path / "bench_graphed.json").read_text())
    assert [r["parity_ok"] for r in bench["results"]] == [True]
    assert "ok      bench_graphed.log" in (tmp_path / "summary.txt").read_text()
