#!/usr/bin/env bash
# KER-5: compute-sanitizer's four tools (memcheck, racecheck, initcheck, synccheck) over both GPU
# test binaries, run on the GPU machine from the repository root:
#   bench/run_sanitizers.sh BUNDLE_DIR OUT_DIR [TIMEOUT_S]
# BUNDLE_DIR holds kernels_test and cuda_backend_test (shared/tools/bundle-binaries.sh), and
# sanitizer_control, racecheck's positive control (bench/sanitizer_control.cu). Writes one
# log per (tool, binary) and OUT_DIR/summary.txt with each run's exit status, error/hazard counts
# and the jobs that did not finish; exits non-zero when any run reports an error or hazard, fails,
# or times out.
#
# Every (tool, binary) pair becomes one or more jobs, run SANITIZE_JOBS at a time (default: all at
# once; each job is single-GPU and mostly host-bound). A pair's jobs are, in order of precedence:
#   SANITIZE_PER_TEST_<binary>_<tool> / SANITIZE_PER_TEST_<binary> / SANITIZE_PER_TEST = 1:
#       one process per test. Racecheck costs milliseconds per kernel launch, so a test with many
#       small steps takes minutes; one process per test keeps a slow test from holding the others
#       behind it, and the summary names exactly the tests that did not finish.
#   SANITIZE_SHARDS_<binary>_<tool> / SANITIZE_SHARDS_<binary> / SANITIZE_SHARDS = N:
#       gtest's own sharding into N processes (default 1).
# Jobs start round-robin over the (tool, binary) pairs, racecheck's first in each round (the
# slowest tool); each pair's jobs keep their order: the tests named by SANITIZE_FIRST (a gtest
# filter, e.g. the tests known to take longest), then the rest. A deadline then cuts every
# tool's last tests, not whole tools (session 27: with every racecheck job queued first, its slow
# tests filled a 476 s run and the other three tools never started).
set -uo pipefail
bundle=${1:?usage: run_sanitizers.sh BUNDLE_DIR OUT_DIR [TIMEOUT_S]}
out=${2:?usage: run_sanitizers.sh BUNDLE_DIR OUT_DIR [TIMEOUT_S]}
limit=${3:-420}
# SANITIZE_DEADLINE_S: a bound on the whole run (a device call's limit), counted from here: a job
# gets what is left of it (at most TIMEOUT_S) less 5 s kept for the summary, one that would get
# under 10 s is skipped, and the summary is still written. (Counted from after the tests were
# listed, as before session 29, the jobs overran a `timeout` of the same length around the script
# by the listing's seconds, and it killed the script before its summary.)
deadline=$(($(date +%s) + ${SANITIZE_DEADLINE_S:-1000000000} - 5))
mkdir -p "$out"
# COMPUTE_SANITIZER: the tool to run, e.g. a newer one than the machine's CUDA carries
# (bench/bundle_sanitizer.sh); else the one on PATH, else CUDA's.
cs=${COMPUTE_SANITIZER:-}
if [[ -n $cs && ! -x $cs ]]; then
  echo "COMPUTE_SANITIZER=$cs is not an executable" | tee "$out/summary.txt"
  exit 2
fi
[[ -n $cs ]] || cs=$(command -v compute-sanitizer || true)
for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
  [[ -z $cs && -x $c ]] && cs=$c
done
[[ -n $cs ]] || { echo "compute-sanitizer not found" | tee "$out/summary.txt"; exit 2; }
# Its version heads the summary: racecheck's false positives on Hopper's mbarrier and warp-group
# synchronization were fixed release by release (2025.4 to 2026.3), so a report is read against
# the tool that made it.
cs_version=$(timeout 30 "$cs" --version 2>&1 | grep -m1 -E "^Version" || echo "version unknown")
export GRIFFIN_SOURCE_DIR=${GRIFFIN_SOURCE_DIR:-$PWD}
# The tests cut their largest shapes and sequences under sanitizers (kernels_test's heavy cases,
# cuda_backend_test's sequences beyond 24 tokens, 16 under racecheck): every kernel still runs, in
# minutes, not hours.
export GRIFFIN_SANITIZER_RUN=1
# SANITIZE_FILTER: a gtest filter for both binaries (e.g. the cases of a changed kernel).
filter=${SANITIZE_FILTER:-*}
# SANITIZE_TOOLS / SANITIZE_BINARIES: a subset of the tools / binaries.
tools=(${SANITIZE_TOOLS:-racecheck memcheck initcheck synccheck})
binaries=(${SANITIZE_BINARIES:-kernels_test cuda_backend_test})

