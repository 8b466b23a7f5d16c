#!/usr/bin/env bash
# The GPU run behind bench/RESULTS.md's serving section: griffin-server with recurrentgemma-2b
# shapes and random weights (--load_format dummy), driven by griffin-bench.
#  1. server overhead: the engine alone (engine_bench --serving) vs the server over gRPC and over
#     HTTP, closed loop at the same concurrencies, 1024-in/128-out, alternating within rounds;
#  2. bench/serving_sweep.py over gRPC (or $PROTOCOL, or each of $PROTOCOLS): peak, 25/50/75/100%
#     of peak and the SLO rates for 1024/128 and 2048/2048 (WORKLOAD_SHORT, WORKLOAD_LONG).
# Run from the repository root on the GPU machine with the binaries bundled in .bundle/cuda
# (shared/tools/bundle-binaries.sh), or BIN=folder for others. Results go to $OUT (or ./out) as
# serving.tgz plus logs.
#
# BACKEND=simulated runs the same comparison on any machine, with no GPU: the server and
# engine_bench then compute nothing and each step sleeps for SIMULATED_STEP_US (default: 2B on an
# H200; engine/simulated_backend.h), so what differs between them is the server's own work alone:
#   BIN=build/cuda-sm90/bin BACKEND=simulated SKIP_SWEEP=1 OVERHEAD_CONCURRENCY=256 \
#     bench/run_device_serving.sh
# SERVER_EXTRA_FLAGS are appended to the server's flags (e.g. --noprefix_cache).
# OVERHEAD_SYNC_CACHE=1 adds the engine alone with the prefix cache's host copies synchronous.
set -uo pipefail
out=${OUT:-out}
mkdir -p "$out"
B=${BIN:-$PWD/.bundle/cuda}
export LD_LIBRARY_PATH=$B/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} PYTHONUNBUFFERED=1
PROTOCOL=${PROTOCOL:-grpc}
BACKEND=${BACKEND:-cuda}
BACKEND_FLAGS=(--backend $BACKEND)
[[ $BACKEND == simulated ]] && BACKEND_FLAGS+=(--simulated_step_us ${SIMULATED_STEP_US:-1950,7.4,8.5})
SERVER_FLAGS=(--slots 256 --max_batch 256 --token_budget ${TOKEN_BUDGET:-2048} --max_queue 4096
              "${BACKEND_FLAGS[@]}" ${SERVER_EXTRA_FLAGS:-})
results=/tmp/serving && rm -rf $results && mkdir -p $results
EB=$B/engine_bench
[[ -x $EB ]] || EB=$B/../bench/engine_bench  # a build tree's layout rather than a bundle's
{ date -u; command -v nvidia-smi > /dev/null &&
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv; nproc
  echo "backend $BACKEND ${SIMULATED_STEP_US:-}"; } | tee "$out/env.log"

PYTHON=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}
$PYTHON bench/make_dummy_model.py /tmp/rg2b > "$out/model.log" 2>&1 || cp -r .bundle/rg2b /tmp/rg2b || exit 1
$B/griffin-server --model /tmp/rg2b --load_format dummy "${SERVER_FLAGS[@]}" \
  --http_port 8000 --grpc_port 50051 > "$out/server.log" 2>&1 &
server=$!
for _ in $(seq 1 180); do curl -sf localhost:8000/ready > /dev/null && break; sleep 1; done
curl -sf localhost:8000/ready > /dev/null || { echo "server not ready"; tail "$out/server.log"; exit 1; }

# The engine thread's split over a run, from /metrics before and after it (the server's side of
# engine_bench --serving's "engine thread:" line).
engine_counters() {
  curl -s localhost:8000/metrics | awk '/^griffin_engine_(steps|busy_seconds|backend_seconds)_total/ {
    sub(/\{.*/, "", $1); printf "%s=%s ", $1, $2 }'
}
engine_split() {  # engine_split "BEFORE" "AFTER"
  $PYTHON -c 'import sys
b = dict(kv.split("=") for kv in sys.argv[1].split()); a = dict(kv.split("=") for kv in sys.argv[2].split())
d = {k.split("_")[2]: float(a[k]) - float(b[k]) for k in a}
s = max(d["steps"], 1)
print("engine thread: %d steps, per step %.3f ms busy = %.3f ms forward pass + %.3f ms host" % (
    d["steps"], 1e3 * d["busy"] / s, 1e3 * d["backend"] / s, 1e3 * (d["busy"] - d["backend"]) / s))' "$1" "$2"
}

