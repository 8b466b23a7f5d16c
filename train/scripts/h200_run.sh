#!/bin/bash
# The one H200 run behind train/README.md's figures (demo model, comparison, throughput).
# Run from the repository root with the corpus built in train/data:
#     bash train/scripts/h200_run.sh OUTDIR
# TINY=1 shrinks every run to seconds (a CPU dry run of the whole script).
set -u
OUTDIR=${1:?usage: h200_run.sh OUTDIR}
mkdir -p "$OUTDIR"
export PYTHONPATH=$PWD/train PYTHONUNBUFFERED=1
R=/tmp/griffin_runs; rm -rf $R; mkdir -p $R
T0=$(date +%s)
TINY=${TINY:-0}
# budgets (seconds of training) and sizes
if [ "$TINY" = 1 ]; then
  DEMO_T=8; CMP_T=8; CMP_STEPS=30; TP_STEPS=4; EXTRA="--threads 1"; BIG="--width 64 --layers 3 --heads 2 --lru_width 64 --window 32 --seq_len 64 --batch_size 2"
  DEMO="--width 64 --layers 3 --heads 2 --window 32 --seq_len 64 --batch_size 4"; CMPB="--seq_len 64 --batch_size 4"; CMPW="--width 64 --layers 3 --heads 2"
else
  DEMO_T=210; CMP_T=210; CMP_STEPS=3000; TP_STEPS=80; EXTRA=""; BIG="--width 768 --layers 12 --heads 8 --lru_width 1024 --window 1024 --seq_len 2048 --batch_size 16"
  DEMO="--width 288 --layers 9 --heads 4 --window 256 --seq_len 512 --batch_size 64"; CMPB="--seq_len 512 --batch_size 32"; CMPW="--width 256 --layers 6 --heads 4"
fi
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
  python3 -c 'import triton; print("triton", triton.__version__)' 2>&1; } > $R/env.txt
cat $R/env.txt
# 1. Triton scan parity (forward + gradients vs a float64 reference); fall back if it fails.
timeout 180 python3 -m griffin_train.scan --check > $R/scan_check.json 2> $R/scan_check.err
cat $R/scan_check.json; tail -3 $R/scan_check.err
SCAN=$(python3 - "$R/scan_check.json" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))["triton"]
    print("triton" if max(r.values()) < 1e-3 else "parallel")
except Exception:
    print("parallel")
PY
)
echo "scan backend: $SCAN"
COMMON="--data train/data --no_progress --log_every 20 --scan $SCAN $EXTRA"
# 2. The demo model and the three comparison models, concurrently (small models are launch-bound).
timeout $((DEMO_T + 90)) python3 -m griffin_train.train $COMMON --out $R/demo --arch griffin $DEMO \
  --lr 2e-3 --warmup 200 --steps 1000000 --time_budget $DEMO_T --eval_every 500 --eval_batches 16 \
  --export $R/demo_hf --export_dtype bfloat16 > $R/demo.out 2>&1 &
P=$(python3 -c "
import sys; sys.path.insert(0, 'train')
from griffin_train.config import make_config
import shlex
a = dict(zip(*[iter(shlex.split('$CMPW'))]*2))
print(make_config('griffin', vocab_size=8192, width=int(a['--width']), num_layers=int(a['--layers']), num_heads=int(a['--heads'])).num_params())")
echo "comparison target parameters: $P"
for arch in griffin hawk mqa; do
  W=256; [ $arch = mqa ] && W=512
  [ "$TINY" = 1 ] && W=32
  timeout $((CMP_T + 90)) python3 -m griffin_train.train $COMMON --out $R/cmp_$arch --arch $arch $CMPW $CMPB \
    --window $W --match_params $P --lr 2e-3 --warmup 200 --steps $CMP_STEPS --time_budget $CMP_T \
    --eval_every 250 --eval_batches 16 > $R/cmp_$arch.out 2>&1 &
done
wait
for f in demo cmp_griffin cmp_hawk cmp_mqa; do echo "== $f"; tail -2 $R/$f.out; done
echo "elapsed $(( $(date +%s) - T0 )) s"
# 3. Throughput of a ~100M Griffin on the GPU alone: eager, then torch.compile (if it works).
timeout 120 python3 -m griffin_train.train $COMMON --out $R/tp_eager --arch griffin $BIG --lr 1e-3 \
  --warmup 10 --steps $TP_STEPS --eval_every 0 --eval_batches 1 > $R/tp_eager.out 2>&1
tail -1 $R/tp_eager.out
echo "elapsed $(( $(date +%s) - T0 )) s"
LEFT=$(( 480 - ($(date +%s) - T0) ))
if [ "$TINY" != 1 ] && [ $LEFT -gt 60 ]; then
  timeout $LEFT python3 -m griffin_train.train $COMMON --out $R/tp_compile --arch griffin $BIG \
    --lr 1e-3 --warmup 10 --steps $TP_STEPS --eval_every 0 --eval_batches 1 --compile \
    > $R/tp_compile.out 2>&1
  tail -1 $R/tp_compile.out
fi
# 4. Pack: the exported demo model (split into <16 MiB parts) and every log.
rm -f $R/*/ckpt.pt
tar -C $R -cf /tmp/griffin_all.tar .
split -b 15m -d /tmp/griffin_all.tar "$OUTDIR/runs.tar.part"
ls -la "$OUTDIR"
echo "total elapsed $(( $(date +%s) - T0 )) s"
