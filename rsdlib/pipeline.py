"""Run the numbered notebooks in order with papermill, on a named parameter profile.

Usage::

    python -m rsdlib.pipeline --profile default            # the main job
    python -m rsdlib.pipeline --profile smoke --only 00    # one notebook, tiny parameters
    python -m rsdlib.pipeline --list                       # notebooks and their parameters

Profiles live in one place, ``notebooks/profiles.yaml``: ``smoke`` (tiny, for tests),
``default`` (the main job on a 2-core CPU) and ``full`` (the published protocol, for a GPU
workstation or a cluster). Each maps a notebook's stem to parameter overrides. The runner
also hands every notebook the parameters in :data:`COMMON_PARAMETERS`, so every notebook
declares them. Executed copies go to ``build/<profile>/``; a failing notebook is named with
its failing cell, and its executed copy is kept for inspection.

``--set NB.PARAM=VALUE`` overrides are checked against the type each notebook declares before
anything runs, and make a run of their own: the notebooks get ``profile=<profile>-set-<hash>``
(``hash``: 8 hex digits of the overrides), which names every run folder they write and read, and
executed copies and figures go to ``build/<profile>-set-<hash>/``. A plain run of the profile
never sees an override run's folders; to point a reading notebook (90, 91) at the plain run's
results, set its run parameters, e.g. ``--set 91.comparison_run=default``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rsdlib.paths import BUILD_DIR, FIGURES_DIR, NOTEBOOKS_DIR, REPO_ROOT, RESULTS_DIR

PROFILES = ("smoke", "default", "full")
PROFILES_FILE = NOTEBOOKS_DIR / "profiles.yaml"
#: Parameters the runner gives every notebook; each notebook's parameters cell declares them.
COMMON_PARAMETERS = ("profile", "figures_dir", "results_dir")


class PipelineError(RuntimeError):
    """A notebook failed, or the profiles do not fit the notebooks."""


def list_notebooks(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in run order."""
    return sorted(p for p in notebooks_dir.glob("[0-9][0-9]_*.ipynb"))


