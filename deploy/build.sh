#!/usr/bin/env bash
# Installs the dependencies, configures and builds one CMake preset. The one build recipe: the
# Makefile (and so CI) and both Dockerfiles call this script, so an image is built exactly as CI
# builds and tests the code.
#   deploy/build.sh [PRESET] [cmake --build arguments...]
# PRESET defaults to cuda when nvcc is found, else cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/cuda/bin"
preset=${1:-$(command -v nvcc >/dev/null 2>&1 && echo cuda || echo cpu)}
shift || true
deploy/install-deps.sh
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" "$@"
