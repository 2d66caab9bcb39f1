"""Mistakes fail loudly and name their cause: evaluation set-up, resumed runs, pipeline overrides, files.

Each test sets up the mistake as it happens in practice (a bad argument, a killed process, a
damaged file) and checks the error says what was wrong and where, or that nothing was lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from fake_demos import write_task
from mocks.fake_libero import CRASH_INIT, CRASH_TASK, PushPolicy, evaluation_script, make_fake_env

from rsdlib.libero.evaluate import EPISODES_FILE, EvalOptions, evaluate, read_episodes
from rsdlib.libero.protocol import Protocol

SUITE = "libero_spatial"
TESTS_DIR = Path(__file__).resolve().parent.parent


def run_fake(tmp_path, policy=None, tasks=(0,), episodes=(2,), name="run", **kw):
    return evaluate(
        policy or PushPolicy(),
        kw.pop("suites", [SUITE]),
        list(tasks),
        list(episodes) if not isinstance(episodes, int) else episodes,
        run_dir=tmp_path / name,
        executor=kw.pop("executor", "serial"),
        env_factory=kw.pop("env_factory", make_fake_env),
        progress=False,
        **kw,
    )


class NeverRun(PushPolicy):
    """Fails the test if an episode starts: the mistake must be caught before."""

    name = "never_run"

    def reset(self, context):
        raise AssertionError("an episode ran although the evaluation was set up wrongly")


class CameraPolicy(PushPolicy):
    """Declares, like a learned policy, that it reads both cameras at 64 px."""

    name = "camera_policy"

    def __init__(self, needs=None):
        super().__init__()
        self.needs = needs or {"cameras": ("agentview_rgb", "eye_in_hand_rgb"), "image_size": 64}

    def requirements(self):
        return self.needs


class BlindPolicy(PushPolicy):
    """Raises on every observation, as a learned policy does without images."""

    name = "blind"

    def act(self, obs):
        raise ValueError(
            "blind reads camera images, the observation lacks them: pass EvalOptions(render=True)"
        )


# -- 1. evaluate() checks its set-up before running anything ------------------------------------


def test_a_bare_suite_name_is_that_one_suite(tmp_path):
    result = run_fake(tmp_path, suites=SUITE)
    assert [r["suite"] for r in result.records] == [SUITE]
    with pytest.raises(TypeError, match=r"suite names.*\['libero_spatial'\]"):
        run_fake(tmp_path, NeverRun(), suites=[0])
    with pytest.raises(ValueError, match="unknown LIBERO suite 'libero_spacial'"):
        run_fake(tmp_path, NeverRun(), suites=["libero_spacial"])


def test_bad_indices_and_tasks_of_other_suites_raise_before_any_episode(tmp_path):
    with pytest.raises(ValueError, match="index -1 is negative"):
        run_fake(tmp_path, NeverRun(), tasks=(-1,))
    with pytest.raises(TypeError, match="integer indices"):
        run_fake(tmp_path, NeverRun(), episodes=(1.5,))
    with pytest.raises(ValueError, match="episodes .0. must be at least 1"):
        run_fake(tmp_path, NeverRun(), episodes=0)
    with pytest.raises(ValueError, match=r"tasks names suites \['libero_goal'\] that are not evaluated"):
        evaluate(NeverRun(), [SUITE], {"libero_goal": [0]}, 1, run_dir=tmp_path / "run",
                 executor="serial", env_factory=make_fake_env, progress=False)  # fmt: skip
    assert not (tmp_path / "run").exists()


@pytest.mark.libero
def test_out_of_range_tasks_and_init_states_raise_naming_suite_index_and_range(tmp_path):
    # the default env factory: indices are checked against LIBERO's suites, no env is made
    def bad(tasks, episodes):
        return evaluate(NeverRun(), [SUITE], tasks, episodes, run_dir=tmp_path / "run",
                        executor="serial", progress=False)  # fmt: skip

    with pytest.raises(
        ValueError, match=r"task 10 is out of range for libero_spatial, which has tasks 0\.\.9"
    ):
        bad([0, 10], 1)
    with pytest.raises(
        ValueError, match=r"init index 50 is out of range for libero_spatial task 0, .*0\.\.49"
    ):
        bad([0], [3, 50])
    with pytest.raises(ValueError, match=r"init index 50 .*episodes=60 asks for the first 60"):
        bad([0], 60)
    assert not (tmp_path / "run").exists()


def test_what_a_policy_requires_is_checked_before_any_episode(tmp_path):
    policy = CameraPolicy()
    with pytest.raises(ValueError, match=r"rendering is off: pass EvalOptions\(render=True\)"):
        run_fake(tmp_path, policy, options=EvalOptions())
    with pytest.raises(
        ValueError, match=r"64x64 images and the protocol renders 128x128.*camera_resolution=64"
    ):
        run_fake(tmp_path, policy, options=EvalOptions(render=True))
    with pytest.raises(ValueError, match=r"\['eye_in_hand_rgb'\], which the protocol does not render"):
        protocol = Protocol(camera_names=("agentview",), camera_resolution=64)
        run_fake(tmp_path, policy, options=EvalOptions(render=True, protocol=protocol))
    with pytest.raises(ValueError, match=r"unknown keys \['image_sise'\]"):
        run_fake(tmp_path, CameraPolicy({"image_sise": 64}), options=EvalOptions(render=True))
    assert not (tmp_path / "run").exists()  # nothing ran, no run folder was made
    # options that fit: the episode runs
    ok = run_fake(tmp_path, policy, options=EvalOptions(render=True, protocol=Protocol(camera_resolution=64)))
    assert ok.records[0]["error"] is None and ok.records[0]["success"]


def test_each_distinct_error_message_is_printed_once(tmp_path, capsys):
    run_fake(tmp_path, BlindPolicy(), tasks=(0,), episodes=(2, 3, 5), name="blind")
    err = capsys.readouterr().err
    assert "3 of 3 episodes raised" in err
    assert err.count("blind reads camera images") == 1  # once, with its count
    assert "3 x (first: libero_spatial task 0 init 2)" in err
    assert str(tmp_path / "blind" / EPISODES_FILE) in err
    assert "Traceback" not in err  # the message, not the traceback (that stays in the file)
    # two different errors: each printed; a run without errors prints nothing
    run_fake(tmp_path, tasks=(0, CRASH_TASK), episodes=(2, CRASH_INIT), name="crash")
    err = capsys.readouterr().err
    assert "1 of 4 episodes raised" in err and "RuntimeError: simulated physics blow-up" in err
    run_fake(tmp_path, tasks=(0,), episodes=(2,), name="fine")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("render", [True, False], ids=["rendered", "replayed-from-states"])
def test_an_episode_that_raised_before_its_first_step_writes_no_video(tmp_path, render):
    options = EvalOptions(render=render, video="all")
    blind = run_fake(tmp_path, BlindPolicy(), episodes=(2, 3), options=options, name="blind")
    assert all(r["error"] and r["video"] is None for r in blind.records)
    crashed = run_fake(tmp_path, tasks=(CRASH_TASK,), episodes=(CRASH_INIT, 2), options=options, name="crash")
    by_init = {r["init_index"]: r for r in crashed.records}
    assert by_init[CRASH_INIT]["error"] and by_init[CRASH_INIT]["video"] is None  # raised in its first step
    assert by_init[2]["video"] and Path(by_init[2]["video"]).stat().st_size > 0  # the others still get one
    videos = sorted(p.name for p in (tmp_path / "crash" / "videos").iterdir())
    assert videos == [Path(by_init[2]["video"]).name]  # and nothing else, no half-written file
    assert not (tmp_path / "blind" / "videos").exists() or not any((tmp_path / "blind" / "videos").iterdir())


# -- 2. resume and killed runs --------------------------------------------------------------------


def test_a_last_record_without_its_newline_survives_a_resume(tmp_path):
    run_fake(tmp_path, episodes=(2, 3, 4))
    path = tmp_path / "run" / EPISODES_FILE
    text = path.read_text()
    path.write_text(text.removesuffix("\n"))  # killed after the record, before its newline
    result = run_fake(tmp_path, episodes=(2, 3, 4, 5, 6))
    lines = path.read_text().splitlines()
    assert lines[:3] == text.splitlines()  # the old records, untouched
    records = [json.loads(line) for line in lines]  # every line parses: nothing was glued together
    assert sorted(r["init_index"] for r in records) == [2, 3, 4, 5, 6]
    assert len(read_episodes(tmp_path / "run")) == len(result.records) == 5
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["overall"]["n"] == 5  # the summary agrees with the file
    run_fake(tmp_path, episodes=(2, 3, 4, 5, 6, 7))  # and the next resume works too
    assert len(read_episodes(tmp_path / "run")) == 6


def test_a_cut_off_last_line_is_cut_from_the_file_byte_for_byte(tmp_path):
    run_fake(tmp_path, episodes=(2, 3))
    path = tmp_path / "run" / EPISODES_FILE
    good = path.read_bytes()
    # cut inside a two-byte UTF-8 character: the file is not even valid text any more
    path.write_bytes(good + '{"suite": "libero_spatial", "task_name": "café"'.encode()[:-2])
    assert [r["init_index"] for r in read_episodes(tmp_path / "run")] == [2, 3]
    assert path.read_bytes() == good


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a parent that does not reap it is not running)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc (Linux)")
def test_pool_workers_exit_when_the_evaluation_is_killed(tmp_path):
    run_dir = tmp_path / "run"
    script = evaluation_script(run_dir, suite=SUITE, executor="pool", delay_s=0.1, workers=2)
    proc = subprocess.Popen([sys.executable, "-c", script])
    path = run_dir / EPISODES_FILE
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(workers) < 2:
            if proc.poll() is not None:
                pytest.fail("the evaluation finished before it could be killed; make the episodes slower")
            workers = {r["worker"] for r in read_episodes(run_dir)} if path.exists() else set()
            time.sleep(0.05)
        assert workers, "no pool worker recorded an episode within 120 s"
        proc.send_signal(signal.SIGKILL)  # the parent only: its pool gets no chance to shut down
        proc.wait()
        assert len(read_episodes(run_dir)) < 30, "the run must be killed midway"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)], "pool workers outlived the killed evaluation"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in workers:  # leave nothing running when the test fails
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


# -- 3. pipeline overrides ------------------------------------------------------------------------
# On notebooks of their own (the real ones change), with papermill replaced: nothing executes.


def write_notebook(path: Path, parameters: str) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    common = "profile: str = 'default'\nfigures_dir: str = 'figures'\nresults_dir: str = 'results'\n"
    nb.cells.append(nbformat.v4.new_code_cell(common + parameters, metadata={"tags": ["parameters"]}))
    nbformat.write(nb, path)
    return path


@pytest.fixture
def fake_pipeline(monkeypatch, tmp_path):
    """``rsdlib.pipeline`` on two notebooks of this test's own, with ``run_notebook`` recorded."""
    from rsdlib import pipeline

    folder = tmp_path / "notebooks"
    folder.mkdir()
    write_notebook(folder / "06_step.ipynb", "step: int = 40\nchunks: int = 64\nthreshold: float = 0.5\n"
                                            "rules: list = ['exact']\nrun_name: str = ''")  # fmt: skip
    write_notebook(folder / "07_other.ipynb", "repeats: int = 2")
    notebooks = pipeline.list_notebooks(folder)
    profiles = {"smoke": {"06_step": {"step": 8, "chunks": 8}}, "default": {}, "full": {}}
    monkeypatch.setattr(pipeline, "list_notebooks", lambda notebooks_dir=None: notebooks)
    monkeypatch.setattr(pipeline, "load_profiles", lambda path=None: json.loads(json.dumps(profiles)))
    monkeypatch.setattr(pipeline, "BUILD_DIR", tmp_path / "build")
    pipeline.calls = []

    def fake_run_notebook(notebook, output, parameters, **kwargs):
        # what the notebooks do: a run folder named after `profile`, holding the run's config
        from rsdlib.results import new_run

        pipeline.calls.append((output, dict(parameters)))
        config = {k: v for k, v in parameters.items() if k not in pipeline.COMMON_PARAMETERS}
        new_run(notebook.stem, config, run=parameters["profile"], root=parameters["results_dir"])
        output.parent.mkdir(parents=True, exist_ok=True)
        return pipeline.NotebookRun(notebook.name, str(output), 0.0, True, None, parameters)

    monkeypatch.setattr(pipeline, "run_notebook", fake_run_notebook)
    yield pipeline
    del pipeline.calls


