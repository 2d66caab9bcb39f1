#!/usr/bin/env bash
# The GPU measurements in one go: decoding latency, RSD on the shipped models, main-pass costs.
#
#   bash scripts/gpu_check.sh [OUT]
#
# Runs, each step logged to OUT/<step>.log and echoed, a failed step reported and the next run:
#   1. nvidia-smi (if present)                                       -> nvidia-smi.log
#   2. provenance: git commit, python/torch/transformers, GPU        -> provenance.txt
#   3. scripts/bench_decoding.py, every method, tiny + default sizes -> bench_decoding.json  (decoding)
#   4. scripts/bench_rsd.py on checkpoints/lowdim/libero_spatial     -> bench_rsd.json       (rsd)
#   5. scripts/bench_graphed.py: eager vs CUDA graphs, side by side  -> bench_graphed.json   (graphed)
#   6. scripts/bench_pass_costs.py, sizes to ~1B, fp32 and bf16      -> pass_costs.json      (pass_costs)
# then OUT/summary.txt; exits non-zero if any step failed. About 4 minutes on one GPU (each
# step has a time limit: 6 minutes in all). A step past its limit gets SIGABRT, and Python's
# fault handler prints where every thread was into its log. Needs torch with CUDA,
# transformers, vector-quantize-pytorch and this tree; no registry access, no LIBERO. Where
# vector-quantize-pytorch is missing and .whl/ holds the wheels scripts/gpu_wheels.sh downloads,
# they are installed into OUT/site first.
#
# OUT: the argument, else $OUT, else results/gpu_check/<date>-<host>.
# PYTHON: the interpreter (default .venv/bin/python if it exists, else python3).
# GPU_CHECK_DEVICE=cpu runs everything on the CPU (a smoke test of this script);
# GPU_CHECK_QUICK=1 shrinks every run to seconds.
# GPU_CHECK_STEPS="graphed pass_costs" runs only the named steps 3-6 (default: all).
set -u -o pipefail

out=${1:-${OUT:-results/gpu_check/$(date +%Y-%m-%d_%H%M%S)-${HOSTNAME:-$(uname -n)}}}
mkdir -p "$out" && out=$(cd "$out" && pwd) # absolute: the steps run from the repository root
cd "$(dirname "$0")/.."
repo=$(pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1
device=${GPU_CHECK_DEVICE:-cuda}
if ! "$PYTHON" -c "import vector_quantize_pytorch" 2>/dev/null; then
    if ls .whl/vector_quantize_pytorch-*.whl >/dev/null 2>&1; then
        "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --target "$out/site" .whl/*.whl \
            && export PYTHONPATH="$out/site:$PYTHONPATH" && echo "installed $(ls .whl | wc -l) wheels from .whl/"
    else
        echo "vector-quantize-pytorch is missing: run scripts/gpu_wheels.sh where pip works and bring .whl/" >&2
    fi
fi
quick=${GPU_CHECK_QUICK:-0}

if [ "$quick" = 1 ]; then
    decoding_args=(--sizes tiny --runs 3 --warmup 1 --distill-steps 2)
    rsd_args=(--chunks 8 --latency-chunks 4 --gammas 2 --rules exact --fixed rfsq_ar rsd_head:g2:exact)
    graphed_args=(--sizes shipped --dtypes float32 --chunks 4 --runs 3 --warmup 1)
    pass_cost_args=(--sizes h128 --runs 3 --warmup 1)
else
    decoding_args=(--sizes tiny default --runs 20 --warmup 3)
    rsd_args=(--chunks 64 --latency-chunks 20 --fixed rfsq_ar rsd_head:g1:exact rsd_head:g2:exact rsd_head:g3:exact)
    graphed_args=(--sizes shipped h1024 --dtypes float32 bfloat16 --chunks 16 --runs 30 --warmup 3)
    pass_cost_args=(--runs 20 --warmup 3)
fi

failed=()
summary=()
# step LOG LIMIT_S CMD...: run CMD with a time limit, its output to the terminal and OUT/LOG.
step() {
    local log=$out/$1 limit=$2 start=$SECONDS rc
    shift 2
    echo "== ${log##*/}: $*" | tee "$log"
    timeout --signal=ABRT --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    local took="$((SECONDS - start)) s"
    if [ "$rc" -eq 0 ]; then
        summary+=("ok      $(basename "$log") ($took)")
    else
        [ "$rc" -eq 124 ] && took="$took, timed out after $limit s"
        echo "!! step failed with exit code $rc ($took): see $log" | tee -a "$log"
        failed+=("$(basename "$log")")
        summary+=("FAILED  $(basename "$log") (exit $rc, $took)")
    fi
}

if command -v nvidia-smi >/dev/null; then
    step nvidia-smi.log 10 nvidia-smi
else
    echo "nvidia-smi not found: skipped" | tee "$out/nvidia-smi.log"
fi

commit=$(git rev-parse HEAD 2>/dev/null || echo "unknown (not a git checkout)")
changed=$(git status --porcelain 2>/dev/null | wc -l)
step provenance.txt 30 "$PYTHON" - "$device" "$commit" "$changed" <<'EOF'
import json, platform, sys
from datetime import datetime, timezone

import torch
import transformers

from rsdlib.results import device_info

device, commit, changed = sys.argv[1:]
print(f"date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
print(f"host: {platform.node()}")
print(f"git commit: {commit} ({changed} files differ from it)")
print(f"python: {platform.python_version()} ({sys.executable})")
print(f"torch: {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})")
print(f"transformers: {transformers.__version__}")
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print(f"gpu: {props.name}, {props.total_memory / 2**30:.1f} GiB, compute {props.major}.{props.minor}, "
          f"bf16 {torch.cuda.is_bf16_supported()}")
print(f"device_info: {json.dumps(device_info())}")
if device.startswith("cuda") and not torch.cuda.is_available():
    sys.exit("torch sees no CUDA device: install a CUDA build of torch, or set GPU_CHECK_DEVICE=cpu")
EOF

# wanted NAME: whether GPU_CHECK_STEPS (a list of names; empty: all) asks for step NAME.
wanted() { [ -z "${GPU_CHECK_STEPS:-}" ] || [[ " $GPU_CHECK_STEPS " == *" $1 "* ]]; }
wanted decoding && step bench_decoding.log 60 "$PYTHON" scripts/bench_decoding.py --device "$device" \
    "${decoding_args[@]}" --out "$out/bench_decoding.json"
wanted rsd && step bench_rsd.log 60 "$PYTHON" scripts/bench_rsd.py --models checkpoints/lowdim/libero_spatial \
    --device "$device" "${rsd_args[@]}" --out "$out/bench_rsd.json"
wanted graphed && step bench_graphed.log 110 "$PYTHON" scripts/bench_graphed.py --device "$device" \
    "${graphed_args[@]}" --out "$out/bench_graphed.json"
wanted pass_costs && step pass_costs.log 90 "$PYTHON" scripts/bench_pass_costs.py --device "$device" \
    --dtypes float32 bfloat16 "${pass_cost_args[@]}" --out "$out/pass_costs.json"

printf '%s\n' "device $device, quick $quick, out $out" "${summary[@]}" | tee "$out/summary.txt"
if [ ${#failed[@]} -gt 0 ]; then
    echo "${#failed[@]} step(s) failed: ${failed[*]}" | tee -a "$out/summary.txt"
    exit 1
fi
