"""Progress bars: a log gets a few plain lines, a terminal gets tqdm's bar."""

from __future__ import annotations

import io

from rsdlib.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_written_to_a_log_has_no_carriage_returns_and_few_lines(monkeypatch):
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    log = io.StringIO()
    bar = progress(range(5000), file=log, desc="work")
    for i in bar:
        bar.set_postfix(i=i)  # a forced refresh every step waits for the interval too
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 1 <= len(lines) <= 3, lines  # the first status, the last, nothing per step
    assert lines[-1].startswith("work: 100%") and "5000/5000" in lines[-1]
    assert text.isascii()


def test_tqdm_mininterval_sets_how_often_a_log_line_is_written(monkeypatch):
    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    log = io.StringIO()
    for _ in progress(range(4), file=log, desc="often"):
        pass
    assert "\r" not in log.getvalue()
    assert len(log.getvalue().splitlines()) >= 5  # 0/4 .. 4/4: a line per update


def test_a_terminal_gets_the_usual_bar():
    screen = Terminal()
    for _ in progress(range(3), file=screen):
        pass
    assert "\r" in screen.getvalue()  # redrawn in place


def test_a_disabled_bar_writes_nothing():
    log = io.StringIO()
    for _ in progress(range(3), file=log, disable=True):
        pass
    assert log.getvalue() == ""


def test_serial_evaluation_shows_the_env_step_of_the_episode_under_way(tmp_path, monkeypatch, capsys):
    from mocks.fake_libero import MAX_STEPS, PushPolicy, make_fake_env

    from rsdlib.libero.evaluate import evaluate

    monkeypatch.setenv("TQDM_MININTERVAL", "0")  # a line per refresh, so every step shows
    evaluate(PushPolicy(), ["libero_spatial"], [0], 2, run_dir=tmp_path / "run", executor="serial",
             env_factory=make_fake_env, progress=True)  # fmt: skip
    err = capsys.readouterr().err
    assert "\r" not in err  # pytest's capture is no terminal: plain lines
    assert "episode 1: step 1/" in err and "episode 2: step 1/" in err
    assert f"/{MAX_STEPS}" in err
    assert "success=" in err


def test_a_scene_snapshot_counts_the_expert_steps(monkeypatch, capsys):
    from mocks.fake_libero import FakeEnv, PushPolicy

    import rsdlib.libero.env
    import rsdlib.libero.experts
    from rsdlib.libero.snapshot import observation_at

    class SceneEnv(FakeEnv):  # LiberoEnv's constructor, context manager and reset
        def __init__(self, suite, task_id, protocol=None, render=None):
            super().__init__(suite, task_id)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

        def reset(self, init_index, wait=True):
            return super().reset(init_index)

    monkeypatch.setattr(rsdlib.libero.env, "LiberoEnv", SceneEnv)
    monkeypatch.setattr(rsdlib.libero.experts, "ScriptedExpert", lambda config: PushPolicy())
    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    obs = observation_at("libero_spatial", 0, 0, step=5)
    assert obs["step"] == 5
    err = capsys.readouterr().err
    assert "libero_spatial task 0 init 0: expert steps" in err and "5/5" in err
    assert "rendering step 5" in err
    observation_at("libero_spatial", 0, 0, step=5, progress=False)
    assert capsys.readouterr().err == ""
