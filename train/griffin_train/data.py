"""Corpus, tokenizer and token files; packed training batches.

    python -m griffin_train.data --out train/data          # build everything (rerunnable)

Sources (Debian packages; install with
`apt-get install -y bible-kjv bible-kjv-text dict-gcide jargon-text`):

| source | package | file | licence | documents |
| --- | --- | --- | --- | --- |
| King James Bible (1611/1769 text) | bible-kjv-text (data) + bible-kjv (`bible` reader) | /usr/lib/bible.data | text public domain (outside the UK Crown patent); Debian package GPL-2+ | one per chapter (1,189) |
| GCIDE, the Collaborative International Dictionary of English 0.48 (Webster's 1913 + WordNet) | dict-gcide | /usr/share/dictd/gcide.dict.dz | GPL-2+ (Webster 1913 text public domain) | 30 consecutive entries per document |
| The Jargon File 4.4.7 | jargon-text | /usr/share/doc/jargon-text/jargon.txt.gz | public domain | ~4 KB runs of paragraphs |

Cleaning: KJV verse numbers dropped, one verse per line under a "Book N" heading; GCIDE
pronunciation marks (`\\Ab*do"men\\`) and source tags (`[1913 Webster]`, `[PJC]`, ...) removed,
wrapped lines re-joined into paragraphs; Jargon File table-of-contents and box-drawing lines
removed, paragraphs re-joined. Every document is NFC-normalised, whitespace-trimmed.

Split: document i goes to validation iff crc32(source/i) % 100 < 2 (2%, deterministic).
Tokenizer: SentencePiece BPE, vocab 8192, byte fallback, Gemma special ids (pad 0, eos 1,
bos 2, unk 3), trained on a fixed 1-in-4 sample of the training documents.
Token files: uint16, each document written as [bos] + ids + [eos]; `meta.json` records sizes and
sha256 of every input and output (the script checks them against a previous run when present).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import unicodedata
import zlib

import numpy as np

from .config import BOS, EOS, PAD, UNK

KJV_DATA = "/usr/lib/bible.data"
GCIDE = "/usr/share/dictd/gcide.dict.dz"
GCIDE_INDEX = "/usr/share/dictd/gcide.index"
JARGON = "/usr/share/doc/jargon-text/jargon.txt.gz"
VOCAB = 8192
VAL_PERCENT = 2


def _sha(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def _clean(text: str) -> str:
  text = unicodedata.normalize("NFC", text)
  return "\n".join(l.rstrip() for l in text.strip().splitlines())


def _require(path_or_prog: str, package: str) -> None:
  import shutil  # pylint: disable=import-outside-toplevel
  if not (os.path.exists(path_or_prog) or shutil.which(path_or_prog)):
    raise SystemExit(f"{path_or_prog} is missing: apt-get install -y {package}")


def kjv_documents() -> list[str]:
  _require("bible", "bible-kjv")
  _require(KJV_DATA, "bible-kjv-text")
  out = subprocess.run(["bible", "-l0", "Gen1:1-Rev22:21"], capture_output=True, text=True,
                       check=True).stdout
  docs, cur = [], []
  for line in out.splitlines():
    if not line.strip():
      continue
    m = re.match(r"^\s+\d+\s+(.*)$", line)
    if m:
      cur.append(m.group(1).strip())
    else:  # chapter heading, e.g. "Genesis 1"
      if cur:
        docs.append("\n".join(cur))
      cur = [line.strip()]
  if cur:
    docs.append("\n".join(cur))
  return [_clean(d) for d in docs if len(d) > 20]


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64(s: str) -> int:
  v = 0
  for ch in s:
    v = v * 64 + _B64.index(ch)
  return v


def _join_paragraphs(block: str) -> str:
  paras = re.split(r"\n\s*\n", block)
  out = []
  for p in paras:
    lines = [l.strip() for l in p.splitlines() if l.strip()]
    if lines:
      out.append(" ".join(lines))
  return "\n".join(out)


def gcide_documents(entries_per_doc: int = 30) -> list[str]:
  _require(GCIDE, "dict-gcide")
  with gzip.open(GCIDE, "rb") as f:
    data = f.read()
  seen, spans = set(), []
  with open(GCIDE_INDEX, encoding="utf-8", errors="replace") as f:
    for line in f:
      parts = line.rstrip("\n").split("\t")
      if len(parts) != 3 or parts[0].startswith("00-database"):
        continue
      off, ln = _b64(parts[1]), _b64(parts[2])
      if off not in seen:
        seen.add(off)
        spans.append((off, ln))
  spans.sort()
  entries = []
  for off, ln in spans:
    t = data[off:off + ln].decode("utf-8", errors="replace")
    t = re.sub(r"\\[^\\\n]{0,80}\\", "", t)                            # pronunciations
    t = re.sub(r"(?m)^\s*\[[^\]\n]{0,60}\]\s*$", "", t)                 # [1913 Webster] ...
    t = re.sub(r"\s*\[(?:1913 Webster|Webster 1913 Suppl\.|PJC|WordNet 1\.5|Century Dict\.)\]", "", t)
    t = re.sub(r"[{}]", "", t)
    t = re.sub(r" +,", ",", t)
    t = _join_paragraphs(t)
    if len(t) > 10:
      entries.append(t)
  docs = ["\n\n".join(entries[i:i + entries_per_doc])
          for i in range(0, len(entries), entries_per_doc)]
  return [_clean(d) for d in docs]


def jargon_documents(chunk_chars: int = 4000) -> list[str]:
  _require(JARGON, "jargon-text")
  with gzip.open(JARGON, "rt", encoding="utf-8", errors="replace") as f:
    text = f.read()
  text = re.sub(r"[\u2500-\u257f]+", "", text)  # box drawing rules
  paras = [_join_paragraphs(p) for p in re.split(r"\n\s*\n", text)]
  paras = [p for p in paras if len(p) > 40]     # drop TOC lines and headings alone
  docs, cur, n = [], [], 0
  for p in paras:
    cur.append(p)
    n += len(p)
    if n >= chunk_chars:
      docs.append("\n\n".join(cur))
      cur, n = [], 0
  if cur:
    docs.append("\n\n".join(cur))
  return [_clean(d) for d in docs]


def is_validation(source: str, i: int) -> bool:
  return zlib.crc32(f"{source}/{i}".encode()) % 100 < VAL_PERCENT


def train_tokenizer(docs: list[str], path: str, vocab: int = VOCAB) -> None:
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  lines = [l for d in docs[::4] for l in d.splitlines() if l.strip()]
  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab, model_type="bpe",
      pad_id=PAD, eos_id=EOS, bos_id=BOS, unk_id=UNK,
      pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
      byte_fallback=True, character_coverage=0.9999, normalization_rule_name="identity",
      add_dummy_prefix=False, remove_extra_whitespaces=False, split_digits=True,
      allow_whitespace_only_pieces=True, num_threads=2, input_sentence_size=400000,
      shuffle_input_sentence=False, max_sentence_length=20000, minloglevel=2)
  with open(path, "wb") as f:
    f.write(buf.getvalue())


def encode_docs(sp, docs: list[str]) -> np.ndarray:
  ids = sp.encode(docs, out_type=int, num_threads=2)
  total = sum(len(x) + 2 for x in ids)
  out = np.empty(total, dtype=np.uint16)
  i = 0
  for x in ids:
    out[i] = BOS
    out[i + 1:i + 1 + len(x)] = x
    out[i + 1 + len(x)] = EOS
    i += len(x) + 2
  return out


def build(out_dir: str, vocab: int = VOCAB) -> dict:
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  os.makedirs(out_dir, exist_ok=True)
  sources = {"kjv": kjv_documents, "gcide": gcide_documents, "jargon": jargon_documents}
  train_docs, val_docs, stats = [], [], {}
  for name, fn in sources.items():
    docs = fn()
    tr = [d for i, d in enumerate(docs) if not is_validation(name, i)]
    va = [d for i, d in enumerate(docs) if is_validation(name, i)]
    train_docs += tr
    val_docs += va
    stats[name] = {"documents": len(docs), "train_documents": len(tr),
                   "val_documents": len(va), "chars": sum(len(d) for d in docs)}
    print(f"{name}: {len(docs)} documents, {stats[name]['chars']:,} characters")
  for split, docs in (("train", train_docs), ("val", val_docs)):
    with open(os.path.join(out_dir, f"{split}.txt"), "w", encoding="utf-8") as f:
      f.write("\n\x1e\n".join(docs))  # record separator between documents
  tok = os.path.join(out_dir, "tokenizer.model")
  train_tokenizer(train_docs, tok, vocab)
  sp = spm.SentencePieceProcessor(model_file=tok)
  assert (sp.pad_id(), sp.eos_id(), sp.bos_id(), sp.unk_id()) == (PAD, EOS, BOS, UNK)
  meta = {"vocab_size": sp.get_piece_size(), "sources": stats, "inputs": {}, "outputs": {}}
  for path in (KJV_DATA, GCIDE, GCIDE_INDEX, JARGON):
    meta["inputs"][path] = {"bytes": os.path.getsize(path), "sha256": _sha(path)}
  for split, docs in (("train", train_docs), ("val", val_docs)):
    arr = encode_docs(sp, docs)
    arr.tofile(os.path.join(out_dir, f"{split}.bin"))
    meta[f"{split}_tokens"] = int(arr.size)
  for name in ("train.txt", "val.txt", "tokenizer.model", "train.bin", "val.bin"):
    p = os.path.join(out_dir, name)
    meta["outputs"][name] = {"bytes": os.path.getsize(p), "sha256": _sha(p)}
  mp = os.path.join(out_dir, "meta.json")
  if os.path.exists(mp):
    with open(mp, encoding="utf-8") as f:
      old = json.load(f)
    same = old.get("outputs") == meta["outputs"]
    print("outputs identical to the previous run" if same else
          "NOTE: outputs differ from the previous run's meta.json")
  with open(mp, "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=2)
    f.write("\n")
  print(f"train {meta['train_tokens']:,} tokens, val {meta['val_tokens']:,} tokens, "
        f"vocab {meta['vocab_size']}")
  return meta


# ---- training batches -------------------------------------------------------------------------
class TokenStream:
  """Random windows of a packed uint16 token file. A window of T+1 tokens gives inputs [:T] and
  targets [1:]; positions restart at every BOS (tokens before the first BOS of a window are a
  document that started earlier: their positions are continued from the true document start, so
  that no spurious reset happens at the window's first token unless a document starts there)."""

  def __init__(self, path: str, seq_len: int, seed: int = 0, rank: int = 0, world: int = 1):
    self.data = np.memmap(path, dtype=np.uint16, mode="r")
    self.seq_len = seq_len
    self.rng = np.random.default_rng(seed * 1000 + rank)
    bos = np.flatnonzero(self.data == BOS)
    self.bos = bos
    assert len(self.data) > seq_len + 1, "token file shorter than one sequence"

  def _start_pos(self, starts):
    # position of token `s` inside its document: s - (last BOS at or before s)
    k = np.searchsorted(self.bos, starts, side="right") - 1
    prev = np.where(k >= 0, self.bos[np.maximum(k, 0)], 0)
    return starts - prev

  def batch(self, batch_size: int, starts=None):
    import torch  # pylint: disable=import-outside-toplevel
    T = self.seq_len
    if starts is None:
      starts = self.rng.integers(0, len(self.data) - T - 1, size=batch_size)
    starts = np.asarray(starts)
    rows = np.stack([self.data[s:s + T + 1] for s in starts]).astype(np.int64)
    tokens = torch.from_numpy(rows)
    from .model import positions_from_tokens  # pylint: disable=import-outside-toplevel
    start = torch.from_numpy(self._start_pos(starts).astype(np.int64))
    pos = positions_from_tokens(tokens[:, :-1], BOS, start)
    targets = tokens[:, 1:].clone()
    targets[targets == BOS] = -100   # the token after EOS is always BOS: not scored
    return tokens[:, :-1], pos, targets

  def eval_starts(self, n: int, batch_size: int):
    """Fixed, evenly spread windows (the same for every run)."""
    T = self.seq_len
    span = len(self.data) - T - 1
    total = n * batch_size
    return np.linspace(0, span, total, dtype=np.int64).reshape(n, batch_size)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "data"))
  p.add_argument("--vocab", type=int, default=VOCAB)
  args = p.parse_args(argv)
  build(os.path.abspath(args.out), args.vocab)


if __name__ == "__main__":
  main()
