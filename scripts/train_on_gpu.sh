#!/usr/bin/env bash
# Train every shipped model on one GPU from a prepared folder, in parallel processes.
#
#   scripts/train_on_gpu.sh PREPARED OUT MINUTES [MODEL...]
#
# MODEL...: the models to train (default: all six). TRUNK=tiny gives the main policy and the
# baselines the tiny drafter's trunk (small checkpoints, as for the ambiguity scene).
#
# The models are small, so one of them leaves a GPU mostly idle: the main policy (then the head
# drafter, which reads its trunk), the three baselines and the tiny drafter train side by side,
# each for the steps that fit in MINUTES (timed on the machine first; the head drafter gets a
# quarter of that). A few steps of every model run first, so a broken set-up fails in seconds.
# Logs go to OUT/<model>.log. Needs python3 with torch, transformers, tokenizers, safetensors,
# tqdm, numpy and pillow (not LIBERO). Set PYTHON to choose the interpreter.
set -euo pipefail
prepared=$1
out=$2
minutes=$3
shift 3
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(rfsq_ar head_drafter rfsq_parallel l1_regression fast_ar tiny_policy)
py=${PYTHON:-python3}
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=2
train() { "$py" scripts/train_policies.py train --prepared "$prepared" --trunk "${TRUNK:-main}" "$@"; }
wants() { [[ " ${models[*]} " == *" $1 "* ]]; }

mkdir -p "$(dirname "$out")"
echo "== smoke: 3 steps of every model"
train --out "$out.smoke" --models "${models[@]}" --steps 3 --batch-size 8 >"$out.smoke.log" 2>&1 || { tail -30 "$out.smoke.log"; exit 1; }
rm -rf "$out.smoke"

echo "== training for about $minutes min per model"
mkdir -p "$out"
head_minutes=$(awk "BEGIN { print $minutes / 4 }")
# The step counts come from a timing taken while the other processes start up; if sharing the GPU
# makes steps slower than timed, a deadline stops each model (with a checkpoint) at 1.3x its time.
limit=$(awk "BEGIN { print $minutes * 1.3 }")
head_limit=$(awk "BEGIN { print $head_minutes * 1.3 + 0.5 }")
pids=()
if wants rfsq_ar; then
	(train --out "$out" --models rfsq_ar --minutes "$minutes" --deadline-minutes "$limit" &&
		if wants head_drafter; then
			train --out "$out" --models head_drafter --minutes "$head_minutes" --deadline-minutes "$head_limit"
		fi) >"$out/rfsq_ar.log" 2>&1 &
	pids+=($!)
fi
for model in rfsq_parallel l1_regression fast_ar tiny_policy; do
	wants "$model" || continue
	train --out "$out" --models "$model" --minutes "$minutes" --deadline-minutes "$limit" >"$out/$model.log" 2>&1 &
	pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for log in "$out"/*.log; do echo "-- $log"; tail -c 600 "$log" | tr '\r' '\n' | tail -3; done
exit $status