def load_profiles(path: Path = PROFILES_FILE) -> dict[str, dict[str, dict[str, Any]]]:
    """Read the profiles file: ``{profile: {notebook_stem: {param: value}}}``."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError as err:
        raise PipelineError(f"profiles file {path} is missing") from err
    except yaml.YAMLError as err:
        raise PipelineError(f"profiles file {path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: the top level must map profile names to notebooks")
    for profile, notebooks in raw.items():
        if profile not in PROFILES:
            raise PipelineError(f"{path}: unknown profile {profile!r}; expected one of {PROFILES}")
        for stem, params in (notebooks or {}).items():
            if not isinstance(params, dict):
                raise PipelineError(f"{path}: {profile}.{stem} must map parameter names to values")
    return {p: {s: dict(v or {}) for s, v in (raw.get(p) or {}).items()} for p in PROFILES}


def declared_parameters(notebook: Path) -> dict[str, dict[str, Any]]:
    """The parameters a notebook's ``parameters`` cell declares (name -> papermill's info).

    Raises:
        PipelineError: the notebook has no cell tagged ``parameters``.
    """
    import nbformat
    import papermill as pm

    nb = nbformat.read(notebook, as_version=4)
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        raise PipelineError(f"{notebook.name} has no cell tagged 'parameters'")
    return {p["name"]: p for p in pm.inspect_notebook(str(notebook)).values()}


def check_profiles(
    profiles: dict[str, dict[str, dict[str, Any]]] | None = None,
    notebooks: list[Path] | None = None,
) -> list[str]:
    """Everything wrong between the profiles and the notebooks, as messages (empty: all fine).

    Catches a profile naming a notebook that does not exist, a profile handing a notebook a
    parameter it does not declare (papermill would only warn), and a notebook that lacks the
    common parameters or a ``parameters`` cell.
    """
    profiles = load_profiles() if profiles is None else profiles
    notebooks = list_notebooks() if notebooks is None else notebooks
    by_stem = {nb.stem: nb for nb in notebooks}
    problems: list[str] = []
    declared: dict[str, dict[str, dict[str, Any]]] = {}
    for stem, nb in by_stem.items():
        try:
            declared[stem] = declared_parameters(nb)
        except PipelineError as err:
            problems.append(str(err))
            continue
        missing = [p for p in COMMON_PARAMETERS if p not in declared[stem]]
        if missing:
            problems.append(f"{nb.name} does not declare the common parameters {missing}")
    for profile, per_notebook in profiles.items():
        for stem, params in per_notebook.items():
            if stem not in by_stem:
                problems.append(f"profile {profile!r} names notebook {stem!r}, which does not exist")
                continue
            unknown = sorted(set(params) - set(declared.get(stem, params)))
            if unknown:
                problems.append(f"profile {profile!r} hands {stem} parameters it does not declare: {unknown}")
            for name, value in params.items():
                info = declared.get(stem, {}).get(name)
                wrong = info and type_problem(info["inferred_type_name"], value)
                if wrong:
                    problems.append(f"profile {profile!r} hands {stem} {name}={value!r}: {wrong}")
    return problems


#: What a value must be for a parameter declared with each type name (a bool is no number here).
_TYPE_CHECKS: dict[str, Any] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "list": lambda v: isinstance(v, list),
    "tuple": lambda v: isinstance(v, list),  # YAML has no tuples; papermill writes a list
    "dict": lambda v: isinstance(v, dict),
    "none": lambda v: v is None,
}


def _type_names(type_name: str) -> list[str] | None:
    """``"Optional[list[int]]"`` -> ``["list", "none"]``; None for a type this module cannot check."""
    text = type_name.strip()
    optional = re.fullmatch(r"(?:typing\.)?Optional\[(.*)\]", text)
    parts = [optional.group(1), "None"] if optional else text.split("|")
    names = [p.strip().split("[", 1)[0].removeprefix("typing.").lower() for p in parts]
    return names if all(n in _TYPE_CHECKS for n in names) else None


def type_problem(type_name: str, value: Any) -> str | None:
    """Why ``value`` does not fit a parameter declared as ``type_name`` (None: it fits).

    ``type_name`` is what papermill read off the parameters cell (``int``, ``list[str]``,
    ``Optional[float]``...); an unannotated parameter (papermill's ``"None"``) or a type this
    module does not know is not checked.
    """
    names = None if type_name == "None" else _type_names(type_name)
    if names is None or any(_TYPE_CHECKS[n](value) for n in names):
        return None
    return f"expected {type_name}, got {type(value).__name__}"


@dataclass
class NotebookRun:
    """The outcome of one notebook in a pipeline run."""

    notebook: str
    output: str
    seconds: float
    ok: bool
    error: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


def run_notebook(
    notebook: Path,
    output: Path,
    parameters: dict[str, Any],
    *,
    kernel: str = "python3",
    progress: bool = True,
    timeout: int | None = None,
) -> NotebookRun:
    """Execute one notebook with papermill, in the repository root, keeping the executed copy."""
    import papermill as pm

    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        pm.execute_notebook(
            str(notebook), str(output), parameters=parameters, kernel_name=kernel,
            cwd=str(REPO_ROOT), progress_bar=progress, execution_timeout=timeout,
        )  # fmt: skip
    except pm.PapermillExecutionError as err:
        index, source = _failing_cell(output)
        message = (
            f"{notebook.name} failed in cell {index} (In [{err.exec_count}]): {err.ename}: {err.evalue}\n"
            f"  cell starts: {source}\n  executed copy kept at {output}"
        )
        return NotebookRun(
            notebook.name, str(output), time.perf_counter() - start, False, message, parameters
        )
    return NotebookRun(notebook.name, str(output), time.perf_counter() - start, True, None, parameters)


def _failing_cell(executed: Path) -> tuple[int | str, str]:
    """(index among the notebook's own cells, first source line) of the cell that raised.

    papermill adds a banner cell (and an injected-parameters cell) to the executed copy, so
    the index counts only the cells the notebook itself has.
    """
    try:
        cells = json.loads(executed.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return "?", "<executed copy unreadable>"
    own = [
        c
        for c in cells
        if not {"papermill-error-cell-tag", "injected-parameters"} & set(c["metadata"].get("tags", []))
    ]
    for i, cell in enumerate(own):
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            lines = "".join(cell["source"]).strip().splitlines()
            return i, lines[0][:120] if lines else "<empty cell>"
    return "?", "<no cell with an error output>"


def execute_profile(
    profile: str,
    *,
    only: list[str] | None = None,
    build_dir: Path | None = None,
    figures_dir: Path | None = None,
    results_dir: Path = RESULTS_DIR,
    kernel: str = "python3",
    progress: bool = True,
    stop_on_error: bool = True,
    settings: Sequence[str] = (),
) -> list[NotebookRun]:
    """Run the notebooks in order for ``profile`` and return how each went (see :func:`run_pipeline`)."""
    if profile not in PROFILES:
        raise PipelineError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    profiles = load_profiles()
    overridden = parse_settings(settings)
    for stem, values in overridden.items():
        profiles[profile].setdefault(stem, {}).update(values)
    problems = check_profiles(profiles)
    if problems:
        raise PipelineError("profiles do not fit the notebooks:\n  " + "\n  ".join(problems))
    notebooks = list_notebooks()
    if only:
        notebooks = [nb for nb in notebooks if any(nb.stem == o or nb.stem.startswith(o + "_") for o in only)]
        if not notebooks:
            raise PipelineError(f"no notebook matches {only}; see `python -m rsdlib.pipeline --list`")
    # Overrides make a run of their own, so a failed or odd one never lands in the plain run's folders.
    run_name = override_run_name(profile, overridden)
    build_dir = Path(build_dir or BUILD_DIR / run_name)
    if figures_dir is None:
        figures_dir = FIGURES_DIR if run_name == profile else build_dir / "figures"
    for folder in (figures_dir, results_dir):  # notebooks write into them without making them
        Path(folder).mkdir(parents=True, exist_ok=True)
    if run_name != profile:
        print(
            f"--set overrides: this run is {run_name!r} (its run folders are named after it); executed "
            f"copies in {build_dir}, figures in {figures_dir}. The plain {profile!r} run is untouched.",
            flush=True,
        )
    overrides = profiles[profile]
    runs: list[NotebookRun] = []
    for i, nb in enumerate(notebooks, 1):
        params = {"profile": run_name, "figures_dir": str(figures_dir), "results_dir": str(results_dir)}
        params |= overrides.get(nb.stem, {})
        print(f"[{i}/{len(notebooks)}] {nb.name} ({run_name})", flush=True)
        run = run_notebook(nb, build_dir / nb.name, params, kernel=kernel, progress=progress)
        runs.append(run)
        print(f"    {'ok' if run.ok else 'FAILED'} in {run.seconds:.1f} s", flush=True)
        if not run.ok and stop_on_error:
            break
    (build_dir / "pipeline.json").write_text(json.dumps([r.__dict__ for r in runs], indent=2) + "\n")
    return runs


def parse_setting(text: str) -> tuple[str, str, Any]:
    """``"08.executor=ray"`` -> ``("08_libero_comparison", "executor", "ray")``: a notebook (its
    stem or number), a parameter, and a value read as YAML (``[0, 1]``, ``2``, ``true``, text).

    Raises:
        PipelineError: not ``NOTEBOOK.PARAMETER=VALUE``, or no single notebook matches.
    """
    target, eq, raw = text.partition("=")
    stem, dot, name = target.partition(".")
    if not (eq and dot and stem and name):
        raise PipelineError(f"--set {text!r}: write NOTEBOOK.PARAMETER=VALUE, e.g. 08.executor=ray")
    matches = [nb.stem for nb in list_notebooks() if nb.stem == stem or nb.stem.startswith(stem + "_")]
    if len(matches) != 1:
        raise PipelineError(f"--set {text!r}: {stem!r} matches {matches or 'no notebook'}; see --list")
    return matches[0], name, yaml.safe_load(raw) if raw.strip() else ""


def parse_settings(settings: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Parse ``--set`` overrides and check each value against its notebook's declared type.

    A ``str`` parameter takes the text as written (``03.run=2024`` is ``"2024"``, not a number),
    and a ``float`` parameter also takes YAML's unquoted exponents (``1e-3``). Parameters a
    notebook does not declare are left to :func:`check_profiles`, which names them.

    Returns:
        ``{notebook stem: {parameter: value}}``.

    Raises:
        PipelineError: a malformed setting, a parameter the runner sets itself, or a value of the
            wrong type; every problem is listed, each naming notebook, parameter, type and value.
    """
    notebooks = {nb.stem: nb for nb in list_notebooks()}
    declared: dict[str, dict[str, dict[str, Any]]] = {}
    out: dict[str, dict[str, Any]] = {}
    problems = []
    for text in settings:
        stem, name, value = parse_setting(text)
        if stem not in declared:
            declared[stem] = declared_parameters(notebooks[stem])
        info = declared[stem].get(name)
        if name in COMMON_PARAMETERS:
            problems.append(
                f"--set {text!r}: the runner sets {name!r} for every notebook; use --profile, "
                "--figures-dir or --results-dir"
            )
            continue
        if info is not None:
            value = _coerce(info["inferred_type_name"], value, text.partition("=")[2].strip())
            wrong = type_problem(info["inferred_type_name"], value)
            if wrong:
                problems.append(
                    f"--set {text!r}: {stem} declares {name}: {info['inferred_type_name']} "
                    f"(default {info['default']}), got {value!r} ({type(value).__name__})"
                )
                continue
        out.setdefault(stem, {})[name] = value
    if problems:
        raise PipelineError("bad --set values, nothing was run:\n  " + "\n  ".join(problems))
    return out


def _coerce(type_name: str, value: Any, raw: str) -> Any:
    """A YAML value as the declared type would have it, where YAML read the text otherwise."""
    if type_name == "str" and value is not None and not isinstance(value, str | list | dict):
        return raw  # numbers, booleans and dates YAML made of a name or folder
    if type_name == "float" and isinstance(value, str):
        try:
            return float(value)  # PyYAML reads 1e-3 (no dot) as text
        except ValueError:
            return value
    return value


def override_run_name(profile: str, overrides: dict[str, dict[str, Any]]) -> str:
    """The ``profile`` handed to notebooks: the profile itself, or ``<profile>-set-<hash>`` with overrides.

    The hash (8 hex digits) depends only on the overrides, not on their order, so repeating an
    override run resumes its own folders.
    """
    if not any(overrides.values()):
        return profile
    canonical = json.dumps(overrides, sort_keys=True, default=str)
    return f"{profile}-set-{hashlib.sha256(canonical.encode()).hexdigest()[:8]}"


def run_pipeline(profile: str, **kwargs: Any) -> list[NotebookRun]:
    """Run the notebooks in order for ``profile``; raise if any fails.

    Args:
        profile: ``smoke``, ``default`` or ``full``.
        only: notebook stems or number prefixes to run (e.g. ``["00", "02_action_tokenizers"]``).
        build_dir: where executed copies go (default ``build/<profile>``, or
            ``build/<profile>-set-<hash>`` with ``settings``, see :func:`override_run_name`).
        figures_dir: handed to every notebook (default ``figures/``, or ``<build_dir>/figures``
            with ``settings``, so an override run leaves the paper's figures alone).
        results_dir: handed to every notebook.
        kernel: Jupyter kernel name.
        progress: show papermill's per-cell progress bar.
        stop_on_error: stop at the first failing notebook (later ones build on earlier ones).
        settings: ``NOTEBOOK.PARAMETER=VALUE`` overrides on top of the profile (:func:`parse_setting`),
            checked against the notebooks' parameters and their types before anything runs; they
            make a run of their own, named ``<profile>-set-<hash>`` (see the module docstring).

    Raises:
        PipelineError: unknown profile, profiles or settings that do not fit the notebooks, or a
            failing notebook (the message names it, its failing cell, and where its executed copy is).
    """
    runs = execute_profile(profile, **kwargs)
    failed = [r for r in runs if not r.ok]
    if failed:
        raise PipelineError("\n".join(r.error or r.notebook for r in failed))
    return runs


def _describe() -> str:
    lines = []
    profiles = load_profiles()
    for nb in list_notebooks():
        lines.append(nb.name)
        for name, info in declared_parameters(nb).items():
            overridden = [p for p in PROFILES if name in profiles[p].get(nb.stem, {})]
            lines.append(
                f"    {name}: {info['inferred_type_name']} = {info['default']}"
                + (f"   (set by: {', '.join(overridden)})" if overridden else "")
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsdlib.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=PROFILES, default="default")
    parser.add_argument("--only", nargs="*", help="notebook stems or number prefixes, e.g. 00 02")
    parser.add_argument(
        "--build-dir", type=Path, help="where executed notebooks go (default build/<profile>)"
    )
    parser.add_argument(
        "--figures-dir", type=Path, help="where figures go (default figures/; with --set: in the build dir)"
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--kernel", default="python3")
    parser.add_argument("--list", action="store_true", help="list notebooks and their parameters, then exit")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="NB.PARAM=VALUE",
        help="override a parameter on top of the profile, e.g. --set 08.executor=ray 08.ray_address=auto",
    )
    args = parser.parse_args(argv)
    if args.list:
        print(_describe())
        return 0
    start = time.perf_counter()
    try:
        runs = run_pipeline(
            args.profile, only=args.only, build_dir=args.build_dir,
            figures_dir=args.figures_dir, results_dir=args.results_dir, kernel=args.kernel, settings=args.set,
        )  # fmt: skip
    except PipelineError as err:
        print(f"\npipeline failed:\n{err}", file=sys.stderr)
        return 1
    print(f"\n{len(runs)} notebook(s) ran on profile {args.profile!r} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