setting() {  # setting NAME TOOL BINARY DEFAULT: NAME_<binary>_<tool>, NAME_<binary>, NAME, DEFAULT
  local a="$1_$3_$2" b="$1_$3"
  echo "${!a:-${!b:-${!1:-$4}}}"
}
# gtest --gtest_list_tests prints "Suite." lines and indented "Test  # GetParam() = ..." lines.
list_tests() {  # list_tests BINARY FILTER
  "$bundle/$1" --gtest_filter="$2" --gtest_list_tests |
    awk '/^[^ ]/ { suite = $1; next } /^  / { print suite $1 }'
}

# One line per job: tool, binary, the job's name (a test, or a shard "shard-I-of-N"), gtest filter.
jobs_file=$out/jobs.txt
: > "$jobs_file"
for tool in "${tools[@]}"; do
  for bin in "${binaries[@]}"; do
    if [[ $(setting SANITIZE_PER_TEST "$tool" "$bin" 0) == 1 ]]; then
      first=()
      [[ -n ${SANITIZE_FIRST:-} ]] && mapfile -t first < <(list_tests "$bin" "$SANITIZE_FIRST")
      mapfile -t all < <(list_tests "$bin" "$filter")
      # Membership by array, not `printf ... | grep -q`: under pipefail, grep's early exit on a
      # match killed printf with SIGPIPE once the list outgrew the pipe's buffer, failing the test
      # at random, and about half of kernels_test's 602 tests never ran (session 28).
      declare -A selected=() seen=()
      for t in "${all[@]}"; do selected[$t]=1; done
      for t in "${first[@]}" "${all[@]}"; do
        [[ -n ${seen[$t]:-} ]] && continue
        # Only tests the filter selects, even when SANITIZE_FIRST names more.
        [[ -n ${selected[$t]:-} ]] || continue
        seen[$t]=1
        echo "$tool $bin $t $t" >> "$jobs_file"
      done
      unset selected seen
    else
      n=$(setting SANITIZE_SHARDS "$tool" "$bin" 1)
      for ((shard = 0; shard < n; ++shard)); do
        echo "$tool $bin shard-$shard-of-$n $filter" >> "$jobs_file"
      done
    fi
  done
done

# Round-robin: each job's rank within its (tool, binary) pair, then the order written above.
awk '{ print ++rank[$1 " " $2], NR, $0 }' "$jobs_file" | sort -k1,1n -k2,2n | cut -d' ' -f3- \
  > "$jobs_file.tmp" && mv "$jobs_file.tmp" "$jobs_file"