def test_a_set_value_of_the_wrong_type_is_named_before_anything_runs(fake_pipeline, capsys, tmp_path):
    pipeline = fake_pipeline
    with pytest.raises(pipeline.PipelineError) as err:
        pipeline.execute_profile(
            "smoke", settings=["06.chunks=lots", "06.threshold=yes"], results_dir=tmp_path
        )
    message = str(err.value)
    assert "06_step declares chunks: int (default 64), got 'lots' (str)" in message
    assert "06_step declares threshold: float (default 0.5), got True (bool)" in message  # YAML's yes
    assert pipeline.calls == []  # nothing ran
    assert pipeline.main(["--profile", "smoke", "--set", "06.step=2.5", "--results-dir", str(tmp_path)]) == 1
    assert "06_step declares step: int (default 40), got 2.5 (float)" in capsys.readouterr().err
    assert pipeline.calls == [] and not (tmp_path / "build").exists()
    with pytest.raises(pipeline.PipelineError, match="the runner sets 'profile'"):
        pipeline.parse_settings(["06.profile=full"])
    with pytest.raises(pipeline.PipelineError, match="06_step declares rules: list"):
        pipeline.parse_settings(["06.rules=exact"])
    # a str parameter takes the text as written; a float one takes YAML's unquoted exponents
    assert pipeline.parse_settings(
        ["06.run_name=2024", "06.threshold=1e-3", "06.chunks=16", "07.repeats=3"]
    ) == {
        "06_step": {"run_name": "2024", "threshold": 0.001, "chunks": 16},
        "07_other": {"repeats": 3},
    }


