"""The learned policy evaluation runs: RSD and plain decoding behind the Policy interface, on tiny models."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from fake_rfsq import FakeRFSQ, observations, tiny_policy
from mocks.fake_libero import FakeEnv

from rsdlib.decoding.spec import MethodSpec
from rsdlib.libero.evaluate import EPISODES_FILE, EvalOptions, evaluate
from rsdlib.libero.learned_policy import LearnedPolicy, chunk_diagnostics, from_checkpoint
from rsdlib.libero.policy import EpisodeContext, as_output
from rsdlib.libero.protocol import Protocol
from rsdlib.libero.registry import make_policy
from rsdlib.policies import CheckpointError, PolicyDrafter, RandomDrafter, save
from rsdlib.tokenizers import Normaliser

L, N, V = 3, 2, 6

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small():
    return tiny_policy(seed=7, hidden=8)


def context(seed: int = 0) -> EpisodeContext:
    return EpisodeContext("libero_spatial", 0, 0, seed, "pick up the black bowl")


def rsd(main, drafter, rule="exact", gamma=2, param=None, temperature=0.0) -> LearnedPolicy:
    spec = MethodSpec("rsd", drafter.name, gamma, rule, param, temperature)
    return LearnedPolicy(main, spec, tokenizer=FakeRFSQ(), drafter=drafter)


def plain(model, method="rfsq_ar", temperature=0.0) -> LearnedPolicy:
    return LearnedPolicy(model, MethodSpec(method, temperature=temperature), tokenizer=FakeRFSQ())


def random_drafter(seed: int = 3) -> RandomDrafter:
    return RandomDrafter(num_layers=L, num_latents=N, codebook_size=V, seed=seed)


# -- (1) lossless: exact RSD acts exactly like greedy plain decoding ---------------------------------


@pytest.mark.parametrize("gamma", [1, 2, L])
def test_rsd_with_exact_rule_acts_like_greedy_rfsq_ar(main, small, gamma):
    greedy = plain(main)
    greedy.reset(context())
    chunks = [greedy.act(o).actions for o in observations(4)]
    assert chunks[0].shape == (8, 7)
    assert not all(np.array_equal(chunks[0], c) for c in chunks[1:])  # the observation matters
    for drafter in (random_drafter(), PolicyDrafter(policy=small)):
        policy = rsd(main, drafter, rule="exact", gamma=gamma)
        policy.reset(context())
        for obs, want in zip(observations(4), chunks, strict=True):
            out = policy.act(obs)
            np.testing.assert_array_equal(out.actions, want)
            assert out.diagnostics["method"] == "rsd"


# -- (2) diagnostics: JSON, and every layer accounted for ---------------------------------------------


def test_rsd_diagnostics_are_json_and_account_for_every_layer(main):
    policy = rsd(main, random_drafter(), rule="exact", gamma=2)
    policy.reset(context())
    kinds_seen = set()
    for obs in observations(6):
        d = policy.act(obs).diagnostics
        assert json.loads(json.dumps(d, allow_nan=False)) == d
        assert sum(d["committed_per_round"]) == L
        assert sum(d["accepted_per_round"]) == d["accepted_layers"]
        # the first round is the prefix pass's (layer 0, no draft, no pass of its own)
        assert d["main_passes"] == d["rounds"] - 1 == len(d["committed_per_round"]) - 1
        assert d["committed_per_round"][0] == 1 and d["layer_kinds"][0] == "plain"
        assert len(d["layer_kinds"]) == len(d["acceptance_per_layer"]) == L
        for layer, ok in d["judged"]:
            assert d["acceptance_per_layer"][layer] == ok
            assert d["layer_kinds"][layer] == ("accepted" if ok else "corrected")
        for layer, kind in enumerate(d["layer_kinds"]):
            if kind == "bonus":
                assert d["acceptance_per_layer"][layer] is None  # not drafted, so not judged
        assert set(d["latency_ms"]) >= {"prefix", "draft", "verify", "plain", "total"}
        assert d["latency_ms"]["total"] > 0 and d["preprocess_ms"] >= 0
        assert (d["rule"], d["gamma"], d["drafter"], d["lossless"]) == ("exact", 2, "random", True)
        kinds_seen |= set(d["layer_kinds"])
    assert "corrected" in kinds_seen  # the random drafter is wrong somewhere


def test_plain_methods_record_diagnostics_too(main):
    obs = observations(1)[0]
    par = tiny_policy("rfsq_parallel")
    d = plain(par, "rfsq_parallel").act(obs).diagnostics
    assert (d["method"], d["main_passes"], d["layer_kinds"]) == ("rfsq_parallel", 1, ["plain"] * L)
    d = plain(main).act(obs).diagnostics
    assert (d["method"], d["main_passes"]) == ("rfsq_ar", L - 1)  # layer 0 comes with the prefix
    assert json.loads(json.dumps(d)) == d

    l1 = tiny_policy("l1_regression")
    norm = Normaliser().fit(np.random.default_rng(0).normal(size=(100, 7)))
    policy = LearnedPolicy(l1, "l1_regression", normaliser=norm)
    out = as_output(policy.act(obs))
    assert out.actions.shape == (8, 7) and set(np.unique(out.actions[:, 6])) <= {-1.0, 1.0}
    assert out.diagnostics["method"] == "l1_regression"


class FakeFAST:
    """Enough of the FAST tokenizer contract: a chunk whose every entry is the mean id."""

    horizon, action_dim, vocab_size = 8, 7, 6

    def decode(self, ids):
        return torch.stack([torch.full((8, 7), float(np.mean(s.tolist()) if len(s) else 0.0)) for s in ids])


def test_fast_ar_decodes_with_its_tokenizer():
    fast = tiny_policy("fast_ar", fast_vocab=7, fast_max_tokens=5)
    policy = LearnedPolicy(fast, "fast_ar", tokenizer=FakeFAST())
    out = policy.act(observations(1)[0])
    assert out.actions.shape == (8, 7)
    assert out.diagnostics["method"] == "fast_ar" and 1 <= out.diagnostics["main_passes"] <= 5
    with pytest.raises(ValueError, match="FAST tokenizer has 6 ids"):
        LearnedPolicy(
            tiny_policy("fast_ar", fast_vocab=9, fast_max_tokens=5), policy.spec, tokenizer=FakeFAST()
        )


# -- (3) seeded sampling ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["rsd", "rfsq_ar"])
def test_same_seed_same_samples_other_seed_other_samples(main, small, method):
    if method == "rsd":
        policy = rsd(main, PolicyDrafter(policy=small), rule="speculative", gamma=2, temperature=1.0)
    else:
        policy = plain(main, temperature=1.0)
    obs = observations(4)

    def episode(seed):
        policy.reset(context(seed))
        return np.stack([policy.act(o).actions for o in obs])

    first = episode(5)
    np.testing.assert_array_equal(episode(5), first)
    assert not np.array_equal(episode(6), first)


def test_a_policy_survives_pickling_for_worker_processes(main, small):
    policy = rsd(main, PolicyDrafter(policy=small), rule="speculative", gamma=2, temperature=1.0)
    copy = pickle.loads(pickle.dumps(policy))
    obs = observations(2)
    for p in (policy, copy):
        p.reset(context(9))
    for o in obs:
        np.testing.assert_array_equal(policy.act(o).actions, copy.act(o).actions)


# -- (4) bad input says what is wrong -----------------------------------------------------------------


def test_bad_observations_raise_clear_errors(main):
    policy = plain(main)
    policy.reset(context())
    good = observations(1)[0]
    with pytest.raises(ValueError, match=r"lacks \['eye_in_hand_rgb'\].*render=True"):
        policy.act({k: v for k, v in good.items() if k != "eye_in_hand_rgb"})
    with pytest.raises(ValueError, match=r"agentview_rgb is uint8\(32, 32, 3\), expected uint8\(16, 16, 3\)"):
        policy.act(good | {"agentview_rgb": np.zeros((32, 32, 3), np.uint8)})
    with pytest.raises(ValueError, match=r"expected uint8\(16, 16, 3\)"):
        policy.act(good | {"agentview_rgb": np.zeros((16, 16, 3), np.float32)})
    with pytest.raises(ValueError, match=r"lacks \['proprio'\]"):
        policy.act({k: v for k, v in good.items() if k != "proprio"})
    with pytest.raises(ValueError, match="proprio has 3 values, expected 8"):
        policy.act(good | {"proprio": np.zeros(3)})
    # Without an instruction in the observation, the episode's is used; with neither, it is named.
    no_text = {k: v for k, v in good.items() if k != "instruction"}
    assert policy.act(no_text).actions.shape == (8, 7)
    with pytest.raises(ValueError, match=r"lacks \['instruction'\]"):
        plain(main).act(no_text)
    with pytest.raises(RuntimeError, match="reset"):
        plain(main, temperature=1.0).act(good)


def test_bad_settings_and_parts_raise_clear_errors(main, small):
    with pytest.raises(ValueError, match="method"):
        MethodSpec(method="beam")
    with pytest.raises(ValueError, match="temperature"):
        MethodSpec("rsd", "head", 2, "exact", temperature=1.0)
    with pytest.raises(ValueError, match="temperature"):
        MethodSpec("rsd", "head", 2, "speculative")
    with pytest.raises(ValueError, match="gamma"):
        MethodSpec("rsd", "head", 0, "exact")
    with pytest.raises(ValueError, match="needs a drafter"):
        LearnedPolicy(main, "rsd_head:g2:exact", tokenizer=FakeRFSQ())
    with pytest.raises(ValueError, match="RFSQAutoregressive"):
        plain(tiny_policy("rfsq_parallel"), "rfsq_ar")
    with pytest.raises(ValueError, match="tokenizer has"):
        LearnedPolicy(main, "rfsq_ar", tokenizer=FakeRFSQ(num_layers=2))
    with pytest.raises(ValueError, match="tau"):
        rsd(main, PolicyDrafter(policy=small), rule="match_rate", param=2.0)
    with pytest.raises(ValueError, match=r"\(L, N, V\)"):
        rsd(main, PolicyDrafter(policy=tiny_policy(seed=1, hidden=8, num_layers=4)))
    with pytest.raises(ValueError, match="Normaliser"):
        LearnedPolicy(tiny_policy("l1_regression"), "l1_regression")


# -- checkpoints ---------------------------------------------------------------------------------------


def test_from_checkpoint_loads_what_was_saved_and_names_bad_files(tmp_path, main, small):
    main_dir, draft_dir = save(main, tmp_path / "main"), save(small, tmp_path / "draft")
    loaded = from_checkpoint(main_dir, "rsd_tiny:g2:exact", drafter_path=draft_dir, tokenizer=FakeRFSQ())
    assert loaded.spec.method == "rsd" and loaded.name == "rsd_tiny:g2:exact"
    assert loaded.config()["checkpoint_path"] == str(main_dir)
    in_memory = rsd(main, PolicyDrafter(policy=small), rule="exact", gamma=2)
    for o in observations(3):
        np.testing.assert_array_equal(loaded.act(o).actions, in_memory.act(o).actions)
    by_name = make_policy("learned", path=main_dir, spec="rfsq_ar", tokenizer=FakeRFSQ())
    assert by_name.spec.method == "rfsq_ar"
    lossy = from_checkpoint(
        main_dir, "rsd_tiny:g2:match_rate:0.5", drafter_path=draft_dir, tokenizer=FakeRFSQ()
    )
    assert lossy.config()["rule_label"] == "match_rate(tau=0.5) [lossy]"

    with pytest.raises(CheckpointError, match=str(tmp_path / "nowhere" / "config.json")):
        from_checkpoint(tmp_path / "nowhere", "rfsq_ar", tokenizer=FakeRFSQ())
    with pytest.raises(CheckpointError, match=r"main/config.json holds a 'rfsq_ar' policy.*'rfsq_parallel'"):
        from_checkpoint(main_dir, "rfsq_parallel", tokenizer=FakeRFSQ())
    with pytest.raises(ValueError, match="drafter_path"):
        from_checkpoint(main_dir, "rsd_head:g2:exact", tokenizer=FakeRFSQ())
    with pytest.raises(FileNotFoundError, match=r"metadata\['tokenizer'\]"):
        from_checkpoint(main_dir, "rfsq_ar")
    with pytest.raises(FileNotFoundError, match="not at"):
        from_checkpoint(main_dir, "rfsq_ar", tokenizer=tmp_path / "no_tokenizer")
    l1_dir = save(tiny_policy("l1_regression"), tmp_path / "l1")
    with pytest.raises(CheckpointError, match="l1/config.json.*cannot draft"):
        from_checkpoint(main_dir, "rsd_tiny:g2:exact", drafter_path=l1_dir, tokenizer=FakeRFSQ())
    deep_dir = save(tiny_policy(seed=1, hidden=8, num_layers=4), tmp_path / "deep")
    with pytest.raises(CheckpointError, match=r"deep/config.json.*\(L, N, V\)"):
        from_checkpoint(main_dir, "rsd_tiny:g2:exact", drafter_path=deep_dir, tokenizer=FakeRFSQ())


# -- the real harness path, without LIBERO ------------------------------------------------------------


class EightDimFakeEnv(FakeEnv):
    """The fake env with LIBERO's 8-D proprio (its position first, zeros after)."""

    def _obs(self):
        obs = super()._obs()
        obs["proprio"] = np.pad(obs["proprio"], (0, 7)).astype(np.float32)
        return obs


