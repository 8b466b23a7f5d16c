#!/usr/bin/env bash
# Installs every build and test dependency of the project from Debian 12 packages (and, for the
# Python tests, PyPI). Idempotent: a second run installs nothing and takes a second. Called by the
# Makefile, CI and the Dockerfiles, so there is exactly one list of dependencies.
#
#   deploy/install-deps.sh            build + test dependencies
#   deploy/install-deps.sh --runtime  only what a built server needs to run (for slim images)
set -euo pipefail

build_pkgs=(
  build-essential cmake ninja-build ccache pkg-config git
  libabsl-dev libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libspdlog-dev libfmt-dev prometheus-cpp-dev libsentencepiece-dev libcpp-httplib-dev
  nlohmann-json3-dev libgtest-dev libgmock-dev libbenchmark-dev
  curl
)
runtime_pkgs=(
  libabsl20220623 libgrpc++1.51 libprotobuf32 libspdlog1.10 libfmt9
  libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libsentencepiece0 curl
)

pkgs=("${build_pkgs[@]}")
if [[ ${1:-} == --runtime ]]; then pkgs=("${runtime_pkgs[@]}"); fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  sudo=""
  if [[ $(id -u) != 0 ]]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps: Debian packages present"
fi

# Python test dependencies, only where a Python 3 exists (the C++ build does not need it).
if [[ ${1:-} != --runtime ]] && command -v python3 >/dev/null 2>&1; then
  req="$(dirname "$0")/requirements-test.txt"
  if ! python3 -c 'import pytest, numpy, safetensors' >/dev/null 2>&1; then
    echo "install-deps: installing Python test packages"
    python3 -m pip install -q --disable-pip-version-check -r "$req"
  fi
fi