run_job() {  # run_job TOOL BINARY NAME FILTER
  local tool=$1 bin=$2 name=$3 filter=$4 extra=(--print-limit 20) shard=0 shards=1
  [[ $tool == memcheck ]] && extra+=(--leak-check full)
  # cuDNN's fused attention keeps more cuda::barriers per block than synccheck's automatic count
  # tracks: "overflow of tracked cuda::barrier structures", then a launch failure that kills the
  # rest of the process (session 23). 1024 ran every cuDNN test clean.
  [[ $tool == synccheck ]] && extra+=(--num-cuda-barriers "${SANITIZE_CUDA_BARRIERS:-1024}")
  # Up to SANITIZE_RACECHECK_PRINT_LIMIT (2,000) hazards printed a process, so the summary can
  # tell ours from cuBLAS's; past that they are counted but not shown, and the summary says how
  # many it could not classify. A test flooded by a library's reports (cuBLASLt's at 2B shapes:
  # ~100,000, ~300 bytes each) needs a higher limit or a run without it.
  [[ $tool == racecheck ]] &&
    extra=(--racecheck-report hazard --print-limit "${SANITIZE_RACECHECK_PRINT_LIMIT:-2000}")
  # Racecheck analyses every kernel, the libraries' included. SANITIZE_RACECHECK_EXCLUDE passes a
  # --kernel-name-exclude filter (e.g. regex=nvjet|cudnn), but not by default: under
  # compute-sanitizer 2025.3 the excluded cuBLASLt kernels failed with "Internal Sanitizer Error:
  # The Sanitizer failed to handle a hardware exception" in 58 of 62 backend tests (session 31).
  # What made the exclusion look needed, cuBLASLt's and cuDNN's flood of reports, is 2025.3's:
  # 2026.4 (bench/bundle_sanitizer.sh) analyses the same cases and reports nothing, while both
  # versions report the control's known race.
  local exclude=${SANITIZE_RACECHECK_EXCLUDE:-}
  [[ $tool == racecheck && -n $exclude ]] && extra+=(--kernel-name-exclude "$exclude")
  # Racecheck costs about a second per step of a small model: cuda_backend_test's sequences are
  # cut to 16 tokens for it (still two turns of the fixtures' rings), 24 for the other tools.
  local tokens=24
  [[ $tool == racecheck ]] && tokens=16
  if [[ $name == shard-* ]]; then
    IFS=- read -r _ shard _ shards <<< "$name"
  fi
  # Parameterized tests' names hold '/', which a file name cannot.
  local base="$out/$tool-$bin.${name//\//_}" start=$SECONDS
  local budget=$((deadline - $(date +%s)))
  ((budget < limit)) || budget=$limit
  if ((budget < 10)); then
    echo "skipped 0" > "$base.rc"
    return
  fi
  GRIFFIN_SANITIZER_TOKENS=$tokens GTEST_TOTAL_SHARDS=$shards GTEST_SHARD_INDEX=$shard GTEST_FILTER=$filter \
    timeout "$budget" "$cs" --tool "$tool" "${extra[@]}" --error-exitcode 3 "$bundle/$bin" \
    > "$base.log" 2>&1
  local rc=$?
  # A test that makes no CUDA call (OpRegistryTest's) leaves compute-sanitizer nothing to check: it
  # exits 255 after the test passed (session 28, memcheck). Nothing was checked and nothing failed.
  if ((rc == 255)) && grep -q "terminated before first instrumented API call" "$base.log" &&
      grep -qE "^\[  PASSED  \] 1 test" "$base.log"; then
    echo "(run_sanitizers.sh: no CUDA call to check; counted as a pass)" >> "$base.log"
    rc=0
  fi
  echo "$rc $((SECONDS - start))" > "$base.rc"
}
export -f run_job
export out limit cs bundle deadline
# Racecheck's positive control, before the jobs: "0 hazards" is evidence only from a tool that, on
# this machine and driver, reports a race known to be there (sanitizer_control race) and nothing
# where a barrier removes it (sanitizer_control clean).
control_line=
if [[ " ${tools[*]} " == *" racecheck "* ]]; then
  if [[ -x $bundle/sanitizer_control ]]; then
    control_line="control (sanitizer_control), racecheck:"
    control_ok=1
    for mode in race clean; do
      timeout 60 "$cs" --tool racecheck --racecheck-report hazard --error-exitcode 3 \
        "$bundle/sanitizer_control" "$mode" > "$out/racecheck-control-$mode.log" 2>&1
      rc=$?
      # "RACECHECK SUMMARY: 1 hazard displayed (1 error, 0 warnings)": the errors reported.
      hazards=$(grep -oE "RACECHECK SUMMARY: [0-9]+ hazards? displayed \([0-9]+ errors?" \
        "$out/racecheck-control-$mode.log" | grep -oE "[0-9]+ errors?$" | grep -oE "^[0-9]+")
      control_line+=" $mode rc $rc, ${hazards:-no summary} reported;"
      if [[ $mode == race ]]; then
        ((rc == 3 && ${hazards:-0} > 0)) || control_ok=0
      else
        ((rc == 0)) && [[ ${hazards:-} == 0 ]] || control_ok=0
      fi
    done
    if ((control_ok)); then
      control_line+=" the known race reported, the clean kernel not"
    else
      control_line+=" FAILED: this tool's racecheck results are not evidence"
    fi
  else
    control_line="control: racecheck's not run (no sanitizer_control in $bundle)"
  fi
fi
# Host memory while the jobs run, every 2 s: session 31's racecheck processes over the 2B-shaped
# backend tests were killed (exit 9) at 8-14 jobs at once, and nothing recorded whether the
# machine had run out; the summary gives the lowest MemAvailable seen.
memory_log=$out/memavailable_kib.log
(while :; do
  awk '/^MemAvailable:/ { print $2 }' /proc/meminfo 2>/dev/null
  sleep 2
done > "$memory_log") &
sampler=$!
xargs -P "${SANITIZE_JOBS:-0}" -L 1 bash -c 'run_job "$@"' _ < "$jobs_file"
kill "$sampler" 2>/dev/null
wait "$sampler" 2>/dev/null

