#!/usr/bin/env bash
# bench/PROFILE.md's tables: for each shape, engine_bench --profile writes the step's launch trace
# and runs the step once under ncu (graph nodes profiled one by one, clocks left alone); then
# bench/profile_table.py joins the two. Run on the GPU machine from the repository root:
#   bench/profile_step.sh BUNDLE_DIR OUT_DIR MODEL SHAPE...     SHAPE: decode:B:P or prefill:S:T
# e.g. bench/profile_step.sh .bundle/cuda $OUT/profile 2b decode:1:128 decode:64:4096
# PROFILE_FLAGS: more engine_bench flags (e.g. --quantization=fp8), which also tag the files.
set -uo pipefail
bundle=${1:?usage: profile_step.sh BUNDLE_DIR OUT_DIR MODEL SHAPE...}
out=${2:?}; model=${3:?}; shift 3
mkdir -p "$out"
ncu=$(command -v ncu || true)
for c in /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu; do
  [[ -z $ncu && -x $c ]] && ncu=$c
done
[[ -n $ncu ]] || { echo "ncu not found"; exit 2; }
status=0
for shape in "$@"; do
  flags=${PROFILE_FLAGS:-}
  suffix=${flags//--/}; suffix=${suffix//[^A-Za-z0-9_]/_}
  tag=${model}_${shape//:/_}${suffix:+_$suffix}
  # shellcheck disable=SC2086  # PROFILE_FLAGS holds several words
  "$ncu" --profile-from-start off --graph-profiling node --clock-control none \
      --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
      --csv --page raw "$bundle/engine_bench" --model="$model" --profile="$shape" $flags \
      --trace_out="$out/$tag.trace.jsonl" > "$out/$tag.ncu.csv" 2> "$out/$tag.ncu.log" || status=1
  python3 bench/profile_table.py "$out/$tag.trace.jsonl" "$out/$tag.ncu.csv" \
      --title "$model $shape${flags:+ $flags}" > "$out/$tag.md" 2>&1 || status=1
  cat "$out/$tag.md"
done
exit $status
