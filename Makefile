# speccascade-bench: set-up and the main jobs. `make demo` runs the offline default; `make test` the tests.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
TOY_DATA := data/toy/test.jsonl
TOY_LLM_DATA := data/toy_llm/test.jsonl

.PHONY: install browser docs demo toy-routers test test-fast test-mid test-compat lint toy-data toy-pair toy-chain toy-llm-data toy-llm-pair ci-run bench bench-quick bench-gpu clean-results

install: $(VENV)/.installed

# uv installs (about 50 s on 2 cores, where pip takes about 95). torch is pinned and installed first, on its own,
# from the CPU wheel on disk (TORCH_WHEELS, where there is one), then held to that version (`-c`), so that nothing
# resolves another (CUDA) build. --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set, an install without its
# .pyc files makes every process compile what it imports (the tests took a sixth longer, an MLflow server twice).
# `$(call venv_install,VENV,TORCH_VERSION,REQUIREMENTS)`: one recipe for this venv and test-compat's (a comma in
# REQUIREMENTS would split the call's arguments: pass it in a variable, as PACKAGE).
TORCH_WHEELS ?= /opt/wheels
UV_INSTALL = uv pip install --quiet --compile-bytecode $(if $(wildcard $(TORCH_WHEELS)),--find-links $(TORCH_WHEELS))
define venv_install
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet uv
	echo "torch==$(2)" > $(1)/torch-pin.txt
	$(1)/bin/$(UV_INSTALL) --python $(1)/bin/python torch==$(2)
	$(1)/bin/$(UV_INSTALL) --python $(1)/bin/python -c $(1)/torch-pin.txt $(3)
endef
PACKAGE = -e ".[dev,ray,mlflow,wandb,docs]"
$(VENV)/.installed: pyproject.toml
	$(call venv_install,$(VENV),2.13.0,$(PACKAGE))
	touch $@

$(TOY_DATA): | $(VENV)/.installed
	$(BIN)/scb toy-data --out data/toy

toy-data: $(TOY_DATA)

# Rebuild the demo pair shipped in speccascade_bench/toy/pair (about 40 minutes on 2 CPU cores). The
# verifier trains 3000 steps, then 1000 more from its last checkpoint with a restarted learning rate.
toy-pair: $(TOY_DATA)
	$(BIN)/scb finetune --config configs/toy/drafter.yaml --fresh
	$(BIN)/scb finetune --config configs/toy/verifier.yaml --fresh
	$(BIN)/scb finetune --config configs/toy/verifier.yaml --max-steps 4000

# The demo chain's middle model (speccascade_bench/toy/pair/middle; about 3 minutes on 2 CPU cores).
toy-chain: $(TOY_DATA)
	$(BIN)/scb finetune --config configs/toy/middle.yaml --fresh

$(TOY_LLM_DATA): | $(VENV)/.installed
	$(BIN)/scb toy-data --task arithmetic --out data/toy_llm --train 40000

toy-llm-data: $(TOY_LLM_DATA)

# Rebuild the decoder-only pair shipped in speccascade_bench/toy/llm_pair (byte-level Llamas on few-shot
# arithmetic documents; about an hour on 2 CPU cores, one model after the other, nearly all of it the verifier).
toy-llm-pair: $(TOY_LLM_DATA)
	$(BIN)/scb finetune --config configs/toy_llm/drafter.yaml --fresh
	$(BIN)/scb finetune --config configs/toy_llm/verifier.yaml --fresh

# Debian's Chromium for the HTML report's browser tests (tests/test_html_report.py), which Playwright drives; where
# it cannot be installed (no apt-get, not root) those tests are skipped with the reason.
browser:
	@if command -v chromium > /dev/null; then echo "chromium: $$(command -v chromium)"; \
	elif command -v apt-get > /dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q chromium > /dev/null 2>&1 || (apt-get update -q > /dev/null 2>&1 && \
		apt-get install -y -q chromium > /dev/null 2>&1) || echo "chromium could not be installed: browser tests skip"; \
	else echo "no apt-get as root: install Chromium (Debian: apt-get install chromium) to run the browser tests"; fi

# Learned deferral on both toy pairs: decode the validation splits (with per-position records), fit a sequence and
# a token router on each, then evaluate them against the plug-in rules on the test splits (about 30 minutes on 2
# CPU cores). The routers are in results/toy/routers, the recorded evaluations in results/toy/toy*_learned_t1.
toy-routers: $(TOY_DATA) $(TOY_LLM_DATA)
	$(BIN)/scb run --config configs/toy_router/fit_t1.yaml --fresh
	$(BIN)/scb run --config configs/toy_router/fit_llm_t1.yaml --fresh
	for pair in toy toy_llm; do fit=results/toy_router_fit_t1; [ $$pair = toy_llm ] && fit=results/toy_router_fit_llm_t1; \
		$(BIN)/scb fit-router $$fit --level sequence --out results/toy/routers/$${pair}_seq_t1.json && \
		$(BIN)/scb fit-router $$fit --level token --out results/toy/routers/$${pair}_token_t1.json || exit 1; done
	$(BIN)/scb run --config configs/toy_learned_t1.yaml --fresh
	$(BIN)/scb run --config configs/toy_llm_learned_t1.yaml --fresh

demo: $(TOY_DATA)
	$(BIN)/scb run --config configs/toy_t1.yaml
	$(BIN)/scb plot results/toy_t1
	$(BIN)/scb report results/toy_t1 --html