def test_a_profile_value_of_the_wrong_type_is_caught(tmp_path):
    from rsdlib.pipeline import check_profiles

    nb = write_notebook(tmp_path / "00_x.ipynb", "steps: int = 3\nlr: float = 0.1")
    profiles = {"smoke": {"00_x": {"steps": "many", "lr": 1}}, "default": {}, "full": {}}
    assert check_profiles(profiles, [nb]) == [
        "profile 'smoke' hands 00_x steps='many': expected int, got str"
    ]


def test_an_override_run_never_touches_the_plain_runs_folders(fake_pipeline, tmp_path):
    from rsdlib.paths import FIGURES_DIR

    pipeline = fake_pipeline
    results = tmp_path / "results"

    def run(*settings):
        pipeline.execute_profile("smoke", results_dir=results, progress=False, settings=settings)
        return pipeline.calls[-2:]  # both notebooks

    (out, params), (_, other) = run("06.chunks=3", "06.step=2")
    name = params["profile"]
    assert name.startswith("smoke-set-") and len(name) == len("smoke-set-") + 8
    assert other["profile"] == name  # every notebook of the run: 07 may read what 06 wrote
    assert out.parent == tmp_path / "build" / name and (out.parent / "pipeline.json").exists()
    assert params["figures_dir"] == str(tmp_path / "build" / name / "figures")  # not the paper's figures
    # the plain run after it (another config) opens its own folders: no "different config" error
    (out, params), _ = run()
    assert params["profile"] == "smoke" and out.parent == tmp_path / "build" / "smoke"
    assert params["figures_dir"] == str(FIGURES_DIR)
    assert sorted(p.name for p in (results / "06_step").iterdir()) == sorted(["smoke", name])
    # the same overrides in another order resume their own run; other values make another one
    assert run("06.step=2", "06.chunks=3")[0][1]["profile"] == name
    assert run("06.step=3")[0][1]["profile"] not in (name, "smoke")


