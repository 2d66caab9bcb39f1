"""Packed chunks and the training recipe: prepare -> train every model -> cards -> load and act."""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_demos import SUITE, write_task
from safetensors.torch import load_file

from rsdlib.decoding import decode_rfsq_ar, make_rule, speculative_decode
from rsdlib.decoding.spec import PLAIN_METHODS, MethodSpec
from rsdlib.experiments.benchmark import ModelSet, latency_rows, quality_rows
from rsdlib.experiments.cards import write_cards
from rsdlib.experiments.comparison import chunk_stats, policy_from_spec
from rsdlib.experiments.distill import distill_head_drafter
from rsdlib.experiments.prepare import prepare, stale_reason
from rsdlib.experiments.train_models import MODELS, Schedule, Sizes, model_config, train_models
from rsdlib.experiments.validation import layer_accuracy
from rsdlib.libero.dataset import load_demos
from rsdlib.libero.policy import EpisodeContext
from rsdlib.policies import checkpoints
from rsdlib.policies.configuration import TrunkConfig
from rsdlib.policies.data import collate
from rsdlib.policies.heads import build_policy
from rsdlib.policies.packed import IGNORE, PackedChunks, PackedFileError, fast_targets
from rsdlib.tokenizers import RFSQTokenizer
from rsdlib.train import read_log

SIZE = 16
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
TINY_TRUNK = TrunkConfig(
    hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, image_size=SIZE, image_channels=(4, 8)
)
TINY_RFSQ = {
    "num_layers": 3,
    "num_latents": 2,
    "levels": [3, 3],
    "hidden": 16,
    "depth": 1,
    "steps": 20,
    "batch_size": 16,
}


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos")
    for t, task in enumerate(("pick_the_bowl", "place_the_cup")):
        write_task(root, task, [12, 15, 11, 14, 13], seed=t, size=SIZE)
    return root


