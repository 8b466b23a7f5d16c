#!/usr/bin/env bash
# The one list of dependencies: the Makefile, CI and both Dockerfiles install through this script.
#
#   deploy/install-deps.sh [--serve | --test] [--cuda]
#
#   --serve  what building griffin-server needs: compiler, CMake, Ninja, ccache and the C++
#            libraries. No Python. (`make serve`, the images.)
#   --test   (default) --serve plus the test and benchmark libraries, nginx and Prometheus for the
#            deployment test, and the Python packages of deploy/requirements-test.txt in a virtual
#            environment (`make test`). The environment is $GRIFFIN_VENV, default .venv in the
#            checkout, made with $PYTHON (default python3) by `python3 -m venv`: never the system
#            Python, which Debian 12 and Ubuntu 24.04 mark externally managed (PEP 668).
#   --cuda   also the CUDA 13.0 toolkit (nvcc, the CUDA runtime, cuBLAS) from NVIDIA's apt
#            repository for Debian 12 or Ubuntu 24.04, unless nvcc is already installed.
#
# Wherever nvcc is (or --cuda installs it), both modes also install CUTLASS's headers, cuDNN's
# frontend and cuDNN (PyPI: deploy/requirements-cuda.txt) into that virtual environment: the
# Hopper GEMM with GeGLU in its epilogue compiles from CUTLASS, prefill attention loads cuDNN at
# run time (kernels/CMakeLists.txt).
#
# Supported: Debian 12 and Ubuntu 24.04 (the package names below exist in both). Elsewhere the same
# packages are tried, with a warning. Idempotent: a second run checks and installs nothing (about a
# second). Needs root or sudo only when something is missing.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

mode=test
cuda=0
for arg in "$@"; do
  case $arg in
    --serve) mode=serve ;;
    --test) mode=test ;;
    --cuda) cuda=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install-deps: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)

os_id=unknown os_version=unknown os_name="an unknown system"
if [[ -r /etc/os-release ]]; then
  # shellcheck disable=SC1091
  os_id=$(. /etc/os-release && echo "${ID:-unknown}")
  os_version=$(. /etc/os-release && echo "${VERSION_ID:-unknown}")
  os_name=$(. /etc/os-release && echo "${PRETTY_NAME:-$os_id $os_version}")
fi
case "$os_id:$os_version" in
  debian:12 | ubuntu:24.04) ;;
  *) echo "install-deps: warning: tested on Debian 12 and Ubuntu 24.04, not on $os_name;" \
          "trying the same packages" >&2 ;;
esac

boost_pkg=libboost1.81-dev
if [[ $os_id == ubuntu ]]; then boost_pkg=libboost1.83-dev; fi

# Building griffin-server (and griffin-cli): the server's libraries, the tools, and curl for the
# README's first request.
serve_pkgs=(
  build-essential cmake ninja-build ccache pkg-config git ca-certificates curl
  libabsl-dev libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libspdlog-dev libfmt-dev prometheus-cpp-dev libsentencepiece-dev libcpp-httplib-dev
  nlohmann-json3-dev
  # The HTTP server: Boost.Beast/Asio (headers only; 1.81 is Debian 12's newest, Ubuntu 24.04 has
  # 1.83), OpenSSL for HTTPS and key digests, zlib for bounded gzip bodies.
  "$boost_pkg" libssl-dev zlib1g-dev
)
# make test: GoogleTest and Google Benchmark; nginx and Prometheus (promtool) for the deployment
# test on loopback; Python 3 with venv for the Python tests and train/; the training corpus
# (train/README.md builds it, and the docs test runs that command).
test_pkgs=(
  libgtest-dev libgmock-dev libbenchmark-dev
  # make fuzz: libFuzzer comes with clang's runtime libraries; openssl makes the TLS tests' CA.
  clang libclang-rt-dev openssl
  nginx prometheus
  # ss (iproute2) reads a listening socket's backlog in the server tests.
  iproute2
  python3 python3-venv
  bible-kjv bible-kjv-text dict-gcide jargon-text
)

