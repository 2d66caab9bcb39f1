"""Demonstration files (LIBERO's HDF5 layout), clear errors on bad files, and the chunk dataset."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from fake_demos import SUITE, write_task

from rsdlib.actions import read_hdf5_actions
from rsdlib.libero.dataset import DemoDataset, NormStats, index_episodes, load_demos, split_episodes
from rsdlib.libero.demos import (
    FIXTURES_ATTR,
    LOW_DIM_KEYS,
    DemoFileError,
    demo_frames,
    describe_demo_file,
    read_demo,
)
from rsdlib.tokenizers.normaliser import Normaliser


def test_layout_matches_libero_and_round_trips(tmp_path):
    path, demos = write_task(tmp_path, "task_a", [5, 7])
    with h5py.File(path) as f:
        group = f["data/demo_1"]
        assert {"actions", "states", "rewards", "dones", "robot_states", "obs"} <= set(group)
        assert set(LOW_DIM_KEYS) | {"agentview_rgb", "eye_in_hand_rgb"} == set(group["obs"])
        assert group["obs/agentview_rgb"].compression == "gzip"
        assert group.attrs["num_samples"] == 7
        assert f["data"].attrs["num_demos"] == 2 and f["data"].attrs["total"] == 12
    demo = read_demo(path, "demo_1")
    np.testing.assert_array_equal(demo["actions"], demos[1][0].actions)
    np.testing.assert_array_equal(demo["obs"]["agentview_rgb"], demos[1][1]["agentview_rgb"])
    assert demo["language"] == "do task_a"
    # The actions reader of rsdlib.actions reads the same files.
    assert [len(a) for a in read_hdf5_actions(path).values()] == [5, 7]
    info = describe_demo_file(path)
    assert info["num_demos"] == 2 and info["lengths"] == {"demo_0": 5, "demo_1": 7}


def test_official_opengl_images_come_out_upright(tmp_path):
    path, demos = write_task(tmp_path, "task_a", [4])
    with h5py.File(path, "r+") as f:  # make it look like an official LIBERO file
        del f["data"].attrs["image_convention"]
        f["data"].attrs["macros_image_convention"] = "opengl"
        f["data"].attrs["problem_info"] = json.dumps({"language_instruction": "official words"})
        del f["data"].attrs["language_instruction"]
    demo = read_demo(path, "demo_0")
    np.testing.assert_array_equal(demo["obs"]["agentview_rgb"], demos[0][1]["agentview_rgb"][:, ::-1, ::-1])
    assert demo["language"] == "official words"


def test_truncated_and_missing_files_name_the_file(tmp_path):
    path, _ = write_task(tmp_path, "task_a", [5, 7])
    data = path.read_bytes()
    bad = tmp_path / "truncated_demo.hdf5"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(DemoFileError, match="truncated_demo.hdf5"):
        describe_demo_file(bad)
    with pytest.raises(DemoFileError, match="does not exist"):
        read_demo(tmp_path / "nope.hdf5", "demo_0")
    incomplete = tmp_path / "incomplete_demo.hdf5"
    with h5py.File(incomplete, "w") as f:
        f.create_dataset("data/demo_0/actions", data=np.zeros((3, 7)))
    with pytest.raises(DemoFileError, match="incomplete_demo.hdf5.*lacks"):
        describe_demo_file(incomplete)


def test_norm_stats_describe_the_data_and_round_trip_through_json():
    rng = np.random.default_rng(0)
    actions = rng.normal(size=(1000, 7)) * [1, 2, 3, 0.1, 0.1, 0.1, 1]
    stats = NormStats.from_actions([actions[:500], actions[500:]])
    np.testing.assert_allclose(stats.q99, np.quantile(actions, 0.99, axis=0))
    assert (stats.num_episodes, stats.num_steps) == (2, 1000)
    assert NormStats.from_json(json.loads(json.dumps(stats.to_json()))).q99.tolist() == stats.q99.tolist()


def test_dataset_normalises_with_a_normaliser_fitted_on_training_episodes_only(tmp_path):
    write_task(tmp_path, "task_a", [20] * 10, seed=3)
    data = load_demos(SUITE, root=tmp_path, horizon=4, val_fraction=0.2, rng=np.random.default_rng(0))
    train_actions = np.concatenate([data.train.episode_actions(i) for i in range(len(data.train.refs))])
    assert data.normaliser == Normaliser().fit(train_actions)
    item = data.val[3]
    np.testing.assert_allclose(
        item["actions"], data.normaliser.normalise(item["actions_raw"].astype(np.float64)).numpy(), atol=1e-6
    )
    assert np.isin(item["actions"][:, 6], [-1, 1]).all()


def test_split_is_by_episode_stratified_and_reproducible(tmp_path):
    write_task(tmp_path, "task_a", [5] * 10, seed=1)
    write_task(tmp_path, "task_b", [6] * 10, seed=2)
    refs = index_episodes(sorted((tmp_path / SUITE).glob("*.hdf5")))
    train, val = split_episodes(refs, 0.2, np.random.default_rng(0))
    again = split_episodes(refs, 0.2, np.random.default_rng(0))
    assert (train, val) == again
    assert not {(r.path, r.demo) for r in train} & {(r.path, r.demo) for r in val}
    assert sorted(r.task_name for r in val) == ["task_a"] * 2 + ["task_b"] * 2


def test_dataset_items_are_chunks_with_their_observation(tmp_path):
    write_task(tmp_path, "task_a", [5, 3])
    data = load_demos(SUITE, root=tmp_path, horizon=4, val_fraction=0.0, rng=np.random.default_rng(0))
    assert (tmp_path / SUITE / "norm_stats.json").exists()
    ds = data.train
    assert len(ds) == 8 and len(data.val) == 0
    item = ds[6]  # episode 1, step 1 of 3
    assert (item["episode"], item["step"]) == (1, 1)
    raw = ds.episode_actions(1)
    np.testing.assert_allclose(item["actions_raw"], np.concatenate([raw[1:3], raw[2:3], raw[2:3]]), atol=1e-6)
    assert item["valid"].tolist() == [True, True, False, False]
    assert item["agentview_rgb"].shape == (8, 8, 3) and item["agentview_rgb"][0, 0, 0] == 255
    assert int(item["agentview_rgb"][4, 4, 0]) == 10  # demo_1's frames
    assert item["proprio"].shape == (8,)
    with pytest.raises(IndexError):
        ds[8]


def test_images_required_but_missing_is_an_error(tmp_path):
    write_task(tmp_path, "task_a", [5], images=False)
    with pytest.raises(DemoFileError, match="no camera images"):
        load_demos(SUITE, root=tmp_path, rng=np.random.default_rng(0))
    data = load_demos(SUITE, root=tmp_path, rng=np.random.default_rng(0), images=False, val_fraction=0)
    assert "agentview_rgb" not in data.train[0]


def test_no_demonstrations_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(DemoFileError, match="generate_demos.py"):
        load_demos(SUITE, root=tmp_path, rng=np.random.default_rng(0))


def test_dataset_works_in_a_torch_dataloader(tmp_path):
    torch = pytest.importorskip("torch")
    write_task(tmp_path, "task_a", [5, 3])
    data = load_demos(SUITE, root=tmp_path, horizon=2, val_fraction=0.0, rng=np.random.default_rng(0))
    batch = next(iter(torch.utils.data.DataLoader(data.train, batch_size=4, num_workers=0)))
    assert batch["actions"].shape == (4, 2, 7) and batch["agentview_rgb"].shape == (4, 8, 8, 3)
    assert isinstance(data.train, DemoDataset)


@pytest.mark.libero
@pytest.mark.slow
def test_generated_demo_replays_to_success(tmp_path):
    """One real demonstration: from a sampled start, written, rendered, and its executed actions
    replayed open loop succeed."""
    from rsdlib.libero.demos import DemoConfig, generate_task
    from rsdlib.libero.env import LiberoEnv, RenderOptions
    from rsdlib.libero.protocol import Protocol

    config = DemoConfig(episodes=1, protocol=Protocol(camera_resolution=32))
    stage1 = generate_task(SUITE, 0, config, root=tmp_path, images=False)
    assert stage1["kept"] == 1, stage1
    replayed = demo_frames(stage1["path"], "demo_0", [0, 5], config.protocol)  # no images yet: rendered
    report = generate_task(SUITE, 0, config, root=tmp_path)
    assert report["skipped"] == ["rollouts"]
    demo = read_demo(report["path"], "demo_0")
    assert demo["obs"]["agentview_rgb"].shape == (len(demo["actions"]), 32, 32, 3)
    assert demo["obs"]["agentview_rgb"].std() > 5  # a real picture, not a blank
    stored = demo_frames(report["path"], "demo_0", [0, 5])
    for key, frames in stored.items():
        assert frames.shape == (2, 32, 32, 3)
        same = np.abs(frames.astype(int) - replayed[key]).mean()
        flipped = np.abs(frames.astype(int) - replayed[key][:, ::-1, ::-1]).mean()
        assert same < 8 and same < flipped / 4, (same, flipped)  # the same views, same orientation
    again = generate_task(SUITE, 0, config, root=tmp_path)
    assert again["skipped"] == ["rollouts", "images"]
    # A file rendered before fixtures were placed as in episodes says so when loaded, and
    # re-rendering its images from the stored states fixes it.
    with h5py.File(report["path"], "a") as f:
        f["data"].attrs[FIXTURES_ATTR] = False
    with pytest.warns(UserWarning, match="--rerender-images"):
        index_episodes([report["path"]], need_images=True)
    fixed = generate_task(SUITE, 0, config, root=tmp_path, rerender_images=True)
    assert fixed["skipped"] == ["rollouts"]
    with h5py.File(fixed["path"], "r") as f:
        assert bool(f["data"].attrs[FIXTURES_ATTR])
    np.testing.assert_array_equal(
        read_demo(fixed["path"], "demo_0")["obs"]["agentview_rgb"], demo["obs"]["agentview_rgb"]
    )
    with pytest.raises(DemoFileError, match="from 1 init states, fewer than the 2.*holds camera images"):
        generate_task(SUITE, 0, DemoConfig(episodes=2, protocol=config.protocol), root=tmp_path)
    with h5py.File(report["path"], "r") as f:
        group = f["data/demo_0"]
        assert group.attrs["start"] == "sampled" and group.attrs["init_index"] == -1
        seed, executed = int(group.attrs["sample_seed"]), group["executed_actions"][()]
        objects = group["obs/object_states"][()]
    # DART: the env executed perturbed actions; the file keeps the expert's clean ones to learn from.
    assert np.abs(executed[:, :3] - demo["actions"][:, :3]).max() > 0.05
    np.testing.assert_array_equal(executed[:, 3:], demo["actions"][:, 3:])
    with LiberoEnv(SUITE, 0, render=RenderOptions(enabled=False)) as env:
        obs = env.reset_sampled(seed)
        np.testing.assert_allclose(env.sim_state(), demo["states"][0], atol=1e-8)
        np.testing.assert_allclose(obs["objects"], objects[0], atol=1e-6)
        done = False
        for action in executed:
            _, done, _ = env.step(action)
        assert done, "replaying the executed actions from the sampled start must reach the goal"


@pytest.mark.libero
@pytest.mark.slow
def test_asking_for_more_sampled_starts_extends_a_file_as_one_run_would_have_made_it(tmp_path):
    """1 start, then 2: the file keeps demo_0 and adds the start one run of 2 would have made."""
    from rsdlib.libero.demos import DemoConfig, generate_task
    from rsdlib.libero.protocol import Protocol

    protocol = Protocol(camera_resolution=32)
    generate_task(SUITE, 0, DemoConfig(episodes=1, protocol=protocol), root=tmp_path / "a", images=False)
    grown = generate_task(
        SUITE, 0, DemoConfig(episodes=2, protocol=protocol), root=tmp_path / "a", images=False
    )
    whole = generate_task(
        SUITE, 0, DemoConfig(episodes=2, protocol=protocol), root=tmp_path / "b", images=False
    )
    assert (grown["attempted"], grown["extended_from"], grown["kept"]) == (1, 1, whole["kept"])
    for name in ("demo_0", "demo_1"):
        mine, theirs = read_demo(grown["path"], name), read_demo(whole["path"], name)
        np.testing.assert_array_equal(mine["actions"], theirs["actions"])
        np.testing.assert_array_equal(mine["states"], theirs["states"])
    with h5py.File(grown["path"], "r") as f:
        assert int(f["data"].attrs["num_attempted"]) == 2
        assert [int(f[f"data/demo_{i}"].attrs["sample_index"]) for i in (0, 1)] == [0, 1]
        assert len(json.loads(f["data"].attrs["dart_std_kept"])) == 2
    with pytest.raises(DemoFileError, match="other settings \\(dart_std\\)"):
        generate_task(
            SUITE,
            0,
            DemoConfig(episodes=3, dart_std=0.05, protocol=protocol),
            root=tmp_path / "a",
            images=False,
        )


def test_a_data_curve_reads_the_first_demos_of_each_task(tmp_path):
    for t, task in enumerate(("pick_the_bowl", "place_the_cup")):
        write_task(tmp_path, task, [12, 15, 11, 14, 13], seed=t, images=False)
    data = load_demos(
        SUITE, root=tmp_path, rng=np.random.default_rng(0), val_fraction=0.34, max_per_task=3, images=False
    )
    refs = data.train.refs + data.val.refs
    assert sorted((Path(r.path).name, r.demo) for r in refs) == sorted(
        (f"{task}_demo.hdf5", f"demo_{i}") for task in ("pick_the_bowl", "place_the_cup") for i in range(3)
    )
    assert {Path(r.path).name for r in data.val.refs} == {
        "pick_the_bowl_demo.hdf5",
        "place_the_cup_demo.hdf5",
    }
    with pytest.raises(ValueError, match="max_per_task"):
        load_demos(SUITE, root=tmp_path, rng=np.random.default_rng(0), max_per_task=0)


class _KeepStill:
    """A policy that holds the arm still with the gripper open: every episode fails, and is kept."""

    def reset(self, context) -> None:
        pass

    def act(self, obs):
        chunk = np.zeros((8, 7))
        chunk[:, 6] = -1.0
        return chunk


@pytest.mark.libero
@pytest.mark.slow
def test_policy_rollouts_start_where_neither_the_demonstrations_nor_the_benchmark_do(tmp_path):
    from rsdlib.libero.policy_rollouts import POLICY_ROLLOUT_SEED, collect_policy_rollouts
    from rsdlib.seeding import placement_seed

    report = collect_policy_rollouts(
        SUITE, 0, _KeepStill(), episodes=2, root=tmp_path, description="keep still"
    )
    assert report["episodes"] + len(report["starts_refused"]) == 2 and report["successes"] == 0
    with h5py.File(report["path"], "r") as f:
        assert (
            f["data"].attrs["kind"] == "policy_rollouts"
            and "not demonstrations" in f["data"].attrs["actions_are"]
        )
        groups = [f["data"][name] for name in f["data"]]
        seeds = {int(g.attrs["sample_seed"]) for g in groups}
        assert all(
            g.attrs["start"] == "sampled" and len(g["actions"]) == 220 for g in groups
        )  # failed: ran to the limit
    demo_seeds = {placement_seed(0, SUITE, 0, i) for i in range(100)}  # the demonstrations' starts
    assert (
        seeds <= {placement_seed(POLICY_ROLLOUT_SEED, SUITE, 0, i) for i in range(2)}
        and not seeds & demo_seeds
    )
    data = load_demos(
        SUITE, root=tmp_path, rng=np.random.default_rng(0), val_fraction=0.5, images=False, objects=True
    )
    assert len(data.train.refs) + len(data.val.refs) == report["episodes"]
