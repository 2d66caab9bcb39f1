import json
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from rsdlib.results import git_sha, new_run, provenance, read_json, write_json


@dataclass
class Cfg:
    lr: float = 1e-3
    layers: tuple = (1, 2)


def test_new_run_writes_config_and_provenance(tmp_path):
    run = new_run("exp", Cfg(), run="r1", root=tmp_path)
    assert run == tmp_path / "exp" / "r1"
    assert read_json(run / "config.json") == {"lr": 1e-3, "layers": [1, 2]}
    prov = read_json(run / "provenance.json")
    assert {"git_sha", "packages", "device", "render", "created"} <= set(prov)
    assert prov["packages"]["torch"] is not None
    assert prov["device"]["torch_threads"] >= 1


def test_reopening_a_run_with_the_same_config_resumes_it(tmp_path):
    run = new_run("exp", {"a": 1}, run="r", root=tmp_path)
    (run / "episodes.jsonl").write_text('{"episode": 0}\n')
    assert new_run("exp", {"a": 1}, run="r", root=tmp_path) == run
    assert (run / "episodes.jsonl").read_text() == '{"episode": 0}\n'  # nothing lost


def test_reopening_a_run_with_another_config_is_refused(tmp_path):
    new_run("exp", {"a": 1}, run="r", root=tmp_path)
    with pytest.raises(ValueError, match="different config"):
        new_run("exp", {"a": 2}, run="r", root=tmp_path)
    with pytest.raises(FileExistsError):
        new_run("exp", {"a": 1}, run="r", root=tmp_path, exist_ok=False)


def test_a_refused_resume_names_what_changed(tmp_path):
    new_run("exp", {"options": {"protocol": {"open_loop_steps": 8}}, "episodes": 50}, run="r", root=tmp_path)
    changed = {"options": {"protocol": {"open_loop_steps": 4}}, "episodes": 50, "seed": 1}
    with pytest.raises(ValueError, match=r"options\.protocol\.open_loop_steps: 8 there, 4 now") as err:
        new_run("exp", changed, run="r", root=tmp_path)
    assert "seed: None there, 1 now" in str(err.value) and "episodes" not in str(err.value)


@pytest.mark.parametrize("name", ["", "../up", "a b", "x/y"])
def test_run_names_must_be_plain(tmp_path, name):
    with pytest.raises(ValueError, match="must be letters"):
        new_run("exp", {}, run=name, root=tmp_path)


def test_json_helpers_convert_numpy_and_name_bad_files(tmp_path):
    path = write_json(tmp_path / "m.json", {"x": np.float32(0.5), "n": np.int64(3), "arr": (1, 2)})
    assert json.loads(path.read_text()) == {"x": 0.5, "n": 3, "arr": [1, 2]}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_json(tmp_path / "missing.json")


def test_provenance_records_the_render_backend(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert provenance()["render"]["MUJOCO_GL"] == "osmesa"


def test_provenance_records_the_running_code_s_commit_whatever_rsd_root_says(tmp_path):
    # A snapshot of the code run on the main checkout's files (RSD_ROOT) recorded the main
    # checkout's commit; tmp_path is no git repository, so reading it would give None.
    if git_sha() is None:
        pytest.skip("not a git checkout")
    code = "from rsdlib.results import git_sha; print(git_sha())"
    env = {**os.environ, "RSD_ROOT": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == git_sha()
