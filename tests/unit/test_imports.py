"""``import rsdlib`` needs neither LIBERO nor a GPU: the simulator loads only where an env is made."""

import subprocess
import sys

HEAVY = ("libero", "robosuite", "mujoco")
LIGHT = (
    "rsdlib",
    "rsdlib.libero",
    "rsdlib.pipeline",
    "rsdlib.results",
    "rsdlib.tokenizers",
    "rsdlib.policies",
)


def test_importing_the_library_does_not_load_the_simulator():
    code = (
        "import importlib, sys\n"
        f"for m in {LIGHT!r}:\n"
        "    importlib.import_module(m)\n"
        f"    loaded = [h for h in {HEAVY!r} if h in sys.modules]\n"
        "    assert not loaded, f'import {m} loaded {loaded}'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
