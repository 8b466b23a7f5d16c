# The two commands of the quick start (README.md):
#   make serve   install what the server needs, build griffin-server, serve the bundled model
#   make test    install everything (test libraries, Python packages in .venv), build, run every test
# and what CI adds (.ci/run):
#   make sanitize  every C++ test under ASan + UBSan, engine and server tests under TSan
#   make fuzz      each libFuzzer target for FUZZ_SECONDS over its checked-in corpus
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
#   FUZZ_SECONDS=N       how long make fuzz runs each target (default 60)

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

.PHONY: all deps build test sanitize fuzz serve clean

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

# Sanitizers (CPU only, no benchmarks; build/asan and build/tsan): every C++ test under ASan +
# UBSan; the engine and server C++ tests under TSan; and the server's Python suites against each
# sanitized griffin-server (the end-to-end tests start the sanitized binary too), where any report
# fails its test (the server then exits non-zero). Not the tests that measure RSS: the sanitizers'
# allocators, not glibc's, serve those builds. Suppressions, each with its reason, in
# tests/sanitizers/.
SAN_DIR := $(CURDIR)/tests/sanitizers
SAN_ENV := ASAN_OPTIONS=detect_leaks=1:suppressions=$(SAN_DIR)/asan.supp \
           LSAN_OPTIONS=suppressions=$(SAN_DIR)/lsan.supp:print_suppressions=0 \
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=$(SAN_DIR)/ubsan.supp \
           TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(SAN_DIR)/tsan.supp
SANITIZE_PYTEST := -k "not rss and not allocate" tests/python/test_server_http.py \
                   tests/python/test_server_grpc.py tests/python/test_http_fuzz.py \
                   tests/python/test_server_lifecycle.py tests/python/test_security.py \
                   tests/python/test_state_cache.py

sanitize:
	@deploy/build.sh asan
	@cd build/asan && $(SAN_ENV) ctest --output-on-failure --no-tests=error -j 2
	@$(SAN_ENV) GRIFFIN_BIN=$(CURDIR)/build/asan/bin $(VENV_PYTHON) -m pytest -q $(SANITIZE_PYTEST)
	@deploy/build.sh tsan
	@set -e; for t in build/tsan/engine/*_test build/tsan/server/*_test \
	    build/tsan/tests/detokenizer_test build/tsan/tests/server_e2e_test; do \
	  echo "tsan: $$t"; $(SAN_ENV) $$t --gtest_brief=1; done
	@$(SAN_ENV) GRIFFIN_BIN=$(CURDIR)/build/tsan/bin $(VENV_PYTHON) -m pytest -q $(SANITIZE_PYTEST)

# libFuzzer (clang; build/fuzz). Each target runs FUZZ_SECONDS over a scratch copy of its corpus:
# new inputs stay out of the tree; a crasher is written to build/fuzz/crashes/ (add it to the
# corpus once fixed). Longer runs: tests/fuzz/README.md.
FUZZ_SECONDS ?= 60
FUZZERS := safetensors_header_fuzz model_config_fuzz openai_request_fuzz grpc_request_fuzz \
           detokenizer_fuzz

fuzz:
	@deploy/build.sh fuzz
	@mkdir -p build/fuzz/crashes
	@set -e; for f in $(FUZZERS); do \
	  work=$$(mktemp -d); \
	  echo "fuzz: $$f for $(FUZZ_SECONDS) s"; \
	  if ! build/fuzz/fuzz/$$f -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=10 \
	      -print_final_stats=1 -artifact_prefix=build/fuzz/crashes/$$f- \
	      $$work tests/fuzz/corpus/$$f > build/fuzz/$$f.log 2>&1; then \
	    tail -60 build/fuzz/$$f.log; rm -rf $$work; exit 1; \
	  fi; \
	  grep -E '^(Done|stat::number_of_executed_units)' build/fuzz/$$f.log || true; \
	  rm -rf $$work; \
	done

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
