"""The evaluation harness: records, resume after a kill, errors, executors, summaries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mocks.fake_libero import CRASH_INIT, CRASH_TASK, PushPolicy, evaluation_script, make_fake_env

from rsdlib.libero.evaluate import (
    EPISODES_FILE,
    EnvCache,
    EpisodeSpec,
    EvalOptions,
    WorkerPool,
    episode_seed,
    episode_specs,
    evaluate,
    format_table,
    group_size,
    read_episodes,
    task_groups,
)
from rsdlib.libero.policy import PolicyOutput, as_output
from rsdlib.metrics import success_summary, wilson_interval

SUITE = "libero_spatial"
TESTS_DIR = Path(__file__).resolve().parent.parent


def run(tmp_path, executor="serial", workers=1, tasks=(0, 1), episodes=6, **kw):
    return evaluate(
        PushPolicy(),
        [SUITE],
        list(tasks),
        episodes,
        run_dir=tmp_path / "run",
        executor=executor,
        workers=workers,
        env_factory=make_fake_env,
        progress=False,
        **kw,
    )


def comparable(records):
    """Records keyed by episode, without what legitimately differs between executors."""
    volatile = ("wall_time_s", "worker", "error")
    return {k: {f: v for f, v in r.items() if f not in volatile} for k, r in keyed(records).items()}


def keyed(records):
    return {(r["suite"], r["task_id"], r["init_index"]): r for r in records}


def test_wilson_interval_known_values_and_edges():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0 and 0 < wilson_interval(0, 20)[1] < 0.2
    assert wilson_interval(20, 20)[1] == 1.0 and 0.8 < wilson_interval(20, 20)[0] < 1
    for n in range(1, 60):  # the interval always holds the observed rate, rounding included
        for k in range(n + 1):
            low, high = wilson_interval(k, n)
            assert low <= k / n <= high
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    assert success_summary(0, 0)["rate"] is None


def test_episode_seeds_are_distinct_and_stable():
    specs = episode_specs([SUITE], [0, 1], 5, seed=3)
    assert len({s.seed for s in specs}) == len(specs)
    assert specs[7].seed == episode_seed(3, SUITE, 1, 2)
    assert episode_seed(4, SUITE, 1, 2) != episode_seed(3, SUITE, 1, 2)


def test_records_follow_the_protocol_and_errors_are_recorded(tmp_path):
    result = run(tmp_path)
    records = keyed(result.records)
    assert len(records) == 12
    # Init states 0 and 1 cannot reach the goal in max_steps; 2.. can; the crash is a failure.
    for (_, task, init), r in records.items():
        crashed = task == CRASH_TASK and init == CRASH_INIT
        assert r["success"] == (init >= 2 and not crashed)
        assert (r["error"] is not None) == crashed
        assert r["steps"] <= 8
    assert "simulated physics blow-up" in records[(SUITE, CRASH_TASK, CRASH_INIT)]["error"]
    # Chunks of 4 run open loop: a success from init 2 takes 8 steps in 2 chunks.
    r = records[(SUITE, 0, 2)]
    assert (r["steps"], r["chunks"]) == (8, 2)
    assert [d["call"] for d in r["diagnostics"]] == [1, 2]
    # The summary agrees with the records, and is on disk.
    task0 = next(t for t in result.summary["tasks"] if t["task_id"] == 0)
    assert (task0["successes"], task0["n"]) == (4, 6)
    assert task0["ci_low"] < 4 / 6 < task0["ci_high"]
    assert result.summary["errors"] == 1
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["overall"]["successes"] == 7
    assert "fake_task_0" in format_table(result.summary)


def test_open_loop_steps_limit_the_executed_chunk(tmp_path):
    from rsdlib.libero.protocol import Protocol

    result = run(
        tmp_path, tasks=(0,), episodes=[2], options=EvalOptions(protocol=Protocol(open_loop_steps=1))
    )
    assert result.records[0]["chunks"] == result.records[0]["steps"] == 8


def test_rerun_skips_finished_episodes_and_extends(tmp_path):
    run(tmp_path, tasks=(0,), episodes=3)
    lines_before = (tmp_path / "run" / EPISODES_FILE).read_text().splitlines()
    result = run(tmp_path, tasks=(0,), episodes=5)
    lines_after = (tmp_path / "run" / EPISODES_FILE).read_text().splitlines()
    assert lines_after[:3] == lines_before  # old lines untouched
    assert len(lines_after) == 5 and len(result.records) == 5


def test_repeats_run_each_init_state_again_with_its_own_seed_and_resume(tmp_path):
    specs = episode_specs([SUITE], [0], [2, 3], seed=5, repeats=3)
    assert [(s.init_index, s.repeat) for s in specs] == [(i, r) for i in (2, 3) for r in range(3)]
    assert len({s.seed for s in specs}) == 6
    assert specs[0].seed == episode_seed(5, SUITE, 0, 2)  # repeat 0 keeps the seed runs always had
    with pytest.raises(ValueError, match="repeats"):
        episode_specs([SUITE], [0], 2, repeats=0)

    run(tmp_path, tasks=(0,), episodes=[2, 3], repeats=2)
    lines_before = (tmp_path / "run" / EPISODES_FILE).read_text().splitlines()
    result = run(tmp_path, tasks=(0,), episodes=[2, 3], repeats=3)
    lines_after = (tmp_path / "run" / EPISODES_FILE).read_text().splitlines()
    assert lines_after[:4] == lines_before and len(lines_after) == 6  # only the third repeats ran
    assert sorted((r["init_index"], r.get("repeat", 0)) for r in result.records) == [
        (i, k) for i in (2, 3) for k in range(3)
    ]


def test_pool_workers_share_the_cores_between_their_torch_threads(tmp_path):
    from mocks.fake_libero import TorchThreadsPolicy

    result = evaluate(TorchThreadsPolicy(), [SUITE], [0], 2, run_dir=tmp_path / "run", executor="pool", workers=2,
                      env_factory=make_fake_env, progress=False)  # fmt: skip
    threads = {d["torch_threads"] for r in result.records for d in r["diagnostics"]}
    assert threads == {max(1, (os.cpu_count() or 1) // 2)}


def test_pool_workers_take_the_threads_asked_for(tmp_path):
    from mocks.fake_libero import TorchThreadsPolicy

    result = evaluate(TorchThreadsPolicy(), [SUITE], [0], 2, run_dir=tmp_path / "run", executor="pool", workers=1,
                      threads=3, env_factory=make_fake_env, progress=False)  # fmt: skip
    assert {d["torch_threads"] for r in result.records for d in r["diagnostics"]} == {3}


def test_truncated_last_line_is_dropped_and_rerun(tmp_path):
    run(tmp_path, tasks=(0,), episodes=3)
    path = tmp_path / "run" / EPISODES_FILE
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:25])  # a write cut off mid-line
    assert len(read_episodes(tmp_path / "run")) == 2
    result = run(tmp_path, tasks=(0,), episodes=3)
    assert sorted(keyed(result.records)) == [(SUITE, 0, i) for i in range(3)]
    assert len(path.read_text().splitlines()) == 3


def test_malformed_middle_line_raises_naming_the_file(tmp_path):
    run(tmp_path, tasks=(0,), episodes=3)
    path = tmp_path / "run" / EPISODES_FILE
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", lines[2]]) + "\n")
    with pytest.raises(ValueError, match="episodes.jsonl line 2"):
        read_episodes(tmp_path / "run")


def test_resume_after_kill_loses_and_repeats_nothing(tmp_path):
    run_dir = tmp_path / "run"
    script = evaluation_script(run_dir, suite=SUITE, executor="serial", delay_s=0.05)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    path = run_dir / EPISODES_FILE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= 4:
            break
        if proc.poll() is not None:
            pytest.fail("the evaluation finished before it could be killed; make the episodes slower")
        time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail("the evaluation wrote no episodes within 120 s")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_episodes(run_dir)
    assert 4 <= len(before) < 30, "the run must be killed midway"
    result = evaluate(
        PushPolicy(),
        [SUITE],
        [0, 1, 2],
        10,
        run_dir=run_dir,
        executor="serial",
        env_factory=make_fake_env,
        progress=False,
    )
    after = read_episodes(run_dir)
    keys = [(r["suite"], r["task_id"], r["init_index"]) for r in after]
    assert len(keys) == len(set(keys)) == 30  # nothing repeated, nothing lost
    assert after[: len(before)] == before  # finished episodes were kept as they were
    assert len(result.records) == 30


def test_pool_equals_serial(tmp_path):
    serial = run(tmp_path / "a", executor="serial")
    pool = run(tmp_path / "b", executor="pool", workers=2)
    assert comparable(serial.records) == comparable(pool.records)


def test_a_shared_pool_runs_each_policy_and_keeps_its_envs_from_one_evaluation_to_the_next(tmp_path):
    from mocks.fake_libero import EnvProbePolicy

    def outcome(result):  # what the policy did, not where
        return {k: (r["success"], r["steps"], [d["position"] for d in r["diagnostics"]]) for k, r in keyed(result.records).items()}  # fmt: skip

    def evaluations(prefix, **kw):
        return [
            evaluate(
                policy,
                [SUITE],
                [0, 2, 3],
                4,
                run_dir=tmp_path / f"{prefix}{i}",
                env_factory=make_fake_env,
                progress=False,
                **kw,
            )  # fmt: skip
            for i, policy in enumerate((EnvProbePolicy(push=1.0), EnvProbePolicy(push=0.5)))
        ]

    alone = evaluations("serial", executor="serial")
    assert outcome(alone[0]) != outcome(alone[1])  # a pool that ran the first policy twice would show
    with WorkerPool(1, threads=1) as pool:
        shared = evaluations("shared", pool=pool)
    assert [outcome(r) for r in shared] == [outcome(r) for r in alone]
    builds = {tuple(d["env_build"]) for result in shared for r in result.records for d in r["diagnostics"]}
    assert len(builds) == 3  # one env per task, built in the first evaluation, kept for the second
    with pytest.raises(ValueError, match="runs the pool executor"), WorkerPool(1) as pool:
        evaluations("ray", pool=pool, executor="ray")


def test_task_groups_keep_a_tasks_episodes_together_in_groups_of_at_most_size():
    specs = episode_specs(["libero_spatial", "libero_object"], [0, 1], 3)
    groups = task_groups(specs, 2)
    assert [len(g) for g in groups] == [2, 1] * 4
    assert [s for g in groups for s in g] == specs
    assert all(len({(s.suite, s.task_id) for s in g}) == 1 for g in groups)
    assert task_groups([EpisodeSpec(SUITE, 0, i, i) for i in range(3)], 10) == [
        [EpisodeSpec(SUITE, 0, i, i) for i in range(3)]
    ]


def test_group_size_gives_each_worker_several_groups_within_one_to_ten_episodes():
    # 50 episodes on 2 workers: groups of 3, so an evaluation's last group (the tail the other
    # worker idles through) is short; a big run keeps groups of 10, a tiny one groups of 1
    assert group_size(50, 2) == 3
    assert group_size(500, 2) == 10
    assert group_size(5, 2) == 1
    for episodes in (1, 7, 50, 350, 5000):
        for workers in (1, 2, 8):
            size = group_size(episodes, workers)
            assert 1 <= size <= 10
            if size < 10:  # capped or not, every worker gets about eight groups
                assert episodes // size >= min(episodes, 8 * workers)


def test_the_env_cache_closes_the_least_recently_used_env_to_make_room():
    cache, options = EnvCache(2), EvalOptions()
    a = cache.get(SUITE, 0, options, make_fake_env)
    b = cache.get(SUITE, 1, options, make_fake_env)
    assert cache.get(SUITE, 0, options, make_fake_env) is a  # kept, and now the most recent
    c = cache.get(SUITE, 2, options, make_fake_env)
    assert b.closed and not a.closed and not c.closed and cache.built == 3
    assert cache.get(SUITE, 2, EvalOptions(render=True), make_fake_env) is not c  # rendering is another env
    cache.close()
    assert c.closed
    with pytest.raises(ValueError, match="at least one env"):
        EnvCache(0)


def test_ray_equals_pool(tmp_path):
    ray = pytest.importorskip("ray")
    pool = run(tmp_path / "pool", executor="pool", workers=2, tasks=(0, 1, 2), episodes=4)
    try:
        on_ray = run(tmp_path / "ray", executor="ray", workers=2, tasks=(0, 1, 2), episodes=4)
    finally:
        ray.shutdown()
    assert comparable(pool.records) == comparable(on_ray.records)
    assert len({r["worker"] for r in on_ray.records}) == 2  # both actors ran episodes
    assert pool.summary == on_ray.summary


def test_as_output_validates_shapes():
    assert as_output(np.zeros(7)).actions.shape == (1, 7)
    assert as_output(PolicyOutput(np.zeros((3, 7)), {"a": 1})).diagnostics == {"a": 1}
    with pytest.raises(ValueError, match="shape"):
        as_output(np.zeros(6))
    with pytest.raises(ValueError, match="non-finite"):
        as_output(np.full(7, np.nan))


def test_bad_arguments_fail_loudly(tmp_path):
    with pytest.raises(ValueError, match="executor"):
        run(tmp_path, executor="threads")
    with pytest.raises(ValueError, match="video"):
        EvalOptions(video="some")


@pytest.mark.parametrize("render", [True, False], ids=["rendered", "replayed-from-states"])
def test_videos_of_failures_only(tmp_path, render):
    import imageio.v2 as imageio

    options = EvalOptions(render=render, video="failures", video_wrist=True)
    result = run(tmp_path, tasks=(0,), episodes=[1, 2], options=options)
    by_init = {r["init_index"]: r for r in result.records}
    assert by_init[2]["success"] and by_init[2]["video"] is None
    assert not by_init[1]["success"] and by_init[1]["video"].endswith("init01_failure.mp4")
    frames = imageio.mimread(by_init[1]["video"])
    assert len(frames) == by_init[1]["steps"] + 1  # the first observation and one per step
    assert frames[0].shape == (16, 32, 3)  # agentview and wrist side by side
    # the fake picture's brightness follows the step count: frames are in order, whichever way made
    brightness = [int(f[:, :16].mean()) for f in frames]
    assert brightness == sorted(brightness) and brightness[-1] > brightness[0]


def test_threshold_sweeps_put_exact_at_the_strict_end_and_draw_per_rule(tmp_path):
    from rsdlib.experiments.comparison import chunk_stats
    from rsdlib.libero.figures import plot_threshold_sweep, threshold_sweeps

    def chunk(judged):
        return {"latency_ms": {"total": 10.0}, "main_passes": 2, "accepted_layers": sum(a for _, a in judged),
                "judged": judged, "layer_kinds": ["plain"] * 4}  # fmt: skip

    # acceptance per layer is pooled over every chunk of every episode; an unjudged layer is None
    stats = chunk_stats(
        [
            {"diagnostics": [chunk([[0, True], [1, False]])]},
            {"diagnostics": [chunk([[0, True], [1, True], [2, False]])]},
        ]
    )
    assert stats["acceptance_per_layer"] == [1.0, 0.5, 0.0, None]

    row = {"rate": 0.5, "ci_low": 0.2, "ci_high": 0.8, "n": 10, "latency_median_ms": 20.0, **stats}
    rows = [{**row, "method": m} for m in ("rfsq_ar", "rsd_head:g3:exact", "rsd_head:g3:match_rate:0.5",
                                           "rsd_head:g3:match_rate:0.75", "rsd_head:g2:exact", "rsd_head:g3:action_tolerance:0.2")]  # fmt: skip
    sweeps = threshold_sweeps(rows)
    assert list(sweeps) == ["rsd_head:g3:match_rate", "rsd_head:g3:action_tolerance"]
    assert [t for t, _ in sweeps["rsd_head:g3:match_rate"]] == [0.5, 0.75, 1.0]
    assert sweeps["rsd_head:g3:match_rate"][-1][1]["method"] == "rsd_head:g3:exact"
    assert [t for t, _ in sweeps["rsd_head:g3:action_tolerance"]] == [0.0, 0.2]
    assert len(plot_threshold_sweep(rows, "match_rate").axes) == 3
    with pytest.raises(ValueError, match="level_distance"):
        plot_threshold_sweep(rows, "level_distance")