# -- 4. damaged files name themselves ------------------------------------------------------------


@pytest.fixture(scope="module")
def chunks():
    from rsdlib.tokenizers.data import split_episodes, synthetic_episodes

    episodes = synthetic_episodes(6, generator=torch.Generator().manual_seed(0), length=40)
    return split_episodes(episodes, held_out_fraction=0.3, horizon=8, seed=0, source="synthetic").train


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("damaged", ["model.safetensors", "config.json", "normaliser.json"])
def test_a_damaged_rfsq_tokenizer_file_is_named(tmp_path, chunks, one_thread, damaged):
    from rsdlib.tokenizers import RFSQTokenizer, TokenizerFileError, load_tokenizer

    tok = RFSQTokenizer(
        num_latents=2, num_layers=2, levels=[3, 3], hidden=16, depth=1, steps=3, batch_size=16
    )
    folder = tok.fit(chunks, progress=False).save(tmp_path / "rfsq")
    assert load_tokenizer(folder).config() == tok.config()  # intact, it loads
    path = _truncate(folder / damaged)
    with pytest.raises(TokenizerFileError) as err:
        load_tokenizer(folder)
    assert str(path) in str(err.value) and "02_action_tokenizers" in str(err.value)


def test_weights_of_another_rfsq_config_are_named(tmp_path, chunks, one_thread):
    from rsdlib.tokenizers import RFSQTokenizer, TokenizerFileError, load_tokenizer

    small = dict(num_latents=2, num_layers=2, levels=[3, 3], depth=1, steps=2, batch_size=16)
    a = RFSQTokenizer(hidden=16, **small).fit(chunks, progress=False).save(tmp_path / "a")
    b = RFSQTokenizer(hidden=8, **small).fit(chunks, progress=False).save(tmp_path / "b")
    (a / "model.safetensors").write_bytes((b / "model.safetensors").read_bytes())
    with pytest.raises(TokenizerFileError, match=f"{a / 'model.safetensors'}.*do not fit the config"):
        load_tokenizer(a)