def test_an_episode_through_the_harness_records_each_chunks_diagnostics(tmp_path, main):
    policy = rsd(main, random_drafter(), rule="exact", gamma=2)

    def run(folder: str, init: int, **options):
        return evaluate(policy, ["libero_spatial"], [0], [init], run_dir=tmp_path / folder, executor="serial",
                        env_factory=EightDimFakeEnv, options=EvalOptions(**options), progress=False)  # fmt: skip

    result = run("run", 2, render=True, protocol=Protocol(camera_resolution=main.config.trunk.image_size))
    (record,) = result.records
    assert record["error"] is None, record["error"]
    assert record["chunks"] >= 1 and len(record["diagnostics"]) == record["chunks"]
    for d in record["diagnostics"]:
        assert d["method"] == "rsd" and sum(d["committed_per_round"]) == L
    on_disk = json.loads((tmp_path / "run" / EPISODES_FILE).read_text().splitlines()[0])
    assert on_disk["diagnostics"] == record["diagnostics"]
    # Without rendering the policy has no images: evaluate says what to do before any episode.
    with pytest.raises(ValueError, match=r"render=True"):
        run("blind", 3)
    assert not (tmp_path / "blind" / EPISODES_FILE).exists()  # nothing ran, nothing was scored


def test_chunk_diagnostics_of_a_plain_trace(main):
    from rsdlib.decoding import decode_rfsq_ar

    trace = decode_rfsq_ar(main, observations(1), tokenizer=FakeRFSQ()).traces[0]
    d = chunk_diagnostics(trace)
    assert d["layer_kinds"] == ["plain"] * L and "preprocess_ms" not in d
    assert d["latency_ms"]["total"] == pytest.approx(1000 * trace.timings["total"], abs=1e-3)


def test_a_run_folder_refuses_episodes_from_other_weights_under_the_same_path(tmp_path, main, small):
    """A recipe rewrites checkpoints in place: resuming an evaluation must not mix two models."""
    from rsdlib.results import new_run

    main_dir = save(main, tmp_path / "main")
    config = from_checkpoint(main_dir, "rfsq_ar", tokenizer=FakeRFSQ()).config()
    run = new_run("libero_eval", config, run="r", root=tmp_path / "results")
    assert new_run("libero_eval", config, run="r", root=tmp_path / "results") == run  # the same: resumes
    save(small, tmp_path / "main")  # other weights, same folder
    retrained = from_checkpoint(main_dir, "rfsq_ar", tokenizer=FakeRFSQ()).config()
    assert retrained["checkpoint_weights"] != config["checkpoint_weights"]
    with pytest.raises(ValueError, match="different config"):
        new_run("libero_eval", retrained, run="r", root=tmp_path / "results")
