"""Where the repository's folders are, so notebooks and scripts agree on them."""

from __future__ import annotations

import os
from pathlib import Path

#: The checkout whose ``rsdlib/`` is running (its commit is what provenance records).
CODE_ROOT = Path(__file__).resolve().parent.parent
#: The repository root: data, checkpoints, results and figures. ``RSD_ROOT`` overrides it (a
#: snapshot of the code can then run on the main checkout's files).
REPO_ROOT = Path(os.environ.get("RSD_ROOT", CODE_ROOT))
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
FIGURES_DIR = REPO_ROOT / "figures"
RESULTS_DIR = REPO_ROOT / "results"
BUILD_DIR = REPO_ROOT / "build"


def repo_path(path: str | os.PathLike) -> Path:
    """``path`` itself if absolute, else relative to the repository root.

    Notebooks use this for their ``figures_dir``/``results_dir`` parameters, so they write to
    the same place whether papermill, nbval or JupyterLab (cwd ``notebooks/``) runs them.
    """
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path
