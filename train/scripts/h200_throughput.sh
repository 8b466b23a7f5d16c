#!/bin/bash
# Second H200 call: training throughput of ~100M-parameter Griffins with torch.compile.
#     bash train/scripts/h200_throughput.sh OUTDIR        (TINY=1: CPU dry run, no compile)
set -u
OUTDIR=${1:?usage: h200_throughput.sh OUTDIR}
mkdir -p "$OUTDIR"
export PYTHONPATH=$PWD/train PYTHONUNBUFFERED=1
R=/tmp/griffin_tp; rm -rf $R; mkdir -p $R
T0=$(date +%s)
if [ "${TINY:-0}" = 1 ]; then
  SIZE="--width 64 --layers 3 --heads 2 --window 64 --seq_len 64 --batch_size 2"; STEPS=4; CMP="--threads 1"
else
  SIZE="--width 1024 --layers 8 --heads 8 --window 2048 --seq_len 2048 --batch_size 16"; STEPS=60; CMP="--compile"
fi
COMMON="--no_progress --log_every 10 --lr 1e-3 --warmup 10 --steps $STEPS --eval_every 0 --eval_batches 1 $CMP"
# 1. real corpus (packed documents: masked attention, memory-efficient SDPA kernel)
timeout 170 python3 -m griffin_train.train $COMMON --data train/data --out $R/tp_real_1024 --arch griffin $SIZE \
  > $R/tp_real_1024.out 2>&1
tail -1 $R/tp_real_1024.out; echo "elapsed $(( $(date +%s) - T0 )) s"
# 2. synthetic tokens, one document per row (plain causal attention: flash kernel)
LEFT=$(( 260 - ($(date +%s) - T0) ))
[ $LEFT -gt 40 ] && timeout $LEFT python3 -m griffin_train.train $COMMON --synthetic --vocab 8192 \
  --out $R/tp_synth_1024 --arch griffin $SIZE > $R/tp_synth_1024.out 2>&1
tail -1 $R/tp_synth_1024.out; echo "elapsed $(( $(date +%s) - T0 )) s"
rm -f $R/*/ckpt.pt
tar -C $R -czf "$OUTDIR/tp.tar.gz" .
echo "total elapsed $(( $(date +%s) - T0 )) s"
