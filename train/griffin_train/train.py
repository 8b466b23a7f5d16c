"""Train a Griffin / Hawk / MQA-Transformer language model.

One entry point for the CPU, one GPU, or several GPUs (torchrun + DistributedDataParallel):

    python -m griffin_train.train --data train/data --arch griffin --out train/runs/x
    torchrun --nproc_per_node 8 -m griffin_train.train --data train/data ...

AdamW (weight decay on matrices only), linear warm-up then cosine decay to `min_lr_ratio` x lr
(progress = the larger of step/steps and elapsed/time_budget, so time-budgeted runs decay fully),
bf16 autocast on the GPU, gradient clipping and accumulation, checkpoint + automatic resume from
<out>/ckpt.pt, validation loss every `eval_every` steps on fixed windows, a tqdm progress bar
(loss, tokens/s, MFU) and a JSON-lines log <out>/log.jsonl plus <out>/summary.json.
MFU = model FLOPs per token (config.flops_per_token) x tokens/s / (world x peak), peak 790 TFLOP/s
on CUDA by default (--peak_tflops).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time

import numpy as np
import torch
import torch.distributed as dist

from . import scan as scan_lib
from .config import ModelConfig, make_config, match_params
from .data import TokenStream
from .model import GriffinLM


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  a = p.add_argument
  a("--data", default=None, help="folder with train.bin, val.bin, tokenizer.model, meta.json")
  a("--synthetic", action="store_true", help="random tokens (throughput measurements)")
  a("--out", required=True)
  a("--arch", default="griffin", choices=["griffin", "hawk", "mqa"])
  a("--width", type=int, default=256)
  a("--layers", type=int, default=6)
  a("--heads", type=int, default=4)
  a("--lru_width", type=int, default=None)
  a("--mlp_width", type=int, default=None)
  a("--window", type=int, default=512)
  a("--vocab", type=int, default=None, help="default: from the data's meta.json")
  a("--match_params", type=int, default=None,
    help="set mlp_width so the model has about this many parameters")
  a("--seq_len", type=int, default=512)
  a("--batch_size", type=int, default=16, help="sequences per device per micro-step")
  a("--grad_accum", type=int, default=1)
  a("--lr", type=float, default=3e-3)
  a("--min_lr_ratio", type=float, default=0.1)
  a("--warmup", type=int, default=100)
  a("--steps", type=int, default=1000)
  a("--time_budget", type=float, default=0.0, help="seconds; stop (and finish decay) by then")
  a("--weight_decay", type=float, default=0.1)
  a("--beta2", type=float, default=0.95)
  a("--clip", type=float, default=1.0)
  a("--eval_every", type=int, default=200)
  a("--eval_batches", type=int, default=8)
  a("--ckpt_every", type=int, default=0, help="0: only at the end")
  a("--log_every", type=int, default=10)
  a("--seed", type=int, default=0)
  a("--device", default="auto")
  a("--scan", default="auto", choices=["auto", "parallel", "triton", "loop"])
  a("--compile", action="store_true")
  a("--peak_tflops", type=float, default=790.0)
  a("--threads", type=int, default=0, help="torch CPU threads (0: leave)")
  a("--export", default=None, help="export the final model to this folder (HF layout)")
  a("--export_dtype", default="float32")
  a("--no_progress", action="store_true")
  return p.parse_args(argv)


def build_config(args) -> ModelConfig:
  kw = dict(vocab_size=args.vocab, width=args.width, num_layers=args.layers,
            num_heads=args.heads, lru_width=args.lru_width, mlp_width=args.mlp_width,
            window=args.window)
  if args.match_params:
    kw.pop("mlp_width")
    return match_params(args.arch, args.match_params, **kw)
  return make_config(args.arch, **kw)


def lr_at(args, step: int, elapsed: float) -> float:
  if step < args.warmup:
    return args.lr * (step + 1) / args.warmup
  prog = (step - args.warmup) / max(1, args.steps - args.warmup)
  if args.time_budget > 0:
    prog = max(prog, elapsed / args.time_budget)
  prog = min(1.0, prog)
  return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * prog)))


class SyntheticStream:
  def __init__(self, vocab, seq_len, seed):
    self.vocab, self.seq_len = vocab, seq_len
    self.g = torch.Generator().manual_seed(seed)

  def batch(self, batch_size, starts=None):
    t = torch.randint(4, self.vocab, (batch_size, self.seq_len + 1), generator=self.g)
    t[:, 0] = 2
    pos = torch.arange(self.seq_len).expand(batch_size, -1).contiguous()
    return t[:, :-1], pos, t[:, 1:].clone()

  def eval_starts(self, n, batch_size):
    return [None] * n


def main(argv=None):
  args = parse_args(argv)
  world = int(os.environ.get("WORLD_SIZE", "1"))
  rank = int(os.environ.get("RANK", "0"))
  local_rank = int(os.environ.get("LOCAL_RANK", "0"))
  if args.threads:
    torch.set_num_threads(args.threads)
  if args.device == "auto":
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
  if args.device == "cuda":
    torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
  else:
    device = torch.device("cpu")
  if world > 1:
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
  master = rank == 0
  torch.manual_seed(args.seed)

  meta = {}
  if args.data:
    with open(os.path.join(args.data, "meta.json"), encoding="utf-8") as f:
      meta = json.load(f)
    if args.vocab is None:
      args.vocab = meta["vocab_size"]
    args.tokenizer = os.path.abspath(os.path.join(args.data, "tokenizer.model"))
  else:
    args.tokenizer = None
  if args.vocab is None:
    args.vocab = 8192
  cfg = build_config(args)
  model = GriffinLM(cfg, args.scan)
  model.reset_parameters(seed=args.seed)
  model.to(device)
  scan_name = scan_lib.resolve_backend(args.scan, device)

  if args.synthetic:
    train_data = SyntheticStream(cfg.vocab_size, args.seq_len, args.seed * 1000 + rank)
    val_data = SyntheticStream(cfg.vocab_size, args.seq_len, 12345)
  else:
    train_data = TokenStream(os.path.join(args.data, "train.bin"), args.seq_len, args.seed,
                             rank, world)
    val_data = TokenStream(os.path.join(args.data, "val.bin"), args.seq_len)
  eval_starts = val_data.eval_starts(args.eval_batches, args.batch_size)

  decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
  no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=args.lr, betas=(0.9, args.beta2), eps=1e-8,
                          fused=device.type == "cuda")

  os.makedirs(args.out, exist_ok=True)
  ckpt_path = os.path.join(args.out, "ckpt.pt")
  step, tokens_seen, train_time = 0, 0, 0.0
  resumed_loss = float("nan")
  if os.path.exists(ckpt_path):
    ck = torch.load(ckpt_path, map_location=device, weights_only=False)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["opt"])
    step, tokens_seen, train_time = ck["step"], ck["tokens_seen"], ck["train_time"]
    resumed_loss = ck.get("train_loss", float("nan"))
    if "rng" in ck and not args.synthetic:
      train_data.rng.bit_generator.state = ck["rng"][rank] if isinstance(ck["rng"], list) else ck["rng"]
    if master:
      print(f"resumed from {ckpt_path} at step {step}")

  fwd_model = model
  if args.compile:
    fwd_model = torch.compile(model)
  ddp = None
  if world > 1:
    ddp = torch.nn.parallel.DistributedDataParallel(
        fwd_model, device_ids=[local_rank] if device.type == "cuda" else None)
    fwd_model = ddp
  amp = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
         else contextlib.nullcontext())

  def run_loss(m, batch):
    tokens, pos, targets = (t.to(device, non_blocking=True) for t in batch)
    with amp:
      return m.loss(tokens, pos, targets) if m is model else m(tokens, pos, targets)

  # DDP/compile wrap forward(); route loss through a small adapter.
  class _LossAdapter(torch.nn.Module):
    def __init__(self, inner):
      super().__init__()
      self.inner = inner

    def forward(self, tokens, pos, targets):
      return self.inner.loss(tokens, pos, targets)

  if fwd_model is not model:
    base = torch.compile(_LossAdapter(model)) if args.compile else _LossAdapter(model)
    fwd_model = (torch.nn.parallel.DistributedDataParallel(
        base, device_ids=[local_rank] if device.type == "cuda" else None) if world > 1 else base)

  @torch.no_grad()
  def evaluate():
    model.eval()
    losses = []
    for s in eval_starts:
      b = val_data.batch(args.batch_size, s)
      losses.append(run_loss(model, b).float().item())
    model.train()
    return float(np.mean(losses))

  flops_tok = cfg.flops_per_token(args.seq_len)
  tokens_per_step = args.batch_size * args.seq_len * args.grad_accum * world
  log_f = open(os.path.join(args.out, "log.jsonl"), "a", encoding="utf-8") if master else None

  def log(rec):
    if log_f:
      log_f.write(json.dumps(rec) + "\n")
      log_f.flush()

  if master:
    info = {"event": "start", "config": cfg.to_dict(), "params": cfg.num_params(),
            "flops_per_token": flops_tok, "tokens_per_step": tokens_per_step, "world": world,
            "device": str(device), "scan": scan_name, "args": vars(args),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    log(info)
    print(f"{args.arch}: {cfg.num_params():,} parameters, {tokens_per_step:,} tokens/step, "
          f"scan={scan_name}, device={device}, world={world}")

  bar = None
  if master and not args.no_progress:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    bar = tqdm(total=args.steps, initial=step, dynamic_ncols=True, mininterval=1.0)

  def save():
    if not master:
      return
    rng = train_data.rng.bit_generator.state if not args.synthetic else None
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "config": cfg.to_dict(),
                "step": step, "tokens_seen": tokens_seen, "train_time": train_time,
                "train_loss": loss_val, "args": vars(args), "rng": rng}, ckpt_path + ".tmp")
    os.replace(ckpt_path + ".tmp", ckpt_path)

  model.train()
  last_val = None
  window_t, window_tok = time.time(), 0
  # A resumed run that has no step left (rerunning a finished command) reports the loss it ended
  # with: from the checkpoint, or for checkpoints without it the last logged loss.
  rate, mfu, loss_val = 0.0, 0.0, resumed_loss
  if step > 0 and not math.isfinite(loss_val) and master and os.path.exists(
      os.path.join(args.out, "log.jsonl")):
    with open(os.path.join(args.out, "log.jsonl"), encoding="utf-8") as f:
      logged = [json.loads(l) for l in f if '"loss"' in l]
    logged = [r["loss"] for r in logged if isinstance(r.get("loss"), (int, float))]
    loss_val = logged[-1] if logged else loss_val
  t_start = time.time() - train_time
  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
  while step < args.steps:
    elapsed = time.time() - t_start
    if args.time_budget > 0 and elapsed >= args.time_budget:
      break
    lr = lr_at(args, step, elapsed)
    for g in opt.param_groups:
      g["lr"] = lr
    loss_acc = torch.zeros((), device=device)
    for micro in range(args.grad_accum):
      batch = train_data.batch(args.batch_size)
      ctx = (ddp.no_sync() if (ddp is not None and micro < args.grad_accum - 1)
             else contextlib.nullcontext())
      with ctx:
        loss = run_loss(fwd_model, batch) / args.grad_accum
        loss.backward()
      loss_acc += loss.detach()
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    step += 1
    tokens_seen += tokens_per_step
    window_tok += tokens_per_step
    if step % args.log_every == 0 or step == args.steps:
      if world > 1:
        dist.all_reduce(loss_acc)
        loss_acc /= world
      loss_val = loss_acc.item()   # synchronises
      now = time.time()
      rate = window_tok / max(1e-9, now - window_t)
      mfu = flops_tok * rate / (world * args.peak_tflops * 1e12) if device.type == "cuda" else 0.0
      window_t, window_tok = now, 0
      train_time = now - t_start
      log({"step": step, "loss": loss_val, "lr": lr, "grad_norm": float(gnorm),
           "tokens": tokens_seen, "tokens_per_s": rate, "mfu": mfu, "time": train_time})
    if bar:
      bar.update(1)
      bar.set_postfix_str((f"loss {loss_val:.3f} {rate:,.0f} tok/s MFU {100 * mfu:.1f}%"
                           if loss_val == loss_val else "warming up")
                          + (f" val {last_val:.3f}" if last_val is not None else ""))
    if args.eval_every and step % args.eval_every == 0:
      sync()
      t0 = time.time()
      last_val = evaluate()
      log({"step": step, "val_loss": last_val, "tokens": tokens_seen})
      t_start += time.time() - t0        # evaluation time is not training time
      window_t += time.time() - t0
    if args.ckpt_every and step % args.ckpt_every == 0:
      save()
  if bar:
    bar.close()
  sync()
  train_time = time.time() - t_start
  final_val = evaluate()
  # mean throughput over the logged records after the first 20% of steps (compile/warm-up)
  rates = []
  if master:
    with open(os.path.join(args.out, "log.jsonl"), encoding="utf-8") as f:
      recs = [json.loads(l) for l in f if '"tokens_per_s"' in l]
    recs = [r for r in recs if r["step"] > 0.2 * step] or recs
    rates = [r["tokens_per_s"] for r in recs]
  steady = float(np.median(rates)) if rates else 0.0
  summary = {"event": "end", "arch": args.arch, "params": cfg.num_params(), "steps": step,
             "tokens_seen": tokens_seen, "train_time_s": train_time,
             "tokens_per_s_mean": tokens_seen / max(1e-9, train_time),
             "tokens_per_s_steady": steady,
             "mfu_steady": (flops_tok * steady / (world * args.peak_tflops * 1e12)
                            if device.type == "cuda" else 0.0),
             # null, not NaN (invalid JSON), if no step ever logged a loss
             "final_train_loss": loss_val if math.isfinite(loss_val) else None,
             "final_val_loss": final_val,
             "final_val_ppl": math.exp(final_val), "world": world, "device": str(device)}
  if master:
    log(summary)
    with open(os.path.join(args.out, "summary.json"), "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=2, allow_nan=False)
    print(json.dumps(summary, allow_nan=False))
  save()
  if master and args.export:
    from .export import export_model  # pylint: disable=import-outside-toplevel
    export_model(model, args.export, args.tokenizer, args.export_dtype,
                 name=os.path.basename(os.path.normpath(args.out)))
    print(f"exported to {args.export}")
  if world > 1:
    dist.barrier()
    dist.destroy_process_group()
  return summary


if __name__ == "__main__":
  main()
