#!/usr/bin/env bash
# The pure-Python packages gpu_check.sh needs beyond torch and transformers, as wheels in .whl/,
# for a GPU machine that reaches no package registry (run this where pip works, then take .whl/
# along with the tree; gpu_check.sh installs them into its results folder when they are missing).
#
#   bash scripts/gpu_wheels.sh        # versions as installed in .venv (make setup)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
# vector-quantize-pytorch (the RFSQ tokenizer) and what it imports; all pure Python.
names='^(vector-quantize-pytorch|einx|loguru|torch-einops-utils|frozendict|einops)=='
pins=$("$PYTHON" -m pip freeze 2>/dev/null | grep -iE "$names" || true)
if [ "$(echo "$pins" | grep -c .)" -ne 6 ]; then
    echo "gpu_wheels: $PYTHON lacks some of vector-quantize-pytorch einx loguru torch-einops-utils frozendict einops; run make setup first" >&2
    exit 1
fi
mkdir -p .whl
# shellcheck disable=SC2086
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d .whl $pins
echo "gpu_wheels: $(ls .whl | wc -l) wheels in .whl/ ($(du -sh .whl | cut -f1)): $(echo $pins)"
