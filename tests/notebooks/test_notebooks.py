"""Every numbered notebook runs under the smoke profile, records sane outputs, and re-runs the same.

1. papermill runs all notebooks in order under ``smoke`` (tiny parameters) into a temporary
   build folder, with figures and results in temporary folders too.
2. Each notebook's ``outputs`` dict (its last cell) is checked against expectations.
3. nbval re-runs each executed copy and compares every cell's output with the first run,
   after the sanitizers in ``sanitize.cfg``: a notebook whose outputs change from run to run
   with the same seed fails.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rsdlib.pipeline import execute_profile, list_notebooks

pytestmark = [pytest.mark.notebook, pytest.mark.slow, pytest.mark.libero]

NOTEBOOKS = [nb.stem for nb in list_notebooks()]
SANITIZE = Path(__file__).with_name("sanitize.cfg")


def check_00_environment_check(out: dict) -> None:
    assert out["suites_rendered"] == ["libero_spatial"]
    assert out["image_shapes"] == ["(64, 64, 3)"]
    assert out["render_faster_without_images"] is True


def check_01_demonstrations(out: dict) -> None:
    assert out["suites"] == ["libero_spatial"] and out["tasks"] == 1
    assert out["demos"] == 2 and out["min_task_success"] == 1.0  # the expert solves its smoke episode
    assert out["chunk_shape"] == "(8, 7)" and out["image_shape"] == "(32, 32, 3)"
    assert out["val_episodes_disjoint"] is True


def check_05_libero_eval(out: dict) -> None:
    assert out["policy"] == "scripted_expert" and out["suites"] == ["libero_spatial"]
    assert (out["episodes"], out["successes"], out["errors"]) == (1, 1, 0)
    assert out["ci_contains_rate"] is True


def check_02_action_tokenizers(out: dict) -> None:
    assert out["synthetic"] is True  # the smoke profile fits on made-up episodes and must say so
    assert out["rfsq_min_layer_entropy_bits"] > 1.0  # every RFSQ layer carries information
    # a few smoke steps train little (unit tests check that error falls per layer); it must be finite
    assert 0 < out["rfsq_mse_all_layers"] < 1 and 0 < out["rfsq_mse_two_layers"] < 1


def check_03_train_policies(out: dict) -> None:
    assert out["trained"] is True  # the smoke profile trains every model for real, a few steps
    assert out["models"] == sorted(["rfsq_ar", "rfsq_parallel", "l1_regression", "fast_ar", "head_drafter"])
    assert out["finite_losses"] is True and out["token_models_have_layer_accuracy"] is True


def check_04_load_models(out: dict) -> None:
    assert len(out["models"]) == 5 and out["methods_timed"] == 5  # the shipped lowdim folder: no tiny policy
    assert out["rsd_equals_plain"] is True  # the exact rule is lossless with either drafter
    assert 0.0 <= out["main_layer0_accuracy"] <= 1.0


def check_06_step_through_rsd(out: dict) -> None:
    assert out["layers"] == 4 and out["exact_equals_plain"] is True  # exact is lossless
    assert out["heatmap_rows"] == 5 and 1 <= out["exact_mean_passes"] <= 3  # layer 0 comes with the prefix
    assert out["decode_button_error"] is None  # the stepper's button decodes with its default controls


def check_07_latency(out: dict) -> None:
    assert out["suites"] == ["libero_spatial", "libero_object"]  # more_checkpoints times a second folder
    assert out["methods"] == 4 + 1 * 2 + 1  # four plain methods, the head x two rules, one adaptive depth
    assert (
        out["exact_is_lossless"] is True and out["plain_passes"] == 3
    )  # L - 1: layer 0 comes with the prefix


def check_08_libero_comparison(out: dict) -> None:
    assert out["suites"] == ["libero_spatial", "libero_object"]  # more_checkpoints adds a block
    assert out["methods"] == ["rfsq_ar", "rsd_head:g2:exact", "rsd_head:g2:match_rate:0.5"]
    assert out["episodes_per_method"] == [1] and out["errors"] == 0 and out["rsd_recorded_acceptance"] is True
    assert out["threshold_sweeps"] == ["match_rate"]


def check_09_ambiguity(out: dict) -> None:
    assert out["methods"] == ["l1_regression", "rfsq_ar@1"] and out["rollouts_per_method"] == [1, 1]
    assert out["errors"] == 0 and out["every_rollout_has_a_path"] is True


def check_10_adaptive_depth(out: dict) -> None:
    assert out["methods"] == ["rfsq_ar+fixed:2", "rfsq_ar+jerk:0.02"] and out["episodes_per_method"] == [1]
    assert out["errors"] == 0 and out["timeline_chunks"] >= 1
    # a fixed depth decodes exactly that many layers, offline and in the episode
    assert out["fixed_depth_offline"] == {"rfsq_ar+fixed:1": 1.0, "rfsq_ar+fixed:2": 2.0}
    assert out["layers"]["rfsq_ar+fixed:2"] == 2.0 and 1.0 <= out["layers"]["rfsq_ar+jerk:0.02"] <= 4.0


def check_90_paper_tables(out: dict) -> None:
    assert out == {"measured_rows": 6, "cited_rows": 8}  # three methods on each of two suites


def check_91_paper_figures(out: dict) -> None:
    assert out["figures"] == [
        "91_fig1_pipeline",
        "91_fig2_ambiguity",
        "91_fig3_iso_latency",
        "91_fig4_acceptance",
        "91_success_per_task",
    ]
    assert out["manifest_entries"] > 20  # every figure and table of the smoke run


#: Per-notebook checks of the recorded outputs; a notebook without one only has to run.
CHECKS = {
    "00_environment_check": check_00_environment_check,
    "01_demonstrations": check_01_demonstrations,
    "02_action_tokenizers": check_02_action_tokenizers,
    "03_train_policies": check_03_train_policies,
    "04_load_models": check_04_load_models,
    "06_step_through_rsd": check_06_step_through_rsd,
    "07_latency": check_07_latency,
    "08_libero_comparison": check_08_libero_comparison,
    "09_ambiguity": check_09_ambiguity,
    "10_adaptive_depth": check_10_adaptive_depth,
    "90_paper_tables": check_90_paper_tables,
    "91_paper_figures": check_91_paper_figures,
    "05_libero_eval": check_05_libero_eval,
}


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """Run every notebook once under the smoke profile; {stem: (run, executed copy, folders)}."""
    root = tmp_path_factory.mktemp("smoke")
    runs = execute_profile(
        "smoke", build_dir=root / "build", figures_dir=root / "figures", results_dir=root / "results",
        progress=False, stop_on_error=False,
    )  # fmt: skip
    return {Path(r.notebook).stem: r for r in runs}, root


def recorded_outputs(executed: Path) -> dict:
    """The ``outputs`` dict displayed by the notebook's last code cell."""
    cells = [c for c in json.loads(executed.read_text())["cells"] if c["cell_type"] == "code"]
    for out in cells[-1]["outputs"]:
        if "data" in out and "text/plain" in out["data"]:
            return ast.literal_eval("".join(out["data"]["text/plain"]))
    raise AssertionError(f"{executed.name}: the last cell displays no outputs dict")


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_notebook_runs_under_smoke_and_records_sane_outputs(smoke, stem):
    runs, root = smoke
    run = runs[stem]
    assert run.ok, run.error
    outputs = recorded_outputs(Path(run.output))
    assert isinstance(outputs, dict) and outputs, "the outputs section records nothing"
    CHECKS.get(stem, lambda out: None)(outputs)


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_notebook_outputs_are_the_same_when_rerun(smoke, stem):
    runs, root = smoke
    if not runs[stem].ok:
        pytest.skip(f"{stem} did not run under smoke (see the test above)")
    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", "--nbval", runs[stem].output, "--nbval-current-env",
            "--nbval-sanitize-with", str(SANITIZE), "-p", "no:cacheprovider", "-q",
            "-c", "/dev/null", "--rootdir", str(root),
        ],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, f"nbval found cells whose output changed:\n{result.stdout[-6000:]}"
