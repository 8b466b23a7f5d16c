#!/usr/bin/env bash
# The GPU run behind bench/RESULTS.md and bench/PROFILE.md, in stages (all when none is named):
#   tests     kernels_test and cuda_backend_test (parity, SPEC.md §8.4)
#   sanitize  compute-sanitizer memcheck, racecheck, initcheck, synccheck over both (KER-5),
#             in parallel with the tests (bench/run_sanitizers.sh)
#   bench     engine_bench, 2B full and 9B quick; kernels_bench
#   load      load time and host memory of a 2B-shaped bf16 checkpoint (bench/load_bench.py)
#   profile   per-kernel tables of decode and prefill steps under ncu (bench/profile_step.sh)
#   ablate    what each kernel family costs inside the decode graph (bench/ablation_table.sh;
#             ABLATE_BATCHES, default 1,8,64)
#   peers     the official JAX sampler and Hugging Face transformers at batch 1
#   portable  kernels_test and cuda_backend_test built by the cuda-ptx80 preset (compute_80 PTX
#             only, JIT-compiled by the driver; the path an A100/L4/L40S takes), from
#             .bundle/cuda-ptx80, in parallel with the tests and sanitizers
# Run from the repository root on the GPU machine, with the binaries bundled in .bundle/cuda
# (shared/tools/bundle-binaries.sh; sanitizer_control with the test binaries) and, for peers, the
# reference's recurrentgemma/ package in .bundle/rg_ref (never committed). Logs go to $OUT (or
# ./out).
#   bench/run_device.sh tests sanitize bench load
set -uo pipefail
out=${OUT:-out}
mkdir -p "$out"
stages=${*:-tests sanitize bench load profile peers}
has() { [[ " $stages " == *" $1 "* ]]; }
bundle=.bundle/cuda
# The sanitizers' tool: a newer compute-sanitizer where bench/bundle_sanitizer.sh put one in
# .bundle/san (carried as it is), else the machine's. Session 31: the machine's 2025.3 reports races
# in cuDNN's and cuBLASLt's kernels that 2026.4 does not, both reporting sanitizer_control's.
newer_sanitizer=.bundle/san/compute-sanitizer/compute-sanitizer
if [[ -z ${COMPUTE_SANITIZER:-} && -x $newer_sanitizer ]]; then
  export COMPUTE_SANITIZER=$PWD/$newer_sanitizer
fi
export LD_LIBRARY_PATH=$PWD/$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export GRIFFIN_SOURCE_DIR=$PWD PYTHONUNBUFFERED=1
{
  date -u; git rev-parse --short HEAD 2>/dev/null || true
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used --format=csv
} 2>&1 | tee "$out/env.log"
model=/tmp/rg2b-weights
if has load && [[ ! -e $model/model.safetensors ]]; then
  (python3 bench/make_dummy_model.py "$model" --weights >> "$out/env.log" 2>&1) &
  make_model=$!
fi
pids=()
if has tests; then
  mkdir -p /tmp/tests
  ( $bundle/kernels_test > /tmp/tests/kernels_test.log 2>&1; echo "kernels_test rc=$?"
    $bundle/cuda_backend_test > /tmp/tests/cuda_backend_test.log 2>&1; echo "cuda_backend_test rc=$?"
    grep -hE "^\[  (PASSED|FAILED)|all golden" /tmp/tests/*.log ) &
  pids+=($!)
fi
if has portable; then
  mkdir -p /tmp/portable
  ( for t in kernels_test cuda_backend_test; do
      LD_LIBRARY_PATH=$PWD/.bundle/cuda-ptx80/lib:$LD_LIBRARY_PATH .bundle/cuda-ptx80/$t \
          > /tmp/portable/$t.log 2>&1
      echo "portable $t rc=$?"
    done
    grep -hE "^\[  (PASSED|FAILED)|all golden" /tmp/portable/*.log | sed 's/^/portable: /' ) &
  pids+=($!)
fi
if has sanitize; then
  ( bash bench/run_sanitizers.sh $bundle /tmp/sanitize "${SANITIZE_TIMEOUT:-300}" > /dev/null;
    echo "sanitizers rc=$?"; cut -c1-220 /tmp/sanitize/summary.txt ) &
  pids+=($!)
fi
wait "${pids[@]}" 2>/dev/null
# Test and sanitizer logs in one archive (the run returns few files).
[[ -d /tmp/tests || -d /tmp/sanitize || -d /tmp/portable ]] &&
  tar czf "$out/tests.tgz" -C /tmp $(cd /tmp && ls -d tests sanitize portable 2>/dev/null)
if has bench; then
  timeout 260 $bundle/engine_bench --model=2b --reps="${REPS:-10}" 2>&1 | tee "$out/engine_bench.log"
  if [[ -n ${BENCH_9B:-} ]]; then
    timeout 150 $bundle/engine_bench --model=9b --quick --reps=8 2>&1 | tee -a "$out/engine_bench.log"
  fi
fi
if has load; then
  [[ -n ${make_model:-} ]] && wait "$make_model"
  for server in ${LOAD_SERVERS:-$bundle}; do
    python3 bench/load_bench.py "$server/griffin-server" "$model" --runs 2 -- --backend cuda \
        --slots 8 --max_batch 8 2>&1 | grep -v '^    "' | tee -a "$out/load.log"
  done
fi
if has profile; then
  bash bench/profile_step.sh $bundle "$out/profile" 2b ${PROFILE_SHAPES:-decode:1:128 decode:64:4096 decode:256:4096 prefill:1:2048} > "$out/profile.log" 2>&1
  echo "profile rc=$?"; tar czf "$out/profile.tgz" -C "$out" profile && rm -rf "$out/profile"
fi
if has ablate; then
  timeout 400 bash bench/ablation_table.sh $bundle 2b "${ABLATE_BATCHES:-1,8,64}" 2>&1 | tee "$out/ablate.md"
fi
if has peers; then
  timeout ${JAX_TIMEOUT:-240} python3 bench/peers/jax_reference_bench.py .bundle/rg_ref 1 2>&1 | tee "$out/peers.log"
  timeout ${HF_TIMEOUT:-120} python3 bench/peers/hf_transformers_bench.py 1 2>&1 | tee -a "$out/peers.log"
fi
