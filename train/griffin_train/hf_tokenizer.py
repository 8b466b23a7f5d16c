"""Hugging Face fast-tokenizer files (tokenizer.json, tokenizer_config.json) made from a
SentencePiece tokenizer.model, offline, with transformers' own converter:

    python3 train/griffin_train/hf_tokenizer.py models/demo   # reads and writes in that folder

so that `AutoTokenizer.from_pretrained(folder)` works without the hub and gives griffin-server's
ids. BOS, as the server adds it: `tokenizer(text)` gives BOS + the SentencePiece ids of the text
(what griffin-server feeds for a text prompt); `tokenizer(text, add_special_tokens=False)` gives
the ids alone (what a token-id prompt is used as: the server adds nothing to it). Control pieces
(<bos>, <eos>, <pad>) written in text stay text, as in SentencePiece (split_special_tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def build(spm_path: str):
  """A PreTrainedTokenizerFast equal to the SentencePiece model (BPE or unigram)."""
  from tokenizers import processors
  from transformers import PreTrainedTokenizerFast
  from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

  proto = import_protobuf().ModelProto()
  with open(spm_path, "rb") as f:
    proto.ParseFromString(f.read())
  pieces = [(p.piece, p.score) for p in proto.pieces]
  if proto.trainer_spec.model_type == 2:  # BPE: merges ranked by piece score
    vocab = {piece: i for i, (piece, _) in enumerate(pieces)}
  elif proto.trainer_spec.model_type == 1:  # unigram
    vocab = pieces
  else:
    raise ValueError("only BPE and unigram SentencePiece models can be converted")
  tk = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab)
  names = {i: p.piece for i, p in enumerate(proto.pieces)}
  bos_id, eos_id = proto.trainer_spec.bos_id, proto.trainer_spec.eos_id
  pad_id, unk_id = proto.trainer_spec.pad_id, proto.trainer_spec.unk_id
  bos = names[bos_id]
  tk.post_processor = processors.TemplateProcessing(
      single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, bos_id)])
  special = {"bos_token": bos, "eos_token": names[eos_id], "unk_token": names[unk_id]}
  if pad_id >= 0:
    special["pad_token"] = names[pad_id]
  extra = [p.piece for p in proto.pieces if p.type == 4]  # user-defined (Gemma's turn markers)
  return PreTrainedTokenizerFast(tokenizer_object=tk, add_bos_token=True, add_eos_token=False,
                                 split_special_tokens=True, clean_up_tokenization_spaces=False,
                                 additional_special_tokens=extra or None, **special)


def write(model_dir: str, spm_path: str | None = None) -> list[str]:
  """Writes tokenizer.json and tokenizer_config.json into model_dir; returns their paths."""
  spm_path = spm_path or os.path.join(model_dir, "tokenizer.model")
  tok = build(spm_path)
  tok.model_max_length = _max_len(model_dir)
  saved = tok.save_pretrained(model_dir)
  keep = {"tokenizer.json", "tokenizer_config.json"}
  written = []
  for path in saved:  # only the two files: tokenizer.model stays the server's source of truth
    if os.path.basename(path) in keep:
      written.append(path)
    elif os.path.basename(path) == "special_tokens_map.json" and os.path.exists(path):
      os.remove(path)
  config = os.path.join(model_dir, "tokenizer_config.json")
  with open(config, encoding="utf-8") as f:
    cfg = json.load(f)
  cfg["tokenizer_class"] = "PreTrainedTokenizerFast"  # loads in transformers 4.x and 5.x alike
  # Keys only transformers 5 writes, which older releases misread (4.x takes
  # extra_special_tokens for a dict); without them 5.x loads the same tokenizer.
  cfg.pop("backend", None)
  if not cfg.get("extra_special_tokens"):
    cfg.pop("extra_special_tokens", None)
  with open(config, "w", encoding="utf-8") as f:
    json.dump(cfg, f, indent=2, sort_keys=True, ensure_ascii=False)
    f.write("\n")
  return sorted(written)


def _max_len(model_dir: str) -> int:
  # The server's default --max_prompt_tokens (its max_model_len), a hint for clients that truncate.
  return 8192


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("model_dir", help="folder with tokenizer.model; the two files are written there")
  p.add_argument("--spm", default=None, help="tokenizer.model elsewhere (default: the folder's)")
  args = p.parse_args(argv)
  for path in write(args.model_dir, args.spm):
    print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