@pytest.fixture(scope="module")
def prepared(demos, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    prepare(
        SUITE,
        out,
        demos_root=demos,
        val_fraction=0.2,
        stride=2,
        rfsq=TINY_RFSQ,
        fast={"vocab_size": 64},
        progress=False,
    )
    return out


def test_packed_chunks_equal_the_dataset_items(demos):
    from fake_rfsq import FakeRFSQ

    data = load_demos(SUITE, root=demos, rng=np.random.default_rng(0), val_fraction=0.2)
    tok = FakeRFSQ()
    packed = PackedChunks.from_dataset(data.train, stride=3, tokenizer=tok, progress=False)
    # stride 3 keeps steps 0, 3, 6, ... of every episode, in order
    want = [data.train.chunk(e, s, images=True) for e in range(len(data.train.refs))
            for s in range(0, len(data.train.episode_actions(e)), 3)]  # fmt: skip
    assert len(packed) == len(want)
    config = replace(TINY_TRUNK, instruction_vocab=("do", "pick_the_bowl", "place_the_cup"))
    policy = build_policy(model_config("rfsq_ar", {
        "actions": {"num_layers": tok.num_layers, "num_latents": tok.num_latents, "codebook_size": tok.codebook_size},
        "instructions": ["do pick_the_bowl", "do place_the_cup"], "image_size": SIZE,
    }, Sizes(main=config)))  # fmt: skip
    index = torch.tensor([0, 4, len(want) - 1])
    got = packed.batch(index, trunk_config=policy.config.trunk)
    ref = collate([want[i] for i in index.tolist()], policy=policy, tokenizer=tok)
    for key in ("actions", "actions_raw", "valid", "tokens"):
        assert torch.equal(got[key].to(ref[key].dtype), ref[key]), key
    for key in ("images", "instruction_ids", "instruction_mask", "proprio"):
        assert torch.equal(getattr(got["obs"], key), getattr(ref["obs"], key)), key


def test_packed_file_round_trips_exactly_and_as_jpeg(demos, tmp_path):
    data = load_demos(SUITE, root=demos, rng=np.random.default_rng(0), val_fraction=0.2)
    packed = PackedChunks.from_dataset(data.val, progress=False)
    exact = PackedChunks.load(packed.save(tmp_path / "exact.npz"))
    for name in ("images", "proprio", "actions", "actions_raw", "valid", "episode", "instruction"):
        assert torch.equal(getattr(exact, name), getattr(packed, name)), name
    assert exact.instructions == packed.instructions and exact.tokens is None
    lossy = PackedChunks.load(packed.save(tmp_path / "lossy.npz", jpeg_quality=90))
    assert lossy.images.shape == packed.images.shape
    assert (lossy.images.float() - packed.images.float()).abs().mean() < 3  # JPEG: close, not equal
    assert torch.equal(lossy.actions, packed.actions)


def test_a_truncated_packed_file_names_itself(demos, tmp_path):
    data = load_demos(SUITE, root=demos, rng=np.random.default_rng(0), val_fraction=0.2)
    file = PackedChunks.from_dataset(data.val, progress=False).save(tmp_path / "val.npz")
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    with pytest.raises(PackedFileError, match="val.npz"):
        PackedChunks.load(file)
    with pytest.raises(PackedFileError, match="does not exist"):
        PackedChunks.load(tmp_path / "missing.npz")


def test_fast_targets_end_with_the_end_token_and_pad_with_ignore():
    out = fast_targets([torch.tensor([3, 1]), torch.tensor([], dtype=torch.long)], end_token=9, length=4)
    assert out.tolist() == [[3, 1, 9, IGNORE], [9, IGNORE, IGNORE, IGNORE]]
    with pytest.raises(ValueError, match="exceeds"):
        fast_targets([torch.tensor([1, 2, 3, 4])], end_token=9, length=4)


def test_recipe_trains_every_model_and_each_loads_as_a_policy(prepared, tmp_path):
    info = json.loads((prepared / "prepared.json").read_text())
    assert info["splits"]["train"]["episodes"] == 8 and info["splits"]["val"]["episodes"] == 2
    sizes = Sizes(main=TINY_TRUNK, tiny=TINY_TRUNK, head_hidden=16, head_blocks=1)
    schedules = {m: Schedule(steps=3, batch_size=4, warmup_steps=1, eval_every=0) for m in MODELS}
    out = tmp_path / "models"
    seconds = train_models(prepared, out, schedules=schedules, sizes=sizes, device="cpu", progress=False)
    assert set(seconds) == set(MODELS)

    def tokenizer_dtypes(folder):
        return {v.dtype for v in load_file(str(folder / "tokenizer_rfsq" / "model.safetensors")).values()}

    # The shipped copy of the tokenizer is float16; the prepared one, which encoded the data, float32.
    assert tokenizer_dtypes(out) == {torch.float16} and tokenizer_dtypes(prepared) == {torch.float32}
    val_rows = [r for r in read_log(out / "rfsq_ar") if r["split"] == "val"]
    assert "action_mae" in val_rows[-1] and "acc_layer0" in val_rows[-1]  # decoded action error in the log
    cards = write_cards(out, prepared_dir=prepared)
    assert set(cards) == set(MODELS)
    for name in ("rfsq_ar", "rfsq_parallel", "tiny_policy", "head_drafter"):
        assert {f"acc_layer{i}" for i in range(3)} <= set(cards[name]["validation"])
    for name in ("rfsq_ar", "rfsq_parallel", "l1_regression", "tiny_policy"):
        assert np.isfinite(cards[name]["validation"]["action_mae"])
    assert "fast_malformed" in cards["fast_ar"]["validation"]
    assert "| rfsq_ar |" in (out / "README.md").read_text()
    # One model measured again (a head distilled alone): the others keep their cards as they are.
    kept = out / "l1_regression" / "card.json"
    kept.write_text(json.dumps(json.loads(kept.read_text()) | {"marker": 1}))
    (out / "head_drafter" / "card.json").unlink()
    again = write_cards(out, prepared_dir=prepared, only=["head_drafter"])
    assert again["l1_regression"]["marker"] == 1 and (out / "head_drafter" / "card.json").is_file()
    assert again["head_drafter"]["validation"] == cards["head_drafter"]["validation"]

    data = PackedChunks.load(prepared / "val.npz")
    obs = {
        "agentview_rgb": data.images[0, 0].permute(1, 2, 0).numpy(),
        "eye_in_hand_rgb": data.images[0, 1].permute(1, 2, 0).numpy(),
        "proprio": data.proprio[0].numpy(),
        "instruction": data.instructions[0],
    }
    for method in [*PLAIN_METHODS, "rsd_head:g2:exact", "rsd_tiny:g2:exact"]:
        policy = policy_from_spec(method, out)
        policy.reset(EpisodeContext(SUITE, 0, 0, 0, obs["instruction"], None))
        output = policy.act(obs)
        assert output.actions.shape[-1] == 7 and np.all(np.isfinite(output.actions)), method
        records = [{"diagnostics": [output.diagnostics, output.diagnostics]}]
        stats = chunk_stats(records)
        assert stats["chunks"] == 2 and stats["main_passes"] >= 1
        assert ("accepted_layers" in stats) == method.startswith("rsd")

    # the learned depth monitor reads the folder's depth head (trained on the main policy's frozen trunk)
    assert {"log_mae", "log_corr", "log_corr_within_layer"} <= set(cards["depth_head"]["validation"])
    targets = json.loads((out / "depth_head" / "training.json").read_text())["targets"]
    assert len(targets["remaining_mean"]) == 3 and targets["remaining_mean"][-1] == 0
    plain = policy_from_spec("rfsq_ar+learned:0.02", out).act(obs)
    speculative = policy_from_spec("rsd_head:g2:exact+learned:0.02", out).act(obs)
    assert 1 <= plain.diagnostics["depth"] <= 3
    assert speculative.diagnostics["depth"] == plain.diagnostics["depth"]
    np.testing.assert_array_equal(speculative.actions, plain.actions)  # exact RSD stops where plain does

    lossy = policy_from_spec("rsd_head:g3:match_rate:0.5", out)
    assert (lossy.spec.gamma, lossy.spec.rule, lossy.spec.rule_params) == (3, "match_rate", {"tau": 0.5})
    assert lossy.name == "rsd_head:g3:match_rate:0.5"
    for bad in (
        "rsd_head:exact",
        "fast_ar:g2:exact",
        "rsd_head:g2:match_rate",
        "rfsq_ar@hot",
        "rsd_huge:g2:exact",
    ):
        with pytest.raises(ValueError):
            policy_from_spec(bad, out)
    sampled = policy_from_spec("rsd_head:g2:speculative@0.7", out)
    assert (sampled.spec.rule, sampled.spec.temperature) == ("speculative", 0.7)
    assert policy_from_spec("rfsq_parallel@1", out).spec.temperature == 1.0

    # Distillation moves the head towards the main policy's greedy tokens, and keeps the record
    # of how it was first trained.
    report = distill_head_drafter(out, prepared, out=tmp_path / "distilled", steps=40, batch_size=8, lr=3e-3,
                                  progress=False)  # fmt: skip
    assert report["val_after"]["loss"] < report["val_before"]["loss"]
    saved = json.loads((tmp_path / "distilled" / "config.json").read_text())
    assert saved["config"]["metadata"]["distilled"]["steps"] == 40 and saved["metadata"]["step"] == 3
    assert checkpoints.read_storage_dtype(tmp_path / "distilled") == torch.float16  # ships like every model
    # ... and a head extended to read the main trunk's block states learns from them, loads, and
    # drafts in an exact decode that stays greedy.
    report = distill_head_drafter(out, prepared, out=tmp_path / "eagle", steps=40, batch_size=8, lr=3e-3,
                                  reads_blocks=True, progress=False)  # fmt: skip
    assert report["reads_blocks"] and report["val_after"]["loss"] < report["val_before"]["loss"]
    assert "match_layer1" in report["val_after"] and "acc_layer0" not in report["val_after"]
    eagle = checkpoints.load(tmp_path / "eagle")
    assert eagle.config.reads_blocks
    main = checkpoints.load(out / "rfsq_ar")
    obs = main.prepare(data.batch(torch.arange(len(data)), trunk_config=main.config.trunk)["obs"])
    rsd = speculative_decode(main, eagle, obs, rule=make_rule("exact"), gamma=2)
    assert torch.equal(rsd.tokens, decode_rfsq_ar(main, obs).tokens)
    # ... and one moved onto the main policy's embedding and output layer keeps what it learnt
    # elsewhere, learns on, stores neither, and drafts for that main policy only.
    report = distill_head_drafter(out, prepared, out=tmp_path / "shared", steps=40, batch_size=8, lr=3e-3,
                                  shares_main_io=True, progress=False)  # fmt: skip
    assert report["shares_main_io"] and report["val_after"]["loss"] < report["val_before"]["loss"]
    stored = load_file(tmp_path / "shared" / checkpoints.WEIGHTS)
    assert not any(k.startswith(("token_embed", "out_")) for k in stored)
    shared = checkpoints.load_drafter(tmp_path / "shared", main=main)
    rsd = speculative_decode(main, shared, obs, rule=make_rule("exact"), gamma=2)
    assert torch.equal(rsd.tokens, decode_rfsq_ar(main, obs).tokens)

    # The benchmark over every method: exact RSD is lossless with either drafter and any gamma.
    models = ModelSet(out)
    described = models.describe()  # what Table 1's caption names
    assert described["dtype"] == "float32"
    assert described["parameters"]["rfsq_ar"] == sum(p.numel() for p in models.main.parameters()) > 0
    assert set(described["parameters"]) == {*models.heads, "head_drafter", "tiny_policy"}
    settings = [
        MethodSpec.parse(s) for s in ("rsd_head:g2:exact", "rsd_tiny:g3:exact", "rsd_head:g1:match_rate:0.5")
    ]
    batch = data.batch(torch.arange(len(data)), trunk_config=models.trunk)
    quality = {r["method"]: r for r in quality_rows(models, batch, settings)}
    assert set(quality) == {
        "rfsq_ar",
        "rfsq_parallel",
        "l1_regression",
        "fast_ar",
        *(str(s) for s in settings),
    }
    for s in settings[:2]:
        assert quality[str(s)]["same_tokens_as_plain"] and quality[str(s)]["mae_vs_plain"] == 0.0
    assert (
        quality["rfsq_ar"]["main_passes_per_chunk"] == 2  # L - 1: layer 0 comes with the prefix pass
        and quality["rfsq_parallel"]["main_passes_per_chunk"] == 1
    )
    singles = [data.batch(torch.tensor([i]), trunk_config=models.trunk)["obs"] for i in range(2)]
    fixed = ["rfsq_ar", "rsd_head:g2:exact"]  # also timed on the fixed-shape engine, side by side
    latency = {r["method"]: r for r in latency_rows(models, singles, settings, warmup=1, fixed=fixed)}
    assert latency["rfsq_ar"]["speedup_vs_plain"] == 1.0
    assert {"rfsq_ar [fixed]", "rsd_head:g2:exact [fixed]"} <= set(latency)
    assert {"prefix", "verify"} <= set(latency["rsd_head:g2:exact [fixed]"]["step_ms"])
    assert all(r["latency_median_ms"] > 0 and r["ratio_to_floor"] > 0 for r in latency.values())
    # where the time goes: plain decoding has no draft or verify step, RSD has both
    assert {"prefix", "plain"} <= set(latency["rfsq_ar"]["step_ms"]) and "verify" not in latency["rfsq_ar"][
        "step_ms"
    ]
    rsd_steps = latency[str(settings[0])]["step_ms"]
    assert {"prefix", "draft", "verify"} <= set(rsd_steps) and all(v > 0 for v in rsd_steps.values())


def test_training_resumes_where_it_stopped(prepared, tmp_path):
    sizes = Sizes(main=TINY_TRUNK)
    out = tmp_path / "models"
    short = {"l1_regression": Schedule(steps=2, batch_size=4, warmup_steps=1, eval_every=0)}
    train_models(
        prepared, out, models=["l1_regression"], schedules=short, sizes=sizes, device="cpu", progress=False
    )
    longer = {"l1_regression": Schedule(steps=4, batch_size=4, warmup_steps=1, eval_every=0)}
    with pytest.raises(Exception, match="different model"):
        # a different schedule is a different run: the TrainConfig in the checkpoint differs
        train_models(
            prepared,
            out,
            models=["l1_regression"],
            schedules=longer,
            sizes=Sizes(),
            device="cpu",
            progress=False,
        )
    train_models(
        prepared, out, models=["l1_regression"], schedules=short, sizes=sizes, device="cpu", progress=False
    )
    rows = [json.loads(line) for line in (out / "l1_regression" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2]  # nothing repeated or lost


def test_a_time_budget_becomes_a_recorded_step_count_that_resume_keeps(prepared, tmp_path):
    sizes = Sizes(main=TINY_TRUNK)
    out = tmp_path / "models"
    budget = {"rfsq_parallel": Schedule(batch_size=4, warmup_steps=1, eval_every=0, minutes=0.02)}
    train_models(
        prepared, out, models=["rfsq_parallel"], schedules=budget, sizes=sizes, device="cpu", progress=False
    )
    record = json.loads((out / "rfsq_parallel" / "training.json").read_text())["schedule"]
    assert record["steps"] >= 1 and record["timed_step_s"] > 0 and record["minutes"] is None
    # a second call resumes the same run (same step count), it does not time again
    train_models(
        prepared, out, models=["rfsq_parallel"], schedules=budget, sizes=sizes, device="cpu", progress=False
    )
    again = json.loads((out / "rfsq_parallel" / "training.json").read_text())["schedule"]
    assert again == record


def test_the_main_policy_as_its_own_drafter_agrees_on_every_layer(prepared):
    sizes = Sizes(main=TINY_TRUNK)
    info = json.loads((prepared / "prepared.json").read_text())
    torch.manual_seed(0)
    main = build_policy(model_config("rfsq_ar", info, sizes)).eval()
    val = PackedChunks.load(prepared / "val.npz")
    acc = layer_accuracy({"rfsq_ar": main, "tiny_policy": main}, val, batch_size=5)
    assert acc["tiny_policy (agrees with main)"] == [1.0] * 3
    assert acc["rfsq_ar (teacher-forced)"] == acc["tiny_policy (teacher-forced)"]


def test_the_lowdim_recipe_trains_on_object_poses_and_says_where_its_demonstrations_started(tmp_path, capsys):
    """prepare(modality="lowdim") packs object rows and no images; every model trains on them;
    the cards name the training data; RSD with exact acceptance reproduces plain decoding."""
    from rsdlib.experiments.cards import training_data_label
    from rsdlib.experiments.train_models import LOWDIM_SIZES

    for t, task in enumerate(("pick_the_bowl", "place_the_cup")):
        write_task(tmp_path / "demos", task, [12, 15, 11, 14, 13], seed=t, images=False, objects=True)
    prepared = prepare(
        SUITE, tmp_path / "prepared", demos_root=tmp_path / "demos", val_fraction=0.2, modality="lowdim",
        rfsq=TINY_RFSQ, progress=False,
    )  # fmt: skip
    info = json.loads((prepared / "prepared.json").read_text())
    assert (info["modality"], info["starts"], info["max_objects"]) == ("lowdim", "sampled", 3)
    assert info["object_kinds"] == ["akita_black_bowl", "plate"] and info["image_size"] is None
    assert info["proprio_orientation"] == "rot6d" and len(info["observation_stats"]["proprio_mean"]) == 11
    # The recipe reuses a prepared folder only while it is what prepare would make now.
    assert stale_reason(prepared, SUITE, tmp_path / "demos", None, [3, 3]) is None
    assert "demos per task" in stale_reason(prepared, SUITE, tmp_path / "demos", 3, [3, 3])
    assert "levels [3, 3]" in stale_reason(prepared, SUITE, tmp_path / "demos", None)  # the default: 2x10
    assert PackedChunks.load(prepared / "train.npz").images is None
    sizes = replace(LOWDIM_SIZES, main=TINY_TRUNK, tiny=TINY_TRUNK, head_hidden=16, head_blocks=1)
    schedules = {m: Schedule(steps=3, batch_size=4, warmup_steps=1, eval_every=0) for m in MODELS}
    train_models(
        prepared, tmp_path / "models", schedules=schedules, sizes=sizes, device="cpu", progress=False
    )
    # closed-loop states (policy rollouts in the demonstration layout) join the distillation
    for t, task in enumerate(("pick_the_bowl", "place_the_cup")):
        write_task(tmp_path / "rollouts", task, [9, 10, 11, 12, 13], seed=20 + t, images=False, objects=True)
    report = distill_head_drafter(tmp_path / "models", prepared, out=tmp_path / "distilled", steps=2,
                                  closed_loop=tmp_path / "rollouts", progress=False)  # fmt: skip
    assert report["closed_loop_train_chunks"] > 0 and report["closed_loop_val_chunks"] > 0
    assert report["train_chunks"] == len(PackedChunks.load(prepared / "train.npz"))
    assert set(report["val_closed_loop_after"]) == set(report["val_after"])
    spec = importlib.util.spec_from_file_location("compare_heads", SCRIPTS / "compare_heads.py")
    compare_heads = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare_heads)
    compare_heads.main(["--models", str(tmp_path / "models"), "--prepared", str(prepared), "--heads",
                        str(tmp_path / "models" / "head_drafter"), str(tmp_path / "distilled"),
                        "--closed-loop", str(tmp_path / "rollouts"), "--gammas", "1", "2"])  # fmt: skip
    table = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| ") and "chunks |" not in line
    ]
    assert len(table) == 4 and sum("closed loop" in line for line in table) == 2  # 2 heads x 2 sets
    cards = write_cards(tmp_path / "models", prepared_dir=prepared)
    assert cards["rfsq_ar"]["data"]["training_data"] == training_data_label(info)
    assert "held out from evaluation" in (tmp_path / "models" / "README.md").read_text()
    data = PackedChunks.load(prepared / "val.npz")
    n = int((data.object_kind[0] > 0).sum())
    obs = {
        "objects": data.objects[0, :n].numpy(),
        "object_kinds": tuple(data.kinds[k - 1] for k in data.object_kind[0, :n].tolist()),
        "proprio": data.proprio[0].numpy(),
        "instruction": data.instructions[0],
    }
    actions = {}
    for method in ("rfsq_ar", "rsd_head:g2:exact", "fast_ar", "l1_regression"):
        policy = policy_from_spec(method, tmp_path / "models")
        assert policy.requirements() == {}  # no cameras: episodes run without rendering
        policy.reset(EpisodeContext(SUITE, 0, 0, 0, obs["instruction"], None))
        actions[method] = policy.act(obs).actions
        assert np.all(np.isfinite(actions[method])), method
    np.testing.assert_array_equal(actions["rsd_head:g2:exact"], actions["rfsq_ar"])
    assert policy_from_spec("rfsq_ar", tmp_path / "models").model.config.trunk.proprio_orientation == "rot6d"
    # A lowdim folder as the recipe now makes it, without the tiny policy: the head serves, the
    # tiny drafter is refused by name wherever a spec asks for it.
    shutil.rmtree(tmp_path / "models" / "tiny_policy")
    models = ModelSet(tmp_path / "models")
    assert set(models.drafters) == {"head"} and "tiny_policy" not in models.describe()["parameters"]
    assert models.decoder("rsd_head:g2:exact") is not None
    for refuse in (
        lambda: models.decoder("rsd_tiny:g2:exact"),
        lambda: policy_from_spec("rsd_tiny:g2:exact", tmp_path / "models"),
    ):
        with pytest.raises(ValueError, match=r"holds the drafters \['head'\], not 'tiny'"):
            refuse()
    write_task(tmp_path / "demos", "open_the_drawer", [12, 13], seed=9, images=False, objects=True)
    assert "changed" in stale_reason(prepared, SUITE, tmp_path / "demos", None, [3, 3])


