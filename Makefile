# The two commands of the quick start (README.md):
#   make serve   install what the server needs, build griffin-server, serve the bundled model
#   make test    install everything (test libraries, Python packages in .venv), build, run every test
# Everything installs through deploy/install-deps.sh and builds through deploy/build.sh.
#
# Variables (make VAR=value ...):
#   MODEL=DIR            model folder to serve (default models/demo)
#   HOST=ADDR            bind address (default 127.0.0.1; 0.0.0.0 for every interface)
#   HTTP_PORT=N          OpenAI HTTP API, /health, /ready, /metrics (default 8000)
#   GRPC_PORT=N          gRPC (default 50051)
#   SERVE_FLAGS="..."    any other griffin-server flags (bin/griffin-server --help lists them)
#   PRESET=NAME          CMake preset (default: serve uses cuda only when a GPU is visible and nvcc
#                        exists; test uses cuda whenever nvcc exists, else cpu)
#   GRIFFIN_VENV=DIR     the Python virtual environment (default .venv); PYTHON=python3 makes it

SHELL := /bin/bash
# nvcc may live outside PATH on a fresh CUDA install.
export PATH := $(PATH):/usr/local/cuda/bin
HAVE_NVCC := $(shell command -v nvcc >/dev/null 2>&1 && echo yes)
HAVE_GPU := $(shell nvidia-smi -L 2>/dev/null | grep -q '^GPU' && echo yes)
# Serving builds CUDA only where it can run; tests compile it wherever a CUDA compiler exists
# (the GPU tests then say they skipped for want of a GPU).
SERVE_PRESET := $(or $(PRESET),$(if $(and $(HAVE_NVCC),$(HAVE_GPU)),cuda,cpu))
TEST_PRESET := $(or $(PRESET),$(if $(HAVE_NVCC),cuda,cpu))
# The bundled demo model (train/, issue 3) when it exists, else the random-weight Griffin fixture.
MODEL ?= $(if $(wildcard models/demo/config.json),models/demo,tests/data/griffin)
HOST ?= 127.0.0.1
HTTP_PORT ?= 8000
GRPC_PORT ?= 50051
SERVE_FLAGS ?=
export GRIFFIN_VENV ?= $(CURDIR)/.venv
VENV_PYTHON := $(GRIFFIN_VENV)/bin/python
# Every folder that holds pytest tests.
PYTEST_DIRS := $(wildcard tests/python tests/deploy tests/docs train/tests)

.PHONY: all deps build test serve clean

all: build

deps:
	@deploy/install-deps.sh --test

# deploy/build.sh is the one build recipe (the Dockerfiles run it too).
build:
	@deploy/build.sh $(TEST_PRESET)

test: build
	@cd build/$(TEST_PRESET) && ctest --output-on-failure --no-tests=error -j 2
	@GRIFFIN_BIN=$(CURDIR)/build/$(TEST_PRESET)/bin GRIFFIN_CLI=$(CURDIR)/build/$(TEST_PRESET)/bin/griffin-cli \
	  $(VENV_PYTHON) -m pytest -q -rs $(PYTEST_DIRS)

# Runs griffin-server in the foreground on $(HOST) (HTTP $(HTTP_PORT), gRPC $(GRPC_PORT)); Ctrl-C drains.
serve:
	@if [[ -n "$(HAVE_GPU)" && -z "$(HAVE_NVCC)" && -z "$(PRESET)" ]]; then \
	  echo "make serve: a GPU is visible but no CUDA compiler (nvcc): building the CPU server;" \
	       "deploy/install-deps.sh --cuda installs CUDA 13 for the GPU backend"; fi
	@deploy/build.sh --serve $(SERVE_PRESET) --target griffin-server
	@exec bin/griffin-server --model $(MODEL) --host $(HOST) --http_port $(HTTP_PORT) \
	  --grpc_port $(GRPC_PORT) $(SERVE_FLAGS)

clean:
	rm -rf build bin
