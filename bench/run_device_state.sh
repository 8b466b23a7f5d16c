#!/usr/bin/env bash
# The GPU run behind bench/RESULTS.md's state-cache figures (issue 15): griffin-server with
# recurrentgemma-2b shapes and random weights (--load_format dummy), driven by griffin-bench:
#  1. a shared 2048-token prefix + 128 new tokens, one request at a time: TTFT with the prefix
#     cache against a server started with --noprefix_cache;
#  2. 10-turn conversations of 512-token messages: TTFT per turn, sent in full (the cache restores
#     the longest cached prefix) and through session_id, and in full without the cache;
#  3. n = 8 of one 1024-token prompt: prompt tokens computed (the metric) against n x prompt.
# Run from the repository root on the GPU machine with griffin-server and griffin-bench bundled in
# .bundle/cuda. Results go to $OUT (or ./out).
set -uo pipefail
final=${OUT:-out}
out=/tmp/state_run && rm -rf $out && mkdir -p $out "$final"  # every log, one archive at the end
B=${BUNDLE:-$PWD/.bundle/cuda}  # griffin-server and griffin-bench, bundled
export LD_LIBRARY_PATH=$B/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} PYTHONUNBUFFERED=1
{ date -u; git rev-parse --short HEAD 2>/dev/null; nvidia-smi --query-gpu=name,driver_version --format=csv; } | tee "$out/env.log"
python3 bench/make_dummy_model.py /tmp/rg2b > "$out/model.log" 2>&1 || exit 1
BENCH=($B/griffin-bench --protocol grpc --port 50051 --token_id_range=10:255999 --ignore_eos
       --progress=false)
start() {
  $B/griffin-server --model /tmp/rg2b --load_format dummy --backend cuda --slots 16 --max_batch 16 \
    --http_port 8000 --grpc_port 50051 ${SERVER_EXTRA:-} "$@" > "$out/server_$tag.log" 2>&1 &
  server=$!
  for _ in $(seq 1 120); do curl -sf localhost:8000/ready > /dev/null && return 0; sleep 1; done
  echo "server $tag not ready"; tail "$out/server_$tag.log"; return 1
}
stop() { curl -s localhost:8000/metrics | grep -E "^griffin_(prefix|prompt|state|session)" > "$out/metrics_$tag.txt"; kill -TERM $server; wait $server; }
for tag in cache nocache; do
  flags=(--prefix_cache_memory_mib 1024)
  [[ $tag == nocache ]] && flags=(--noprefix_cache)
  start "${flags[@]}" || continue
  [[ -z ${SKIP_PREFIX:-} ]] && "${BENCH[@]}" --shared_prefix_len 2048 --input_len 128 --output_len 8 --num_requests 12 \
    --concurrency 1 --result_json "$out/prefix_$tag.json" > "$out/prefix_$tag.log" 2>&1
  grep -E "TTFT" "$out/prefix_$tag.log" | head -3 | sed "s/^/prefix $tag: /"
  for mode in full session; do
    [[ $tag == nocache && $mode == session ]] && continue
    "${BENCH[@]}" --multi_turn 10 --multi_turn_mode $mode --input_len 512 --output_len 32 \
      --num_requests 3 --concurrency 1 --warmup_requests 0 --seed 7 \
      --result_json "$out/turns_${tag}_$mode.json" > "$out/turns_${tag}_$mode.log" 2>&1
    echo "turns $tag $mode rc=$?"
    python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
def find(o):
    if isinstance(o, dict):
        if 'ttft_by_turn' in o: return o['ttft_by_turn']
        for v in o.values():
            r = find(v)
            if r is not None: return r
    if isinstance(o, list):
        for v in o:
            r = find(v)
            if r is not None: return r
print(json.dumps(find(d)))" "$out/turns_${tag}_$mode.json" | sed "s/^/turns $tag $mode: /"
  done
  if [[ $tag == cache ]]; then
    before=$(curl -s localhost:8000/metrics | awk '/^griffin_prompt_tokens_computed_total/ {print $2}')
    python3 - > "$out/n8.log" 2>&1 <<'PY'
import json, random, urllib.request
random.seed(3)
prompt = [random.randrange(10, 255999) for _ in range(1024)]
model = json.load(urllib.request.urlopen("http://localhost:8000/v1/models"))["data"][0]["id"]
body = json.dumps({"model": model, "prompt": prompt, "n": 8, "max_tokens": 4, "temperature": 1.0,
                   "seed": 1}).encode()
req = urllib.request.Request("http://localhost:8000/v1/completions", body,
                             {"Content-Type": "application/json"})
r = json.load(urllib.request.urlopen(req, timeout=120))
print("choices", len(r["choices"]), "usage", r["usage"])
PY
    after=$(curl -s localhost:8000/metrics | awk '/^griffin_prompt_tokens_computed_total/ {print $2}')
    echo "n=8 of a 1024-token prompt: prompt tokens computed $before -> $after; $(cat "$out/n8.log")"
  fi
  stop
done
tar czf "$final/state.tgz" -C $out .
