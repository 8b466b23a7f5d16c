#!/usr/bin/env bash
# Installs every build and test dependency of the project from Debian 12 packages (and, for the
# Python tests, PyPI). Idempotent: a second run installs nothing and takes a second. Called by
# deploy/build.sh, so the Makefile, CI and the Dockerfiles share exactly one list of dependencies.
# (Runtime images need none of it: deploy/collect-runtime.sh copies the libraries the binaries load.)
set -euo pipefail

pkgs=(
  build-essential cmake ninja-build ccache pkg-config git
  libabsl-dev libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libspdlog-dev libfmt-dev prometheus-cpp-dev libsentencepiece-dev libcpp-httplib-dev
  nlohmann-json3-dev libgtest-dev libgmock-dev libbenchmark-dev
  curl
  # Test tools: the deployment test runs a real nginx and Prometheus (promtool) on loopback; ss
  # (iproute2) reads a listening socket's backlog.
  nginx prometheus iproute2
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  sudo=""
  if [[ $(id -u) != 0 ]]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  # Install services (nginx, prometheus) without starting them: tests start their own instances.
  policy=/usr/sbin/policy-rc.d
  added_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy"
    added_policy=1
  fi
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if ((added_policy)); then $sudo rm -f "$policy"; fi
else
  echo "install-deps: Debian packages present"
fi

# Python test dependencies, only where a Python 3 exists (the C++ build does not need it).
# pip runs again only when requirements-test.txt changes (a stamp keyed by its hash).
if command -v python3 >/dev/null 2>&1; then
  req="$(cd "$(dirname "$0")" && pwd)/requirements-test.txt"
  stamp_dir="${XDG_CACHE_HOME:-$HOME/.cache}/griffin"
  stamp="$stamp_dir/requirements-$(sha256sum "$req" | cut -c1-16)-$(python3 -c 'import sys; print(sys.prefix.replace("/", "_"))')"
  if [[ ! -e $stamp ]]; then
    echo "install-deps: installing Python test packages (deploy/requirements-test.txt)"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -r "$req"
    mkdir -p "$stamp_dir" && touch "$stamp"
  fi
fi
