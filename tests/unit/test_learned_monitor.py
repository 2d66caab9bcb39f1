"""The learned depth monitor: a small head predicts how much the finer RFSQ layers still add.

Its target is exactly the remaining residual of the RFSQ decode, it learns on a frozen trunk, it
saves and loads like every checkpoint, and a monitor that reads it stops decoding exactly where
its prediction falls to the threshold (the chunk is the RFSQ decode of the layers kept).
"""

from __future__ import annotations

import math

import pytest
import torch
from fake_rfsq import FakeRFSQ, observations

from rsdlib.decoding import decode_rfsq_ar, make_rule, speculative_decode
from rsdlib.decoding.methods import Decoder
from rsdlib.decoding.monitors import MONITORS, DepthMonitor, MonitorInput
from rsdlib.decoding.spec import MethodSpec
from rsdlib.policies import RandomDrafter, checkpoints
from rsdlib.policies import depth_head as dh
from rsdlib.policies.trunk import pooled_prefix

L, N, V = 3, 2, 6

pytestmark = pytest.mark.usefixtures("one_thread")


def depth_head(seed: int = 0, *, width: int = 16) -> dh.ResidualNormHead:
    """A seeded random head for the tiny main policy (float64, as the tiny policies are)."""
    torch.manual_seed(seed)
    head = dh.ResidualNormHead(
        config=dh.DepthHeadConfig(trunk_hidden_size=width, hidden_size=16, num_layers=L)
    )
    with torch.no_grad():  # outputs that differ clearly between observations
        for p in head.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 1.0 / math.sqrt(p.shape[1]))
    return head.double().eval()


@pytest.fixture(scope="module")
def obs(main):
    return main.prepare(observations(6))


@pytest.fixture(scope="module")
def pooled(main, obs):
    with torch.no_grad():
        state = main.prefix(obs)
    return pooled_prefix(state.prefix_hidden, state.prefix_valid)


def rsd(main, obs, monitor):
    drafter = RandomDrafter(num_layers=L, num_latents=N, codebook_size=V, seed=3)
    return speculative_decode(
        main, drafter, obs, rule=make_rule("exact"), gamma=2, tokenizer=FakeRFSQ(), monitor=monitor
    )


# -- the target ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted_rfsq():
    """A real RFSQ tokenizer fitted on smooth, expert-like synthetic chunks, and its tokens."""
    from rsdlib.tokenizers import RFSQTokenizer
    from rsdlib.tokenizers.data import split_episodes, synthetic_episodes

    torch.set_num_threads(1)
    episodes = synthetic_episodes(8, generator=torch.Generator().manual_seed(0), length=60)
    split = split_episodes(episodes, held_out_fraction=0.25, horizon=8, seed=0, source="synthetic")
    tok = RFSQTokenizer(
        num_latents=2, num_layers=3, levels=[5, 5, 5], hidden=32, depth=1, steps=300, batch_size=128, lr=3e-3,
    )  # fmt: skip
    tok.fit(split.train, progress=False)
    return tok, tok.encode(split.held_out).transpose(1, 2)  # (M, L, N)


def test_the_remaining_residual_is_what_the_finer_layers_add_to_the_rfsq_decode(fitted_rfsq):
    tok, tokens = fitted_rfsq
    r = dh.remaining_residual(tok, tokens)
    assert r.shape == (len(tokens), tok.num_layers) and bool((r >= 0).all())
    assert bool((r[:, -1] == 0).all())  # all L layers decoded: nothing is left
    # by its definition, in normalised units
    ids = tokens.transpose(1, 2)
    full = tok.decode_normalised(ids).double()
    for k in range(1, tok.num_layers):
        want = (full - tok.decode_normalised(ids[..., :k]).double()).abs().mean(dim=(1, 2))
        torch.testing.assert_close(r[:, k - 1], want.float())
    # a fitted RFSQ refines coarse to fine: on average each layer leaves less
    mean = r.mean(dim=0)
    assert all(mean[k] >= mean[k + 1] for k in range(tok.num_layers - 1)), mean.tolist()
    assert mean[0] > 0
    # decoding in batches changes nothing (but float32 rounding in the decoder's matmuls)
    torch.testing.assert_close(dh.remaining_residual(tok, tokens, batch_size=7), r, rtol=1e-5, atol=1e-6)


def test_the_target_checks_its_tokens():
    with pytest.raises(ValueError, match=r"\(M, L, N\)"):
        dh.remaining_residual(FakeRFSQ(), torch.zeros(4, L, dtype=torch.long))
    with pytest.raises(ValueError, match="layers"):
        dh.remaining_residual(FakeRFSQ(), torch.zeros(4, L + 1, N, dtype=torch.long))


# -- the head -----------------------------------------------------------------------------------------


def test_the_head_predicts_sizes_and_nothing_left_after_the_last_layer(pooled):
    head = depth_head()
    log = head(pooled)
    assert log.shape == (len(pooled), L) and bool((log[:, -1] == math.log(dh.EPS)).all())
    sizes = head.predict_remaining(pooled)
    assert bool((sizes >= 0).all()) and bool((sizes[:, -1] == 0).all())
    torch.testing.assert_close(sizes[:, :-1], log[:, :-1].exp() - dh.EPS)
    with pytest.raises(ValueError, match="at least 2"):
        dh.DepthHeadConfig(num_layers=1)


