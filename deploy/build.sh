#!/usr/bin/env bash
# The one build recipe: installs the dependencies, configures a CMake preset and builds it. The
# Makefile (and so CI) and both Dockerfiles call this script, so an image is built exactly as CI
# builds and tests the code.
#
#   deploy/build.sh [--serve] [PRESET] [cmake --build arguments, e.g. --target griffin-server]
#
#   PRESET   a configure preset of CMakePresets.json; default cuda when nvcc is found, else cpu.
#            asan, tsan and fuzz (make sanitize, make fuzz) build what their presets say and
#            leave bin/ alone.
#   --serve  only what serving needs: installs the serving dependencies (no test libraries, no
#            Python), configures without tests and benchmarks (unless this build directory already
#            has them) and builds griffin-server unless targets are given.
#
# Afterwards bin/<program> (in the checkout) links to each program this run built, so documented
# commands use one path, bin/griffin-server, whichever preset built it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/cuda/bin"

serve=0
if [[ ${1:-} == --serve ]]; then
  serve=1
  shift
fi
preset=cpu
command -v nvcc >/dev/null 2>&1 && preset=cuda
if [[ $# -gt 0 && ${1:-} != -* ]]; then
  preset=$1
  shift
fi
build_args=("$@")
build_dir=build/$preset

if ((serve)); then
  deploy/install-deps.sh --serve
else
  deploy/install-deps.sh --test
fi

# Configure when the build directory is new or must switch tests and benchmarks on (a `make serve`
# build directory reused by `make test`); otherwise `cmake --build` re-runs CMake by itself when
# a CMakeLists.txt changed.
# The sanitizer and fuzzing presets (make sanitize, make fuzz) choose their own tests, benchmarks
# and targets, and bin/ never links to what they build.
tooling=0
case $preset in asan | tsan | fuzz) tooling=1 ;; esac
cache=$build_dir/CMakeCache.txt
cached_tests=$(sed -n 's/^GRIFFIN_BUILD_TESTS:BOOL=//p' "$cache" 2>/dev/null || true)
configure=()
if ((serve)); then
  [[ -f $build_dir/build.ninja ]] || configure=(-DGRIFFIN_BUILD_TESTS=OFF -DGRIFFIN_BUILD_BENCH=OFF)
  if [[ ${#build_args[@]} -eq 0 ]]; then build_args=(--target griffin-server); fi
elif ((tooling)); then
  [[ -f $build_dir/build.ninja ]] || configure=(--log-level=WARNING)
else
  if [[ ! -f $build_dir/build.ninja || $cached_tests != ON ]]; then
    configure=(-DGRIFFIN_BUILD_TESTS=ON -DGRIFFIN_BUILD_BENCH=ON)
  fi
fi
if ((${#configure[@]})); then
  cmake --preset "$preset" "${configure[@]}" >/dev/null
fi
cmake --build --preset "$preset" "${build_args[@]}"

# bin/: one link per program built now (named by --target, or every program of a full build).
if ((tooling)); then exit 0; fi
targets=()
for ((i = 0; i < ${#build_args[@]}; ++i)); do
  if [[ ${build_args[i]} == --target || ${build_args[i]} == -t ]]; then
    for ((j = i + 1; j < ${#build_args[@]}; ++j)); do
      [[ ${build_args[j]} == -* ]] && break
      targets+=("${build_args[j]}")
    done
  fi
done
if ((${#targets[@]} == 0)); then
  shopt -s nullglob
  for exe in "$build_dir"/bin/*; do targets+=("$(basename "$exe")"); done
fi
mkdir -p bin
for t in "${targets[@]}"; do
  if [[ -x $build_dir/bin/$t ]]; then ln -sfn "../$build_dir/bin/$t" "bin/$t"; fi
done
