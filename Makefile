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
# The bundled demo model (train/, issue 3) when it exists, else the random-weight Griffin fixture.
MODEL ?= $(if $(wildcard models/demo/config.json),models/demo,tests/data/griffin)
# griffin-server flags for `make serve` (e.g. SERVE_FLAGS="--http_port 9000 --backend cpu").
SERVE_FLAGS ?=
PYTHON ?= python3
# Every folder that holds pytest tests.
PYTEST_DIRS := $(wildcard tests/python tests/deploy train/tests)

.PHONY: all deps build test serve clean

all: build

deps:
	@deploy/install-deps.sh

# deploy/build.sh is the one build recipe (the Dockerfiles run it too).
build:
	@deploy/build.sh $(PRESET)

test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure --no-tests=error -j 2
	@if command -v $(PYTHON) >/dev/null 2>&1; then \
	  GRIFFIN_BIN=$(CURDIR)/$(BUILD_DIR)/bin GRIFFIN_CLI=$(CURDIR)/$(BUILD_DIR)/bin/griffin-cli \
	    $(PYTHON) -m pytest -q -rs $(PYTEST_DIRS); \
	else echo "pytest: no Python 3 here, Python tests skipped"; fi

# Runs griffin-server in the foreground on 127.0.0.1 (HTTP :8000, gRPC :50051); Ctrl-C drains.
serve: build
	@exec $(BUILD_DIR)/bin/griffin-server --model $(MODEL) $(SERVE_FLAGS)

clean:
	rm -rf build