# The overhead runs: for each concurrency, OVERHEAD_REPEATS rounds of the engine alone (without
# and with the server's prefix cache), then the server over gRPC, then over HTTP, all OVERHEAD_INPUT_LEN (1024) in / OVERHEAD_OUTPUT_LEN (128)
# out, 3 x C requests. The
# engine alone runs while the server idles (it holds its memory but steps nothing), so that each
# round's three figures share the GPU's state: separate phases of one call differed by more than
# the overhead being measured (bench/NOTES.md, session 14).
overhead_in=${OVERHEAD_INPUT_LEN:-1024} overhead_len=${OVERHEAD_OUTPUT_LEN:-128}
if [[ ${SKIP_OVERHEAD:-0} != 1 ]]; then
  for c in ${OVERHEAD_CONCURRENCY:-16 64 256}; do
    n=$((c * 3))
    for round in $(seq 1 ${OVERHEAD_REPEATS:-2}); do
      $EB --serving=$c --num_requests=$n --input_len=$overhead_in --output_len=$overhead_len \
        --token_budget=${TOKEN_BUDGET:-2048} --max_batch=256 "${BACKEND_FLAGS[@]}" 2>&1 |
        tail -2 | sed "s/^/engine c$c round $round: /"
      # The engine alone with the server's default prefix cache (64 MiB device, 1 GiB host): on
      # a simulated device its snapshots were the whole of the server's overhead (session 14).
      $EB --serving=$c --num_requests=$n --input_len=$overhead_in --output_len=$overhead_len \
        --token_budget=${TOKEN_BUDGET:-2048} --max_batch=256 "${BACKEND_FLAGS[@]}" \
        --prefix_cache_memory_mib=64 --prefix_cache_host_mib=1024 2>&1 |
        tail -3 | sed "s/^/engine+cache c$c round $round: /"
      # OVERHEAD_SYNC_CACHE=1: also with the cache's host copies waited for where they are made,
      # as before they ran beside the steps (session 15).
      [[ ${OVERHEAD_SYNC_CACHE:-0} == 1 ]] &&
        $EB --serving=$c --num_requests=$n --input_len=$overhead_in --output_len=$overhead_len \
          --token_budget=${TOKEN_BUDGET:-2048} --max_batch=256 "${BACKEND_FLAGS[@]}" \
          --prefix_cache_memory_mib=64 --prefix_cache_host_mib=1024 \
          --prefix_cache_sync_host_copies 2>&1 |
        tail -3 | sed "s/^/engine+synccache c$c round $round: /"
      for proto in grpc http; do
        port=$([[ $proto == grpc ]] && echo 50051 || echo 8000)
        tag=${proto}_c${c}_r$round
        before=$(engine_counters)
        $PYTHON bench/thread_cpu.py snapshot $server > $results/threads_before.json
        $B/griffin-bench --protocol $proto --port $port --concurrency $c --num_requests $n \
          --input_len $overhead_in --output_len $overhead_len --ignore_eos --progress=false \
          --warmup_requests 0 --result_json $results/overhead_$tag.json \
          > $results/overhead_$tag.log 2>&1
        $PYTHON bench/thread_cpu.py snapshot $server > $results/threads_after.json
        grep -E "Output token throughput|Failed" $results/overhead_$tag.log |
          sed "s/^/$proto c$c round $round: /"
        engine_split "$before" "$(engine_counters)" | sed "s/^/$proto c$c round $round: /"
        # The server's CPU by thread over the run (bench/thread_cpu.py), per 1000 output tokens.
        $PYTHON bench/thread_cpu.py diff $results/threads_before.json \
          $results/threads_after.json --tokens $((n * overhead_len)) |
          sed "s/^/$proto c$c round $round: /"
      done
    done
  done | tee "$out/overhead.log"
fi

# The sweep, once per protocol of $PROTOCOLS (default: $PROTOCOL) against the same server; an
# empty WORKLOAD_SHORT or WORKLOAD_LONG leaves that workload out.
workloads=()
[[ -n ${WORKLOAD_SHORT-1024:128:8} ]] && workloads+=(--workload ${WORKLOAD_SHORT-1024:128:8})
[[ -n ${WORKLOAD_LONG-2048:2048:10} ]] && workloads+=(--workload ${WORKLOAD_LONG-2048:2048:10})
if [[ ${SKIP_SWEEP:-0} != 1 ]]; then
  for proto in ${PROTOCOLS:-$PROTOCOL}; do
    $PYTHON bench/serving_sweep.py --bench $B/griffin-bench --out $results --protocol $proto \
      --port $([[ $proto == grpc ]] && echo 50051 || echo 8000) "${workloads[@]}" \
      --time_budget ${SWEEP_BUDGET:-300} --max_search_runs ${SEARCH_RUNS:-3} \
      --bench_arg=--token_id_range=10:255999 2>&1 | tail -40 | tee -a "$out/sweep.log"
  done
fi
curl -s localhost:8000/metrics > $results/metrics.txt
kill -TERM $server; wait $server; echo "server exit $?"

tar czf "$out/serving.tgz" -C $results .
