# The two commands of the quick start:
#   make serve   install dependencies, build, and run the bundled model
#   make test    install dependencies, build, and run every test (ctest, then pytest)
# Everything installs through deploy/install-deps.sh, the one list of dependencies.

SHELL := /bin/bash
# nvcc may live outside PATH on a fresh CUDA install.
export PATH := $(PATH):/usr/local/cuda/bin
# The CUDA preset when a CUDA compiler exists (the CUDA code compiles even without a GPU), else CPU.
PRESET ?= $(shell command -v nvcc >/dev/null 2>&1 && echo cuda || echo cpu)
BUILD_DIR := build/$(PRESET)
# Until the trained demo model lands (train/, issue 3), serve the random-weight Griffin fixture.
MODEL ?= tests/data/griffin
PROMPT ?= The licence
PYTHON ?= python3
# Every folder that holds pytest tests.
PYTEST_DIRS := $(wildcard tests/python train/tests)

.PHONY: all deps configure build test serve clean

all: build

deps:
	@deploy/install-deps.sh

configure: deps
	@cmake --preset $(PRESET) >/dev/null

build: configure
	@cmake --build --preset $(PRESET)

test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure --no-tests=error -j 2
	@if command -v $(PYTHON) >/dev/null 2>&1; then \
	  GRIFFIN_BIN=$(CURDIR)/$(BUILD_DIR)/bin GRIFFIN_CLI=$(CURDIR)/$(BUILD_DIR)/bin/griffin-cli \
	    $(PYTHON) -m pytest -q $(PYTEST_DIRS); \
	else echo "pytest: no Python 3 here, Python tests skipped"; fi

serve: build
	@$(BUILD_DIR)/bin/griffin-cli info --model $(MODEL)
	@$(BUILD_DIR)/bin/griffin-cli generate --model $(MODEL) --prompt "$(PROMPT)" \
	  --max_tokens 64 --temperature 0.8 --top_p 0.95 --seed 1

clean:
	rm -rf build