pkgs=("${serve_pkgs[@]}")
if [[ $mode == test ]]; then pkgs+=("${test_pkgs[@]}"); fi
# A CUDA build takes CUTLASS's headers from PyPI, through a virtual environment.
want_cutlass=$cuda
if command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]]; then want_cutlass=1; fi
if ((want_cutlass)) && [[ $mode == serve ]]; then pkgs+=(python3 python3-venv); fi

sudo=""
if [[ $(id -u) != 0 ]]; then sudo="sudo"; fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

apt_updated=0
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if ((!apt_updated)); then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  # Install services (nginx, prometheus) without starting them: tests start their own instances.
  policy=/usr/sbin/policy-rc.d
  added_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy"
    added_policy=1
  fi
  apt_install "${missing[@]}"
  if ((added_policy)); then $sudo rm -f "$policy"; fi
else
  echo "install-deps: Debian packages present ($mode)"
fi

# The CUDA toolkit from NVIDIA's repository (Debian's own nvidia-cuda-toolkit is CUDA 11.8).
if ((cuda)); then
  if command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]]; then
    echo "install-deps: CUDA toolkit present ($(PATH=$PATH:/usr/local/cuda/bin nvcc --version | tail -1))"
  else
    case "$os_id:$os_version" in
      debian:12) repo=debian12 ;;
      ubuntu:24.04) repo=ubuntu2404 ;;
      *) echo "install-deps: --cuda knows NVIDIA's repositories for Debian 12 and Ubuntu 24.04 only" >&2
         exit 1 ;;
    esac
    arch=$(dpkg --print-architecture)
    [[ $arch == amd64 ]] && arch=x86_64 || arch=sbsa
    keyring=$(mktemp -d)/cuda-keyring.deb
    echo "install-deps: adding NVIDIA's CUDA repository ($repo/$arch) and installing CUDA 13.0"
    curl -fsSL -o "$keyring" \
      "https://developer.download.nvidia.com/compute/cuda/repos/$repo/$arch/cuda-keyring_1.1-1_all.deb"
    $sudo dpkg -i "$keyring" >/dev/null
    apt_updated=0
    apt_install cuda-minimal-build-13-0 libcublas-dev-13-0
  fi
fi

# Python packages in the project's virtual environment (never the system's Python).
venv=${GRIFFIN_VENV:-$root/.venv}
python=${PYTHON:-python3}
ensure_venv() {
  if ! "$venv/bin/python" -c '' 2>/dev/null; then
    # Missing, or made by a Python that is gone: make it afresh.
    echo "install-deps: creating the virtual environment $venv ($python -m venv)"
    rm -rf "$venv"
    "$python" -m venv "$venv"
  fi
}
# pip_install REQUIREMENTS STAMP WHAT [PIP ARGS...]: pip runs again only when the requirements
# file or the environment's Python changes.
pip_install() {
  local req=$1 stamp="$venv/$2" what=$3 want
  shift 3
  want="$(sha256sum "$req" | cut -c1-16) $("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])')"
  if [[ ! -e $stamp || $(cat "$stamp") != "$want" ]]; then
    echo "install-deps: installing $what into $venv (${req#"$root"/})"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@" -r "$req"
    echo "$want" >"$stamp"
  else
    echo "install-deps: $what present in $venv"
  fi
}
# The tests' and train/'s packages (first: torch brings a cuDNN that the next step then keeps).
if [[ $mode == test ]]; then
  ensure_venv
  pip_install "$root/deploy/requirements-test.txt" .griffin-requirements "the Python test packages"
fi
if ((want_cutlass)); then
  ensure_venv
  # --no-deps: the packages' Python sides (cuda-python, scipy, ...) are not what the build uses.
  pip_install "$root/deploy/requirements-cuda.txt" .griffin-requirements-cuda \
    "CUTLASS's and cuDNN's headers, cuDNN" --no-deps
fi