def test_a_truncated_fast_vocabulary_is_named(tmp_path, chunks):
    from rsdlib.tokenizers import FASTTokenizer, TokenizerFileError, load_tokenizer

    folder = FASTTokenizer(vocab_size=128).fit(chunks).save(tmp_path / "fast")
    path = _truncate(folder / "bpe.json")
    with pytest.raises(TokenizerFileError) as err:
        load_tokenizer(folder)
    assert str(path) in str(err.value) and "02_action_tokenizers" in str(err.value)


def test_a_demo_without_obs_is_named_with_its_file(tmp_path):
    from rsdlib.libero.dataset import load_demos
    from rsdlib.libero.demos import DemoFileError

    path, _ = write_task(tmp_path, "task_a", [5, 7])
    load_demos(SUITE, root=tmp_path, rng=np.random.default_rng(0), val_fraction=0.5)  # intact, it loads
    with h5py.File(path, "a") as f:
        del f["data/demo_1/obs/ee_ori"]
    with pytest.raises(DemoFileError, match=f"{path}: demo_1 lacks.*ee_ori.*01_demonstrations"):
        load_demos(SUITE, root=tmp_path, rng=np.random.default_rng(0), val_fraction=0.5)
    with h5py.File(path, "a") as f:
        del f["data/demo_1/obs"]
    with pytest.raises(DemoFileError, match=f"{path}: demo_1 lacks.*obs"):
        load_demos(SUITE, root=tmp_path, rng=np.random.default_rng(0), val_fraction=0.5)