def test_training_on_the_frozen_trunk_lowers_the_loss(main):
    obs = main.prepare(observations(12, seed=1))
    tokens = torch.randint(0, V, (12, L, N), generator=torch.Generator().manual_seed(0))
    batch = {"obs": obs, "remaining": dh.remaining_residual(FakeRFSQ(), tokens)}
    head = depth_head(seed=1)
    loss_fn = dh.depth_head_loss(main, head)
    trunk_before = {k: v.clone() for k, v in main.state_dict().items()}
    first, metrics = loss_fn(batch)
    assert set(metrics) == {"loss", "log_mae"}
    head.start_at(batch["remaining"])  # the per-layer mean: already better than a random start
    started, _ = loss_fn(batch)
    assert started < first
    head.train()
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(150):
        loss, _ = loss_fn(batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    head.eval()
    last, _ = loss_fn(batch)
    assert last < 0.5 * started, (float(first), float(started), float(last))
    assert all(torch.equal(v, trunk_before[k]) for k, v in main.state_dict().items())  # frozen
    # log targets: the loss is the squared error of log(size + dh.EPS)
    predicted = head(pooled_prefix(*_prefix(main, obs)))[:, :-1]
    torch.testing.assert_close(last, ((predicted - dh.log_size(batch["remaining"])[:, :-1]) ** 2).mean())


def _prefix(main, obs):
    with torch.no_grad():
        state = main.trunk.prefix(obs, use_cache=False)
    return state.prefix_hidden, state.prefix_valid


def test_a_head_for_another_trunk_is_refused(main):
    with pytest.raises(ValueError, match="width 8"):
        dh.depth_head_loss(main, depth_head(width=8))
    with pytest.raises(ValueError, match="width 8"):
        Decoder(MethodSpec.parse("rfsq_ar+learned:0.02"), main, tokenizer=FakeRFSQ(),
                depth_head=depth_head(width=8))  # fmt: skip


def test_the_head_saves_loads_and_compacts_as_a_checkpoint(tmp_path, pooled):
    head = depth_head()
    folder = checkpoints.save(head, tmp_path / "depth_head", metadata={"note": "test"})
    assert checkpoints.read_config(folder)["kind"] == "depth_head"
    loaded = checkpoints.load(folder)
    assert isinstance(loaded, dh.ResidualNormHead) and loaded.config == head.config
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in head.state_dict().items())
    assert torch.equal(loaded.predict_remaining(pooled), head.predict_remaining(pooled))
    checkpoints.compact(folder)  # float16 on disk, float32 in memory
    half = checkpoints.load(folder)
    assert next(half.parameters()).dtype == torch.float32
    torch.testing.assert_close(half.predict_remaining(pooled).double(), head.predict_remaining(pooled),
                               rtol=2e-2, atol=1e-3)  # fmt: skip
    with pytest.raises(checkpoints.CheckpointError, match="cannot draft"):
        checkpoints.load_drafter(folder)


# -- the monitor --------------------------------------------------------------------------------------


def test_learned_specs_parse_and_print():
    for text in ("rfsq_ar+learned:0.02", "rsd_head:g2:exact+learned:0.02", "rfsq_ar+learned:0.1@1"):
        spec = MethodSpec.parse(text)
        assert str(spec) == text and spec.monitor == "learned"
    monitor = DepthMonitor("learned", 0.02, predictor=depth_head().predict_remaining)
    # the head is a model, not a setting: it does not change what the monitor is
    assert monitor == MethodSpec.parse("rfsq_ar+learned:0.02").depth_monitor
    assert hash(monitor) == hash(DepthMonitor("learned", 0.02)) and "predictor" not in repr(monitor)


def test_the_monitor_value_is_the_prediction_after_the_layers_decoded():
    remaining = torch.tensor([[0.5, 0.1, 0.0], [0.2, 0.3, 0.0]], dtype=torch.float64)
    probs, h = torch.full((2, N, V), 1 / V), torch.zeros(2, 4)
    for k in (1, 2):
        value = MONITORS["learned"].value(MonitorInput(k, L, probs, h, remaining=remaining))
        assert value.tolist() == remaining[:, k - 1].tolist()


