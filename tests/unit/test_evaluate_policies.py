"""scripts/evaluate_policies.py: the open-loop steps option reaches the harness, is checked, recorded
and kept apart from the standard protocol's runs (on the fake env: no simulator, no trained models)."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from mocks.fake_libero import PushPolicy, make_fake_env

from rsdlib.experiments.comparison import eval_options
from rsdlib.libero.evaluate import evaluate, read_episodes
from rsdlib.results import new_run

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "evaluate_policies.py"
HORIZON = 8
PREPARED = {"suite": "libero_spatial", "modality": "lowdim", "image_size": None, "horizon": HORIZON}


class TimedPush(PushPolicy):
    """PushPolicy with chunks of :data:`HORIZON` actions and the per-chunk diagnostics the script's
    summary line reads."""

    def act(self, obs):
        out = super().act(obs)
        out.actions = np.resize(out.actions, (HORIZON, 7))
        out.diagnostics |= {"latency_ms": {"total": 1.0}, "main_passes": 1}
        return out


@pytest.fixture
def models(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "prepared.json").write_text(json.dumps(PREPARED))
    return folder


@pytest.fixture
def cli(monkeypatch):
    """The script as a module, deciding with the fake policy on the fake env, in this process."""
    spec = importlib.util.spec_from_file_location("evaluate_policies", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "policy_from_spec", lambda method, models: TimedPush())
    fake = functools.partial(evaluate, executor="serial", env_factory=make_fake_env, progress=False)
    monkeypatch.setattr(module, "evaluate", fake)
    monkeypatch.setattr(module, "WorkerPool", lambda *args, **kw: contextlib.nullcontext())  # serial: no pool
    return module


def run_cli(cli, models, results, *extra):
    cli.main(["--models", str(models), "--methods", "rfsq_ar", "--tasks", "0", "--episodes", "3",
              "--results", str(results), *extra])  # fmt: skip
    return results / "libero_eval"


@pytest.mark.parametrize("k", [0, -1, HORIZON + 1])
def test_open_loop_steps_outside_one_to_the_horizon_are_refused_before_anything_runs(
    cli, models, tmp_path, capsys, k
):
    with pytest.raises(SystemExit) as exit_:
        run_cli(cli, models, tmp_path / "results", "--open-loop-steps", str(k))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"--open-loop-steps {k}" in err and f"chunk horizon the models were trained on ({HORIZON})" in err
    assert not (tmp_path / "results").exists()


def test_open_loop_steps_set_the_env_steps_per_policy_call(cli, models, tmp_path, capsys):
    runs = run_cli(cli, models, tmp_path / "results", "--open-loop-steps", "2")
    out = capsys.readouterr().out
    run_dir = runs / "libero_spatial-lowdim-rfsq_ar-ol2"
    records = read_episodes(run_dir)
    assert len(records) == 3
    for r in records:  # the fake robot moves 0.1 per step: each call sees it 2 steps further on
        positions = [d["position"] for d in r["diagnostics"]]
        assert np.allclose(np.diff(positions), 0.2)
        assert r["chunks"] == r["steps"] / 2 == 4
    # the deviation is printed, and recorded in the config, the summary and the summary line
    assert "protocol deviation: open_loop_steps = 2 (OpenVLA-OFT: 8)" in out
    config = json.loads((run_dir / "config.json").read_text())
    assert config["options"]["protocol"]["open_loop_steps"] == 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["protocol_deviations"] == {"open_loop_steps": {"openvla_oft": 8, "used": 2}}
    line = json.loads(next(s for s in out.splitlines() if s.startswith('{"method"')))
    assert (line["open_loop_steps"], line["chunks_per_episode"]) == (2, 4)


def test_the_standard_protocol_runs_whole_chunks_in_its_own_folder(cli, models, tmp_path, capsys):
    results = tmp_path / "results"
    run_cli(cli, models, results, "--open-loop-steps", "2")
    runs = run_cli(cli, models, results)  # the default: OpenVLA-OFT's 8, the whole chunk
    out = capsys.readouterr().out
    assert sorted(p.name for p in runs.iterdir()) == [
        "libero_spatial-lowdim-rfsq_ar",
        "libero_spatial-lowdim-rfsq_ar-ol2",
    ]
    standard = runs / "libero_spatial-lowdim-rfsq_ar"
    assert [r["chunks"] for r in read_episodes(standard)] == [1, 1, 1]  # 8 steps: the step limit
    assert json.loads((standard / "metrics.json").read_text())["protocol_deviations"] == {}
    assert out.count("protocol deviation") == 2  # the -ol2 run's start line and table line only


def test_resuming_a_run_folder_with_other_open_loop_steps_is_refused(cli, models, tmp_path):
    results = tmp_path / "results"
    run_cli(cli, models, results, "--open-loop-steps", "2")
    config = {"policy": TimedPush().config(), "episodes": 3, "options": eval_options(PREPARED)}
    with pytest.raises(ValueError, match=r"options\.protocol\.open_loop_steps: 2 there, 8 now"):
        new_run("libero_eval", config, run="libero_spatial-lowdim-rfsq_ar-ol2", root=results)


def test_asking_for_more_episodes_adds_only_the_missing_ones(cli, models, tmp_path, capsys):
    """The documented way to grow a run (``--episodes 50`` after 5) was refused because the
    count was part of the run's config; a folder written that way still resumes."""
    results = tmp_path / "results"
    run_dir = run_cli(cli, models, results, "--episodes", "2") / "libero_spatial-lowdim-rfsq_ar"
    first = read_episodes(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps(config | {"episodes": 2}))  # as written before
    run_cli(cli, models, results)  # --episodes 3
    records = read_episodes(run_dir)
    assert [r["init_index"] for r in records] == [0, 1, 2]
    assert records[:2] == first  # kept, not run again
    assert json.loads((run_dir / "metrics.json").read_text())["suites"][0]["n"] == 3
    assert "episodes" not in json.loads((run_dir / "config.json").read_text())
    run_cli(cli, models, results, "--episodes", "1")  # fewer: a summary of the first only
    assert json.loads((run_dir / "metrics.json").read_text())["suites"][0]["n"] == 1
    assert len(read_episodes(run_dir)) == 3