def test_training_data_labels_old_folders_as_trained_on_the_evaluation_init_states():
    from rsdlib.experiments.cards import training_data_label

    assert training_data_label({}) == "rgb, trained on the evaluation init states"
    assert training_data_label({"modality": "lowdim", "starts": "sampled"}).endswith(
        "(held out from evaluation)"
    )


def test_a_levels_per_layer_sweep_setting_trains_measures_and_resumes(prepared, tmp_path, monkeypatch):
    from rsdlib.experiments import layer_levels

    budget = layer_levels.SweepBudget(tokenizer_steps=20, main_steps=4, head_steps=2, distill_steps=2,
                                      eval_chunks=8, gammas=(1, 2), batch_size=4, train_batch_size=4)  # fmt: skip
    sizes = Sizes(main=TINY_TRUNK, head_hidden=16, head_blocks=1)
    levels = layer_levels.parse_levels("2x2/3x2/3x2")
    assert levels == [[2, 2], [3, 3], [3, 3]] and layer_levels.parse_levels("2x10") == [2] * 10
    row = layer_levels.run_setting("coarse", levels, prepared, tmp_path, budget, sizes=sizes, progress=False)
    assert row["codes"] == [4, 9, 9] and len(row["mse"]) == 3 and row["plain_main_passes"] == 2
    for key in ("g1", "g2"):  # exact RSD after the prefix: at least one pass, at most plain decoding's
        assert 1 <= row["rsd"][key]["main_passes"] <= 2
    # the retokenized folder: the same chunks, tokens of the new tokenizer, its layer sizes recorded
    data = tmp_path / "coarse" / "prepared"
    info = json.loads((data / "prepared.json").read_text())
    assert info["actions"]["layer_codebook_sizes"] == [4, 9, 9]
    new, old = PackedChunks.load(data / "train.npz"), PackedChunks.load(prepared / "train.npz")
    assert torch.equal(new.actions_raw, old.actions_raw)
    tokenizer = RFSQTokenizer.load(data / "tokenizer_rfsq")
    assert torch.equal(new.tokens, tokenizer.encode(new.actions_raw).transpose(1, 2))
    # resumed: nothing is trained or measured again
    monkeypatch.setattr(layer_levels, "train_models", lambda *a, **k: pytest.fail("trained again"))
    assert layer_levels.run_setting("coarse", levels, prepared, tmp_path, budget, sizes=sizes) == row
    with pytest.raises(ValueError, match="write 2x10"):
        layer_levels.parse_levels("2y3")
    fig = layer_levels.plot_layer_levels([row, {**row, "name": "other"}], gamma=2)
    mse_ax, agree_ax, known_ax, passes_ax = fig.axes
    assert len(mse_ax.get_lines()) >= 2 and len(passes_ax.patches) == 2


@pytest.mark.libero
def test_a_task_the_expert_cannot_demonstrate_still_brings_its_object_kinds(tmp_path):
    """libero_10 task 9 has no demonstrations; its scene's kinds go into the vocabulary so that
    the policy fails its episodes instead of refusing their objects with an error."""
    from rsdlib.experiments.prepare import scenes_without_demos
    from rsdlib.libero.demos import demo_path
    from rsdlib.libero.tasks import list_tasks

    files = [demo_path("libero_10", task.name, tmp_path) for task in list_tasks("libero_10")[:9]]
    scenes = scenes_without_demos("libero_10", files)
    assert list(scenes) == [9] and "microwave" in scenes[9], scenes
    made_up = [tmp_path / "libero_10" / "made_up_task_demo.hdf5"]
    assert scenes_without_demos("libero_10", made_up) == {}  # not the suite's own files: nothing to add
