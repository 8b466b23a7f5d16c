#!/usr/bin/env bash
# The GPU run behind bench/RESULTS.md: kernel and engine parity tests, engine_bench (2B full, 9B
# quick), kernels_bench, and the peers (JAX reference sampler, Hugging Face transformers) at
# batch 1, one after the other on the same GPU. Run from the repository root on the GPU machine,
# with the binaries bundled in .bundle/cuda (shared/tools/bundle-binaries.sh) and the reference's
# recurrentgemma/ package extracted to .bundle/rg_ref (never committed). Logs go to $OUT (or ./out).
set -uo pipefail
out=${OUT:-out}
mkdir -p "$out"
export LD_LIBRARY_PATH=$PWD/.bundle/cuda/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export GRIFFIN_SOURCE_DIR=$PWD PYTHONUNBUFFERED=1
{
  date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used --format=csv
  python3 -c 'import jax, torch, transformers; print("jax", jax.__version__, "torch", torch.__version__, "transformers", transformers.__version__)'
} 2>&1 | tee "$out/env.log"
.bundle/cuda/kernels_test > "$out/kernels_test.log" 2>&1; echo "kernels_test rc=$?"
.bundle/cuda/cuda_backend_test > "$out/cuda_backend_test.log" 2>&1; echo "cuda_backend_test rc=$?"
grep -E "^\[  (PASSED|FAILED)|mean \|dlogprob" "$out/kernels_test.log" "$out/cuda_backend_test.log" | sed 's|.*/||'
timeout 240 .bundle/cuda/engine_bench --model=2b --reps=15 2>&1 | tee "$out/engine_bench.log"
timeout 150 .bundle/cuda/engine_bench --model=9b --quick --reps=10 2>&1 | tee -a "$out/engine_bench.log"
timeout 60 .bundle/cuda/kernels_bench > "$out/kernels_bench.log" 2>&1; echo "kernels_bench rc=$?"
timeout ${JAX_TIMEOUT:-240} python3 bench/peers/jax_reference_bench.py .bundle/rg_ref 1 2>&1 | tee "$out/peers.log"
timeout ${HF_TIMEOUT:-120} python3 bench/peers/hf_transformers_bench.py 1 2>&1 | tee -a "$out/peers.log"
