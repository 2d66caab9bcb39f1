"""The notebook pipeline: profiles fit the notebooks, committed notebooks are clean, failures are named."""

import json

import nbformat
import pytest
import yaml

from rsdlib.paths import NOTEBOOKS_DIR
from rsdlib.pipeline import (
    COMMON_PARAMETERS,
    PROFILES,
    PipelineError,
    check_profiles,
    declared_parameters,
    list_notebooks,
    load_profiles,
    run_notebook,
)

NOTEBOOKS = list_notebooks()


def make_notebook(
    path, parameters="profile: str = 'x'\nfigures_dir: str = ''\nresults_dir: str = ''", cells=()
):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if parameters is not None:
        nb.cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    nb.cells.extend(nbformat.v4.new_code_cell(src) for src in cells)
    nbformat.write(nb, path)
    return path


def test_there_are_numbered_notebooks_and_every_profile_is_defined():
    assert NOTEBOOKS and NOTEBOOKS[0].name.startswith("00_")
    assert set(load_profiles()) == set(PROFILES)


def test_profiles_fit_the_committed_notebooks():
    assert check_profiles() == []


def test_a_parameter_a_notebook_does_not_declare_is_caught(tmp_path):
    nb = make_notebook(tmp_path / "00_x.ipynb")
    profiles = {"smoke": {"00_x": {"stepz": 3}}, "default": {}, "full": {}}
    problems = check_profiles(profiles, [nb])
    assert problems == ["profile 'smoke' hands 00_x parameters it does not declare: ['stepz']"]


def test_a_notebook_without_parameters_cell_or_common_parameters_is_caught(tmp_path):
    bare = make_notebook(tmp_path / "00_bare.ipynb", parameters=None, cells=["x = 1"])
    partial = make_notebook(tmp_path / "01_partial.ipynb", parameters="profile: str = 'x'")
    problems = check_profiles({p: {} for p in PROFILES}, [bare, partial])
    assert any("00_bare.ipynb has no cell tagged 'parameters'" in p for p in problems)
    assert any("01_partial.ipynb does not declare the common parameters" in p for p in problems)
    profiles = {"smoke": {"07_missing": {}}, "default": {}, "full": {}}
    assert any("does not exist" in p for p in check_profiles(profiles, [partial]))


def test_malformed_profiles_file_is_named(tmp_path):
    bad = tmp_path / "profiles.yaml"
    bad.write_text("smoke: [1, 2\n")
    with pytest.raises(PipelineError, match="not valid YAML"):
        load_profiles(bad)
    bad.write_text(yaml.safe_dump({"fast": {}}))
    with pytest.raises(PipelineError, match="unknown profile 'fast'"):
        load_profiles(bad)


@pytest.mark.parametrize("notebook", NOTEBOOKS + [NOTEBOOKS_DIR / "_template.ipynb"], ids=lambda p: p.stem)
def test_committed_notebooks_are_stripped_and_declare_the_common_parameters(notebook):
    raw = json.loads(notebook.read_text())
    assert raw["metadata"]["kernelspec"]["name"] == "python3"
    assert "widgets" not in raw["metadata"], "widget state saved: run `make strip`"
    for i, cell in enumerate(raw["cells"]):
        if cell["cell_type"] == "code":
            assert not cell["outputs"], f"cell {i} has outputs: run `make strip`"
            assert cell["execution_count"] is None, f"cell {i} has an execution count: run `make strip`"
    assert set(COMMON_PARAMETERS) <= set(declared_parameters(notebook))


def test_a_failing_notebook_is_named_with_its_cell_and_its_copy_is_kept(tmp_path):
    nb = make_notebook(tmp_path / "03_fails.ipynb", cells=["x = 1", "raise ValueError('bad data in demo_3')"])
    out = tmp_path / "build" / "03_fails.ipynb"
    run = run_notebook(nb, out, {"profile": "smoke"}, progress=False)
    assert not run.ok
    assert "03_fails.ipynb failed in cell" in run.error
    assert "ValueError: bad data in demo_3" in run.error
    assert "raise ValueError" in run.error  # the failing cell's source
    assert out.exists() and str(out) in run.error


def test_a_setting_overrides_one_parameter_and_a_bad_one_is_named():
    from rsdlib.pipeline import PipelineError, execute_profile, parse_setting

    assert parse_setting("08.executor=ray") == ("08_libero_comparison", "executor", "ray")
    assert parse_setting("08_libero_comparison.tasks=[0, 3]") == ("08_libero_comparison", "tasks", [0, 3])
    assert parse_setting("09.repeats=4")[2] == 4
    for bad, match in (("08executor=ray", "NOTEBOOK.PARAMETER=VALUE"), ("99.x=1", "no notebook")):
        with pytest.raises(PipelineError, match=match):
            parse_setting(bad)
    # checked against the notebook's parameters before anything runs
    with pytest.raises(PipelineError, match=r"does not declare: \['exectuor'\]"):
        execute_profile("smoke", only=["08"], settings=["08.exectuor=ray"])


def test_every_notebooks_parameters_cell_holds_the_default_profiles_values():
    """A notebook opened and run by hand computes what `make paper` computes (and so writes the
    same figures): its parameters cell must equal the `default` profile wherever that sets one."""
    import ast

    default = load_profiles()["default"]
    differ = []
    for notebook in list_notebooks():
        declared = declared_parameters(notebook)
        for name, value in default.get(notebook.stem, {}).items():
            written = ast.literal_eval(declared[name]["default"])
            if written != value:
                differ.append(f"{notebook.name}: {name} = {written!r}, the default profile sets {value!r}")
    assert not differ, "set these in the notebooks' parameters cells:\n  " + "\n  ".join(differ)


def test_every_profile_whose_02_reads_01s_demonstrations_makes_three_per_task():
    """02 holds one episode per task out for its test, then one of the rest for its sweep's
    validation: with two starts per task from 01 it stopped (too few episodes to hold any out)."""
    import ast

    source = ast.literal_eval(
        declared_parameters(NOTEBOOKS_DIR / "02_action_tokenizers.ipynb")["data_source"]["default"]
    )
    starts = ast.literal_eval(
        declared_parameters(NOTEBOOKS_DIR / "01_demonstrations.ipynb")["episodes"]["default"]
    )
    for profile, per_notebook in load_profiles().items():
        if per_notebook.get("02_action_tokenizers", {}).get("data_source", source) == "demos":
            assert per_notebook.get("01_demonstrations", {}).get("episodes", starts) >= 3, profile
