#!/usr/bin/env bash
# An A/B of decode-step (or prefill) settings in one device call: engine_bench once per variant
# and round, the variants' order rotated each round (round r starts with variant r), so that no
# variant always runs first on a cold machine. Every comparison in bench/RESULTS.md since session
# 22 is this: the same binary, the change switched off by flag, several rounds.
#   bench/ab_decode.sh BUNDLE_DIR LOG ROUNDS NAME=FLAGS...
# e.g. bench/ab_decode.sh .bundle/cuda $OUT/ab.log 3 new= "s24=--prefetch_gemm_split_k_parts=1"
# FLAGS that start with @DIR run DIR/engine_bench instead of BUNDLE_DIR's: an A/B of two builds
# (a kernel change with no flag to switch it off), e.g. "old=@.bundle/old" new=.
# AB_FLAGS: the flags of every run (default: 2B decode, batches 1-1024, 10 repetitions; for
# prefill, e.g. "--model=2b --quick --decode_batches=1 --prefill_lengths=512,2048 --reps=20");
# AB_TIMEOUT: the seconds one run may take (default 60). Appends to LOG one line per figure
# ("NAME rR: | decode step, batch B, position P | ...", "NAME rR: | prefill S x T | ...", "NAME
# rR: | time to first token, T prompt, R restored + P prefilled | ..."), and "NAME rR: failed (rc
# N)" for a run that failed or printed no figure; bench/ab_table.py LOG makes the table. Exits
# non-zero when any run failed.
set -uo pipefail
bundle=${1:?usage: ab_decode.sh BUNDLE_DIR LOG ROUNDS NAME=FLAGS...}
log=${2:?usage: ab_decode.sh BUNDLE_DIR LOG ROUNDS NAME=FLAGS...}
rounds=${3:?usage: ab_decode.sh BUNDLE_DIR LOG ROUNDS NAME=FLAGS...}
shift 3
(($# >= 1)) || { echo "ab_decode.sh: name at least one variant (NAME=FLAGS)" >&2; exit 2; }
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "ab_decode.sh: ROUNDS must be a positive integer" >&2; exit 2; }
names=() flags=()
for v in "$@"; do
  [[ $v == *=* && ${v%%=*} =~ ^[A-Za-z0-9_.+-]+$ ]] ||
    { echo "ab_decode.sh: '$v' is not NAME=FLAGS (NAME: letters, digits, _.+-)" >&2; exit 2; }
  names+=("${v%%=*}") flags+=("${v#*=}")
done
common=${AB_FLAGS:---model=2b --decode_only --decode_batches=1,2,8,64,128,256,1024 --reps=10}
bench=${ENGINE_BENCH:-$bundle/engine_bench}
mkdir -p "$(dirname "$log")"
status=0
n=${#names[@]}
for ((r = 1; r <= rounds; ++r)); do
  for ((j = 0; j < n; ++j)); do
    i=$(((r - 1 + j) % n))
    name=${names[i]}
    # shellcheck disable=SC2206  # the flag string holds several words
    words=(${flags[i]})
    exe=$bench
    if [[ ${words[0]:-} == @?* ]]; then
      exe=${words[0]#@}/engine_bench
      words=("${words[@]:1}")
    fi
    # shellcheck disable=SC2086  # the common flags hold several words
    out=$(timeout "${AB_TIMEOUT:-60}" "$exe" $common "${words[@]}" 2>&1)
    rc=$?
    # Not the eager step's line (", launched eagerly": its own graph's time beside it, no A/B).
    figures=$(grep -E '^\| (decode step|prefill [0-9]+ x [0-9]+ |time to first token, [0-9]+ prompt, )' \
      <<< "$out" | grep -v ', launched eagerly |')
    if ((rc != 0)) || [[ -z $figures ]]; then
      echo "$name r$r: failed (rc $rc): $(tail -n 1 <<< "$out")" >> "$log"
      status=1
    else
      sed "s/^/$name r$r: /" <<< "$figures" >> "$log"
    fi
    echo "$name r$r rc=$rc $(date +%T)"
  done
done
exit $status
