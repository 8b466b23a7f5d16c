#!/usr/bin/env bash
# Copies built executables and the shared libraries they load into OUT_DIR/{bin,lib}, so a slim
# runtime image needs no -dev packages: only the C library and the C++ runtime of the base image
# (Debian 12 in both stages, so the versions match).
#   deploy/collect-runtime.sh [--cuda] OUT_DIR EXECUTABLE...
# --cuda also copies the CUDA runtime and cuBLAS (libcudart, libcublas, libcublasLt) that the CUDA
# build links; without it they are left to the machine that runs the bundle (a CUDA 13 install on
# LD_LIBRARY_PATH). The driver's libcuda.so always comes from the host (NVIDIA Container Toolkit).
set -euo pipefail
cuda=0
if [[ ${1:-} == --cuda ]]; then cuda=1; shift; fi
out=${1:?usage: collect-runtime.sh [--cuda] OUT_DIR EXECUTABLE...}; shift
mkdir -p "$out/bin" "$out/lib"
provided='^(linux-vdso|libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|ld-linux|libgcc_s|libstdc\+\+|libcuda\.so|libnvidia)'
cuda_libs='^(libcudart|libcublas)'
for exe in "$@"; do
  cp -L "$exe" "$out/bin/"
  ldd "$exe" | awk '/=> \//{print $1, $3}' | while read -r name path; do
    [[ $name =~ $provided ]] && continue
    if [[ $name =~ $cuda_libs ]] && ((!cuda)); then
      echo "collect-runtime: not copying $name (--cuda copies the CUDA libraries)" >&2
      continue
    fi
    [[ -e $out/lib/$name ]] || cp -L "$path" "$out/lib/$name"
  done
done
