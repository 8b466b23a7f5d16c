#!/usr/bin/env bash
# Copies built executables and the shared libraries they load into OUT_DIR/{bin,lib}, so a slim
# runtime image needs no -dev packages: only the C library, the C++ runtime and (for the GPU image)
# the CUDA runtime libraries that the nvidia/cuda runtime base image provides.
#   deploy/collect-runtime.sh OUT_DIR EXECUTABLE...
set -euo pipefail
out=${1:?usage: collect-runtime.sh OUT_DIR EXECUTABLE...}; shift
mkdir -p "$out/bin" "$out/lib"
provided='^(linux-vdso|libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|ld-linux|libgcc_s|libstdc\+\+|libcuda\.so|libnvidia|libcudart|libcublas)'
for exe in "$@"; do
  cp -L "$exe" "$out/bin/"
  ldd "$exe" | awk '/=> \//{print $1, $3}' | while read -r name path; do
    [[ $name =~ $provided ]] && continue
    [[ -e $out/lib/$name ]] || cp -L "$path" "$out/lib/$name"
  done
done
