#!/usr/bin/env bash
# KER-5: compute-sanitizer's four tools (memcheck, racecheck, initcheck, synccheck) over both GPU
# test binaries, the eight runs in parallel (each is single-GPU and mostly host-bound), run on the
# GPU machine from the repository root:
#   bench/run_sanitizers.sh BUNDLE_DIR OUT_DIR [TIMEOUT_S]
# BUNDLE_DIR holds kernels_test and cuda_backend_test (shared/tools/bundle-binaries.sh). Writes one
# log per (tool, binary) and OUT_DIR/summary.txt with each run's exit status and error/hazard
# counts; exits non-zero when any run reports an error or hazard, fails, or times out.
set -uo pipefail
bundle=${1:?usage: run_sanitizers.sh BUNDLE_DIR OUT_DIR [TIMEOUT_S]}
out=${2:?usage: run_sanitizers.sh BUNDLE_DIR OUT_DIR [TIMEOUT_S]}
limit=${3:-420}
mkdir -p "$out"
cs=$(command -v compute-sanitizer || true)
for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
  [[ -z $cs && -x $c ]] && cs=$c
done
[[ -n $cs ]] || { echo "compute-sanitizer not found" | tee "$out/summary.txt"; exit 2; }
export GRIFFIN_SOURCE_DIR=${GRIFFIN_SOURCE_DIR:-$PWD}
# The tests cut their largest shapes and sequences under sanitizers (kernels_test's heavy cases,
# cuda_backend_test's sequences beyond 48 tokens): every kernel still runs, in minutes, not hours.
export GRIFFIN_SANITIZER_RUN=1
# SANITIZE_FILTER: a gtest filter for both binaries (e.g. the cases of a changed kernel).
[[ -n ${SANITIZE_FILTER:-} ]] && export GTEST_FILTER=$SANITIZE_FILTER
# Processes per (tool, binary): SANITIZE_SHARDS_<binary>_<tool>, else SANITIZE_SHARDS_<binary>,
# else SANITIZE_SHARDS, else 1 (gtest's own sharding; racecheck on cuda_backend_test wants most).
shards() {
  local a="SANITIZE_SHARDS_$2_$1" b="SANITIZE_SHARDS_$2"
  echo "${!a:-${!b:-${SANITIZE_SHARDS:-1}}}"
}
pids=()
for tool in memcheck racecheck initcheck synccheck; do
  extra=(--print-limit 20)
  [[ $tool == memcheck ]] && extra+=(--leak-check full)
  # Every hazard printed, so the summary can tell ours from cuBLAS's.
  [[ $tool == racecheck ]] && extra=(--racecheck-report hazard --print-limit 2000)
  for bin in ${SANITIZE_BINARIES:-kernels_test cuda_backend_test}; do
    n=$(shards "$tool" "$bin")
    for ((shard = 0; shard < n; ++shard)); do
      ( GTEST_TOTAL_SHARDS=$n GTEST_SHARD_INDEX=$shard \
          timeout "$limit" "$cs" --tool "$tool" "${extra[@]}" --error-exitcode 3 \
          "$bundle/$bin" > "$out/$tool-$bin.$shard.log" 2>&1
        echo $? > "$out/$tool-$bin.$shard.rc" ) &
      pids+=($!)
    done
  done
done
wait "${pids[@]}"
status=0
summary_file=$out/summary.txt
: > "$summary_file"
{
  printf '%-10s %-18s %4s  %s\n' tool binary rc "sanitizer summary; gtest result"
  for tool in memcheck racecheck initcheck synccheck; do
    for bin in ${SANITIZE_BINARIES:-kernels_test cuda_backend_test}; do
      cat "$out/$tool-$bin".*.log > "$out/$tool-$bin.log"
      log=$out/$tool-$bin.log
      rc=0
      for f in "$out/$tool-$bin".*.rc; do [[ $(cat "$f") == 0 ]] || rc=$(cat "$f"); done
      summary=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$log" | tail -1)
      gtest=$(grep -E "^\[  (PASSED|FAILED)  \]" "$log" | tr '\n' ' ')
      # Every shard must have reached gtest's end.
      [[ $(grep -cE "^\[  PASSED  \]" "$log") -ge $(shards "$tool" "$bin") ]] || gtest="incomplete: $gtest"
      # Each report's first "at ..." line names the kernel; cuBLAS's own kernels (nvjet, xmma,
      # cutlass) are counted apart: racecheck does not model their TMA/mbarrier ordering.
      read -r ours library < <(awk '
          /^========= +(Error|Warning|Uninitialized|Invalid|Program hit)/ { pending = 1; next }
          pending && / at / { if ($0 ~ /griffin/) ours++; else lib++; pending = 0 }
          END { print ours + 0, lib + 0 }' "$log")
      printf '%-10s %-18s %4s  %s; ours %s, library %s; %s\n' "$tool" "$bin" "$rc" \
          "${summary:-no summary}" "$ours" "$library" "$gtest"
      # A run fails on a report in our kernels, a failed test, a crash or a timeout; reports
      # confined to library kernels are listed but do not fail it.
      if [[ $ours != 0 || $gtest == incomplete* || $gtest == *FAILED* || ( $rc != 0 && $library == 0 ) ]]; then
        status=1
      fi
    done
  done
} > "$summary_file"
cat "$summary_file"
exit $status