status=0
[[ $control_line == *FAILED* ]] && status=1
summary_file=$out/summary.txt
{
  echo "$cs: $cs_version"
  [[ -n $control_line ]] && echo "$control_line"
  printf '%-10s %-18s %4s  %s\n' tool binary rc "sanitizer summary; gtest result"
  for tool in "${tools[@]}"; do
    for bin in "${binaries[@]}"; do
      log=$out/$tool-$bin.log
      : > "$log"
      rc=0 jobs=0 passed=0 unfinished=()
      while read -r t b name _; do
        [[ $t == "$tool" && $b == "$bin" ]] || continue
        jobs=$((jobs + 1))
        base="$out/$tool-$bin.${name//\//_}"
        job_log=$base.log
        cat "$job_log" >> "$log" 2>/dev/null
        seconds='?'
        read -r job_rc seconds < "$base.rc" 2>/dev/null || job_rc=missing
        [[ $job_rc == 0 ]] || rc=$job_rc
        if grep -qE "^\[  PASSED  \]" "$job_log" 2>/dev/null; then
          passed=$((passed + 1))
        else
          # Session 31's tests that stopped mid-run ("process didn't terminate successfully")
          # exited 9: SIGKILL's number, which the kernel's out-of-memory killer sends (read it
          # with the host memory line); 137 is the shell's form of the same.
          killed=
          [[ $job_rc == 9 || $job_rc == 137 ]] && killed=", SIGKILL's number: likely killed"
          unfinished+=("$name (rc $job_rc$killed, $seconds s)")
        fi
      done < "$jobs_file"
      ((jobs == 0)) && continue
      summaries=$(grep -hE "ERROR SUMMARY|RACECHECK SUMMARY" "$log" | sort | uniq -c | tr -s ' ' |
        tr '\n' ';')
      gtest="$passed of $jobs jobs passed"
      # Each report's first "at ..." line names the kernel; cuBLAS's own kernels (nvjet, xmma,
      # cutlass) are counted apart: racecheck does not model their TMA/mbarrier ordering.
      # Racecheck counts the hazards past the print limit without showing them ("2000 hazards
      # displayed (36064 errors, 0 warnings)"): those cannot be told apart, so they count as
      # unclassified and fail the run. Session 29: cuDNN's report on its opt-in attention cases
      # filled the limit of five kernels_test shards, and whatever else those shards had was hidden.
      read -r ours library hidden < <(awk '
          /^========= +(Error|Warning|Uninitialized|Invalid|Program hit)/ { pending = 1; next }
          pending && / at / { if ($0 ~ /griffin/) ours++; else lib++; pending = 0 }
          /RACECHECK SUMMARY: [0-9]+ hazards displayed \([0-9]+ errors, [0-9]+ warnings\)/ {
            match($0, /[0-9]+ hazards displayed/); shown = substr($0, RSTART, RLENGTH) + 0
            match($0, /[0-9]+ errors/); reported = substr($0, RSTART, RLENGTH) + 0
            match($0, /[0-9]+ warnings/); reported += substr($0, RSTART, RLENGTH) + 0
            if (reported > shown) hidden += reported - shown
          }
          END { print ours + 0, lib + 0, hidden + 0 }' "$log")
      failed=$(grep -hE "^\[  FAILED  \] [A-Za-z]" "$log" | sort -u | tr '\n' ' ')
      printf '%-10s %-18s %4s  %s ours %s, library %s%s; %s%s\n' "$tool" "$bin" "$rc" \
        "${summaries:-no summary;}" "$ours" "$library" \
        "$( ((hidden)) && echo ", not displayed $hidden (unclassified)")" "$gtest" \
        "${failed:+; failed: $failed}"
      ((${#unfinished[@]})) && printf '    did not finish: %s\n' "${unfinished[@]}"
      # A run fails on a report in our kernels or one it could not classify, a failed test, a
      # crash or a timeout; reports confined to library kernels are listed but do not fail it.
      if [[ $ours != 0 || $hidden != 0 || $passed != "$jobs" || -n $failed ||
            ( $rc != 0 && $library == 0 ) ]]; then
        status=1
      fi
    done
  done
  if [[ " ${tools[*]} " == *" racecheck "* ]]; then
    exclude=${SANITIZE_RACECHECK_EXCLUDE:-}
    echo "racecheck did not analyse the kernels matching: ${exclude:-(none)}" \
      "(SANITIZE_RACECHECK_EXCLUDE)"
  fi
  total_kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo 2>/dev/null)
  lowest_kib=$(sort -n "$memory_log" 2>/dev/null | head -n 1)
  if [[ -n $total_kib && -n $lowest_kib ]]; then
    echo "host memory: lowest MemAvailable $((lowest_kib / 1024)) MiB of $((total_kib / 1024))" \
      "MiB ($(wc -l < "$memory_log") samples, one every 2 s; SANITIZE_JOBS" \
      "${SANITIZE_JOBS:-0}, 0: all at once)"
  fi
  echo
  echo "seconds per job (slowest first):"
  for f in "$out"/*.rc; do
    read -r job_rc seconds < "$f"
    printf '%6s  rc %-3s %s\n' "$seconds" "$job_rc" "$(basename "$f" .rc)"
  done | sort -rn
} > "$summary_file"
cat "$summary_file"
exit $status