# The whole suite in two groups: all but the `serial` tests on two workers (pytest-xdist; each test file on one
# worker, so that its module fixtures are built once), then the `serial` ones alone (a time bound, Ray). Each
# prints its 15 slowest tests.
# The serial group collects only the files that mark tests `serial` (collecting the whole suite takes seconds).
TEST_WORKERS ?= 2
SERIAL_FILES = $(shell grep -l "mark.serial" tests/test_*.py)
test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not serial" --durations=15
	$(BIN)/python -m pytest -q -m serial --durations=15 $(SERIAL_FILES)

# The edit loop's subset (under 2 minutes on 2 cores): the layout, configs, the maths and the metrics, no model runs.
FAST_TESTS := tests/test_house.py tests/test_record.py tests/test_config.py tests/test_rules.py tests/test_metrics.py tests/test_prompts.py \
	tests/test_tradeoff.py tests/test_algorithms_doc.py tests/test_paper_configs.py tests/test_llm_configs.py tests/test_figures.py

test-fast: install
	$(BIN)/python -m pytest -q $(FAST_TESTS)

# The middle tier (about 3 minutes on 2 cores): the fast subset plus one model-running test per layer: decoding
# (exactness against the verifier), models (static caches), tasks (the code sandbox, a few-shot run's scores) and
# run + analysis (a CLI round trip of run, report and plot).
MID_TESTS := $(FAST_TESTS) tests/test_decoding.py::test_spec_decode_greedy_equals_verifier \
	tests/test_static_cache.py::test_static_caches_match_dynamic_caches_for_every_method \
	tests/test_sandbox.py::test_passing_solution tests/test_fewshot_run.py::test_fewshot_run_records_scores_shots_and_intervals \
	tests/test_cli.py::test_run_report_plot_round_trip
test-mid: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(MID_TESTS)

# The oldest transformers the suite declares (5.17.0, which the lent GPU machines have), in a venv of its own: the
# fast subset, then the loops on both families, static caches and compiled steps included (about 4 minutes).
# `make test-compat COMPAT_TORCH=2.11.0 COMPAT_VENV=.venv-torch211` runs the same with the oldest torch declared;
# PyPI's only torch 2.11.0 is a CUDA build whose libraries come to about 6 GB, so CI runs the default.
COMPAT_VENV ?= .venv-compat
COMPAT_TORCH ?= 2.13.0
COMPAT_TRANSFORMERS ?= 5.17.0
COMPAT_TESTS := $(FAST_TESTS) tests/test_decoding.py tests/test_host_reads.py tests/test_static_cache.py
test-compat: $(TOY_DATA)
	$(call venv_install,$(COMPAT_VENV),$(COMPAT_TORCH),-e ".[dev]" transformers==$(COMPAT_TRANSFORMERS))
	$(COMPAT_VENV)/bin/python -c "import torch, transformers; \
		assert torch.__version__.split('+')[0] == '$(COMPAT_TORCH)', torch.__version__; \
		assert transformers.__version__ == '$(COMPAT_TRANSFORMERS)', transformers.__version__"
	$(COMPAT_VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 $(COMPAT_TESTS)

# The documentation site (docs/, mkdocs.yml) into build/site; --strict: a broken link or a missing page fails. Its
# generated pages (configuration, methods, the CLI, the row's fields) are rendered from the code by docs/hooks.py.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

lint: install
	$(BIN)/ruff check speccascade_bench tests scripts

# CI-sized runs of the toy pairs (translation on the T5 pair, few-shot arithmetic on the decoder-only pair)
# whose output files are then checked.
ci-run: $(TOY_DATA) $(TOY_LLM_DATA)
	$(BIN)/scb run --config configs/ci.yaml --fresh
	$(BIN)/scb report results/ci --html > /dev/null
	$(BIN)/scb plot results/ci > /dev/null
	$(BIN)/python scripts/check_results.py results/ci
	$(BIN)/scb run --config configs/toy_llm_ci.yaml --fresh
	$(BIN)/scb report results/toy_llm_ci --html > /dev/null
	$(BIN)/scb plot results/toy_llm_ci > /dev/null
	$(BIN)/python scripts/check_results.py results/toy_llm_ci
	$(BIN)/scb run --config configs/toy_chain_ci.yaml --fresh
	$(BIN)/scb report results/toy_chain_ci --html > /dev/null
	$(BIN)/scb plot results/toy_chain_ci > /dev/null
	$(BIN)/python scripts/check_results.py results/toy_chain_ci

# The suite's loops against generate(), its static-cache compiled path and assisted generation on the
# toy pair; then per-token latency over output length and memory over examples (reports, no assertions).
bench: install
	$(BIN)/python scripts/bench_peers.py
	$(BIN)/python scripts/bench_peers.py --pair llm
	$(BIN)/python scripts/bench_scaling.py
	$(BIN)/python scripts/bench_scaling.py --cache static
	$(BIN)/python scripts/bench_chain.py

bench-quick: install
	$(BIN)/python scripts/bench_peers.py --quick
	$(BIN)/python scripts/bench_peers.py --quick --pair llm --compile-mode none
	$(BIN)/python scripts/bench_scaling.py --quick
	$(BIN)/python scripts/bench_chain.py --quick

# On a GPU: the whole timing protocol of docs/PERFORMANCE.md, outputs in results/gpu-<date>/.
bench-gpu: install
	PYTHON=$(BIN)/python bash scripts/gpu_protocol.sh

clean-results:
	rm -rf results/toy_t1 results/toy_t0 results/ci results/toy_llm_t0 results/toy_llm_t1 results/toy_llm_ci
