#!/usr/bin/env bash
# What each kernel family costs inside the decode graph (bench/PROFILE.md, "Inside the graph"):
# engine_bench times the decode step at each batch with nothing left out, then with each family
# left out (--ablate, CudaBackendOptions::ablate_kernels: the outputs are garbage, the timing of
# what remains is not), twice each, alternating, and prints one markdown table of medians and
# differences. Run on the GPU machine from the repository root:
#   bench/ablation_table.sh BUNDLE_DIR [MODEL] [BATCHES] [POSITION]
# BUNDLE_DIR holds engine_bench; MODEL 2b (default) or 9b; BATCHES comma-separated (default
# 1,8,64: from batch 2 cuBLASLt's GEMMs replace the GEMV); POSITION 128 (default) or 4096.
# EXTRA_FLAGS go to every engine_bench run (--quantization=fp8).
set -uo pipefail
bundle=${1:?usage: ablation_table.sh BUNDLE_DIR [MODEL] [BATCHES] [POSITION]}
model=${2:-2b}
batches=${3:-1,8,64}
position=${4:-128}
# A family per row; the GEMV and GEMM rows leave out every weight projection (the head included).
families=(none Gemv gemm AddRmsNorm RgLruGate Conv,DecodeFinish Attention RingWrite Rope GeGlu
          Embed,ArgMax)
declare -A ms
for rep in 1 2; do
  for f in "${families[@]}"; do
    flag=--ablate=$f
    [[ $f == none ]] && flag=
    log=$("$bundle/engine_bench" --model="$model" --quick --decode_only --decode_batches="$batches" \
          --reps=20 $flag ${EXTRA_FLAGS:-} 2>&1)
    for b in ${batches//,/ }; do
      t=$(sed -n "s/^| decode step, batch $b, position $position | \([0-9.]*\) ms.*/\1/p" <<< "$log")
      ms[$f,$b,$rep]=${t:-?}
    done
  done
done
median2() { # the two runs' mean (a median of two), or ? if either failed
  [[ $1 == ? || $2 == ? ]] && { echo "?"; return; }
  awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (a + b) / 2 }'
}
header="| left out |"; rule="| --- |"
for b in ${batches//,/ }; do header+=" batch $b (ms) |"; rule+=" --- |"; done
echo "$model, decode at position $position, ${EXTRA_FLAGS:-bf16}: the step with each family left out"
echo
echo "$header"; echo "$rule"
for f in "${families[@]}"; do
  row="| ${f//,/ + } |"
  for b in ${batches//,/ }; do
    m=$(median2 "${ms[$f,$b,1]}" "${ms[$f,$b,2]}")
    base=$(median2 "${ms[none,$b,1]}" "${ms[none,$b,2]}")
    if [[ $f == none || $m == ? || $base == ? ]]; then
      row+=" $m |"
    else
      row+=" $m ($(awk -v m="$m" -v b="$base" 'BEGIN { printf "%+.3f", m - b }')) |"
    fi
  done
  echo "$row"
done
