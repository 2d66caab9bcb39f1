#!/usr/bin/env bash
# Set up the workbench on a fresh machine: system libraries for headless rendering, a
# virtual environment in .venv with every pinned dependency, and rsdlib installed editable.
# Idempotent: re-running only installs what changed (make calls it when requirements change).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv

# 1. System libraries. MuJoCo renders headless through EGL (Mesa's llvmpipe on a CPU); osmesa
#    (libosmesa6) is the fallback, installed alongside when EGL has to be installed. Debian/Ubuntu names.
missing=()
for lib in libEGL.so.1 libGL.so.1; do
  ldconfig -p 2>/dev/null | grep -q "$lib" || missing+=("$lib")
done
if [ ${#missing[@]} -gt 0 ]; then
  pkgs="libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libosmesa6"
  echo "setup: render libraries missing (${missing[*]}); installing: $pkgs"
  if command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || command -v sudo >/dev/null; }; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
    ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $pkgs) \
      || echo "setup: WARNING: could not apt-get install $pkgs; rendering needs EGL (libegl1 libegl-mesa0) or osmesa (libosmesa6)." >&2
  else
    echo "setup: WARNING: cannot install $pkgs here (no apt-get or no root); install them, or rendering will fail." >&2
  fi
fi

# 2. The virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
pip_install() {
  # Quiet, minus the warnings some pip configurations print for every local index they skip.
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
# torch first and alone, so that no other package's range pulls a multi-GB CUDA build.
pip_install "$(grep -E '^torch==' requirements.txt)"
pip_install -r requirements.txt
pip_install --no-deps -e .
"$VENV/bin/python" -m pip check
echo "setup: done ($("$VENV/bin/python" -c 'import torch, robosuite, mujoco; print("torch", torch.__version__, "robosuite", robosuite.__version__, "mujoco", mujoco.__version__)' 2>/dev/null | tail -1))"