def test_without_a_head_the_learned_monitor_says_what_to_train_and_pass(main, obs, tmp_path):
    with pytest.raises(ValueError, match="depth_head"):
        decode_rfsq_ar(main, obs, tokenizer=FakeRFSQ(), monitor=DepthMonitor("learned", 0.02))
    with pytest.raises(ValueError, match=r"train_models\(.*depth_head"):
        Decoder(MethodSpec.parse("rsd_random:g2:exact+learned:0.02"), main, tokenizer=FakeRFSQ(),
                drafter=RandomDrafter(num_layers=L, num_latents=N, codebook_size=V))  # fmt: skip
    with pytest.raises(ValueError, match="depth_head"):
        MONITORS["learned"].value(MonitorInput(1, L, torch.zeros(1, N, V), torch.zeros(1, 4)))

    from rsdlib.libero.learned_policy import from_checkpoint

    path = checkpoints.save(main, tmp_path / "rfsq_ar")
    with pytest.raises(ValueError, match="depth_head_path"):
        from_checkpoint(path, "rfsq_ar+learned:0.02", tokenizer=FakeRFSQ())
    with pytest.raises(checkpoints.CheckpointError, match="nowhere.*holds no depth head"):
        from_checkpoint(
            path, "rfsq_ar+learned:0.02", tokenizer=FakeRFSQ(), depth_head_path=tmp_path / "nowhere"
        )
    with pytest.raises(checkpoints.CheckpointError, match="not a depth head"):
        from_checkpoint(path, "rfsq_ar+learned:0.02", tokenizer=FakeRFSQ(), depth_head_path=path)


def test_an_endless_threshold_decodes_full_depth_and_an_unreachable_one_stops_after_one_layer(main, obs):
    tok, head = FakeRFSQ(), depth_head()
    full = decode_rfsq_ar(main, obs, tokenizer=tok)
    go_on = DepthMonitor("learned", -math.inf, predictor=head.predict_remaining)
    for result in (decode_rfsq_ar(main, obs, tokenizer=tok, monitor=go_on), rsd(main, obs, go_on)):
        assert torch.equal(result.tokens, full.tokens) and torch.equal(result.actions, full.actions)
        assert all(t.layers_used == L for t in result.traces)
    stop = DepthMonitor("learned", math.inf, predictor=head.predict_remaining)
    for result in (decode_rfsq_ar(main, obs, tokenizer=tok, monitor=stop), rsd(main, obs, stop)):
        assert all(t.layers_used == 1 for t in result.traces)
        assert torch.equal(result.tokens[:, 0], full.tokens[:, 0])
        assert bool((result.tokens[:, 1:] == -1).all())
        assert torch.equal(result.actions, tok.decode(full.tokens[:, :1].transpose(1, 2)))
    # the same through the Decoder, which attaches the head to the spec's monitor
    decoder = Decoder(MethodSpec.parse("rfsq_ar+learned:-inf"), main, tokenizer=tok, depth_head=head)
    assert torch.equal(decoder.decode(obs).tokens, full.tokens)


def test_each_item_stops_where_its_prediction_falls_to_the_threshold(main, obs, pooled):
    tok, head = FakeRFSQ(), depth_head()
    predicted = head.predict_remaining(pooled)  # (B, L)
    threshold = float(predicted[:, 0].median())
    full = decode_rfsq_ar(main, obs, tokenizer=tok)
    spec = MethodSpec.parse(f"rfsq_ar+learned:{threshold!r}")
    plain = Decoder(spec, main, tokenizer=tok, depth_head=head).decode(obs)
    depths = [t.layers_used for t in plain.traces]
    assert len(set(depths)) > 1  # the items of one batch stop at their own depth
    for i, d in enumerate(depths):
        # the chunk at the depth chosen is the RFSQ decode of that many layers
        assert torch.equal(plain.tokens[i, :d], full.tokens[i, :d])
        assert bool((plain.tokens[i, d:] == -1).all())
        assert torch.equal(plain.actions[i], tok.decode(full.tokens[i : i + 1, :d].transpose(1, 2))[0])
        # it went on while the prediction was above the threshold and stopped at the first that was not
        asked = predicted[i, : min(d, L - 1)].tolist()
        assert plain.traces[i].monitor_values == pytest.approx(asked)
        assert all(v > threshold for v in asked[: d - 1]) and (d == L or asked[-1] <= threshold)
    # RSD with the exact rule picks the same depths: the prediction depends on the observation alone
    speculative = rsd(main, obs, DepthMonitor("learned", threshold, predictor=head.predict_remaining))
    assert torch.equal(speculative.tokens, plain.tokens) and torch.equal(speculative.actions, plain.actions)


def test_a_learned_policy_loads_its_depth_head_from_a_checkpoint(main, tmp_path):
    from rsdlib.libero.learned_policy import from_checkpoint
    from rsdlib.libero.policy import EpisodeContext

    path = checkpoints.save(main, tmp_path / "rfsq_ar")
    head_path = checkpoints.save(depth_head(), tmp_path / "depth_head")
    policy = from_checkpoint(path, "rfsq_ar+learned:-inf", tokenizer=FakeRFSQ(), depth_head_path=head_path)
    policy.reset(EpisodeContext("libero_spatial", 0, 0, 0, "pick up the black bowl"))
    out = policy.act(observations(1)[0])
    assert out.diagnostics["depth"] == L and len(out.diagnostics["monitor_values"]) == L - 1
    assert policy.config()["depth_head_path"] == str(head_path)
    # other specs do not read it
    assert "depth_head_path" not in from_checkpoint(path, "rfsq_ar", tokenizer=FakeRFSQ(),
                                                    depth_head_path=head_path).config()  # fmt: skip
