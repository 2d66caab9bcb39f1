# The workbench's commands. `make paper` runs the main job, `make test` the tests.
PY := .venv/bin/python
export MUJOCO_GL ?= egl
export PYTHONUNBUFFERED := 1
PROFILE ?= default

.PHONY: setup paper notebooks lab test test-unit lint bench-env bench-tokenizers bench-decoding strip clean

setup: .venv/.installed

.venv/.installed: requirements.txt pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

## The main job: every notebook in order on the default profile; figures/ and results/ are rewritten.
paper: setup
	$(PY) -m rsdlib.pipeline --profile $(PROFILE)

## Any profile: make notebooks PROFILE=smoke
notebooks: paper

## JupyterLab on the workbench (open notebooks/06_step_through_rsd.ipynb first: it needs only the shipped models).
## Headless or remote: make lab LAB_ARGS="--no-browser --ip=0.0.0.0"
lab: setup
	$(PY) -m jupyter lab --notebook-dir=. notebooks/06_step_through_rsd.ipynb $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

## Unit tests, then a smoke run of every notebook (papermill) and an nbval re-run of the executed copies.
test: setup
	$(PY) -m pytest

test-unit: setup
	$(PY) -m pytest tests/unit -m "not libero"

lint: setup
	$(PY) -m ruff check rsdlib tests scripts
	$(PY) -m ruff format --check rsdlib tests scripts

## Env steps per second: no rendering, default and fast rendering; 1 and 2 processes.
bench-env: setup
	$(PY) scripts/bench_env.py

## Tokenizer encode/decode chunks per second (batch 1 and 256).
bench-tokenizers: setup
	$(PY) scripts/bench_tokenizers.py

## Prefix pass, block pass and full decode per method; RSD against plain decoding, side by side.
bench-decoding: setup
	$(PY) scripts/bench_decoding.py

## Strip outputs, execution counts and widget state from the committed notebooks.
strip: setup
	.venv/bin/nbstripout notebooks/*.ipynb

clean:
	rm -rf build .pytest_cache