def _record(task: int, init: int, success: bool, chunks: int, depth: int | None = None) -> dict:
    diagnostics = [{"latency_ms": {"total": 10.0}, "main_passes": 3 if depth is None else depth - 1}
                   | ({} if depth is None else {"depth": depth, "num_layers": 4}) for _ in range(chunks)]  # fmt: skip
    return {"suite": "libero_spatial", "task_id": task, "init_index": init, "success": success, "steps": 10 * chunks,
            "chunks": chunks, "diagnostics": diagnostics}  # fmt: skip


def test_compare_runs_pairs_the_shared_episodes_and_reads_a_run_still_writing(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("compare_runs", SCRIPT.parent / "compare_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    full, short = tmp_path / "full", tmp_path / "short"
    full.mkdir(), short.mkdir()
    outcomes = [(t, i, (t + i) % 3 > 0) for t in range(2) for i in range(5)]  # 10 episodes, 6 solved
    (full / "episodes.jsonl").write_text(
        "".join(json.dumps(_record(t, i, s, 4)) + "\n" for t, i, s in outcomes)
    )
    # the short run holds the first 3 init states of each task, flips one outcome, and is mid-write
    lines = [
        json.dumps(_record(t, i, s if (t, i) != (0, 0) else not s, 5, depth=2))
        for t, i, s in outcomes
        if i < 3
    ]
    (short / "episodes.jsonl").write_text("\n".join(lines) + '\n{"suite": "libero_spa')
    before = (short / "episodes.jsonl").read_bytes()
    for run, spec in ((full, "rfsq_ar"), (short, "rfsq_ar+fixed:2")):
        (run / "config.json").write_text(json.dumps({"policy": {"spec": spec}}))
    module.main([str(full), str(short), "--frontier", str(tmp_path / "frontier")])
    out = capsys.readouterr().out
    assert out.startswith("6 episodes every run holds")
    assert "| full | 4/6 |" in out and "| short | 5/6 |" in out
    assert (
        "| 0 | 1 | 1 | 0 | 2.00 | 1.00 |" in out
    )  # only the short run solved (0, 0); no episode's chunks agree
    assert (short / "episodes.jsonl").read_bytes() == before  # only read, never cut
    assert (tmp_path / "frontier.png").stat().st_size > 0
    (short / "episodes.jsonl").write_text("not json\n" + "\n".join(lines) + "\n")
    with pytest.raises(SystemExit, match="line 1"):
        module.main([str(full), str(short)])
