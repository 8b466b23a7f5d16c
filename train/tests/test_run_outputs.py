"""What a training run leaves for others: summary.json stays valid JSON with the real loss when a
finished run's command is run again, and exported folders are readable by other users (the
images serve models as uid 10001) and carry the name griffin-server serves them under."""

import json
import os
import shutil
import stat
from pathlib import Path

from griffin_train import export, train as train_mod

from helpers import tiny, write_tiny_corpus

ROOT = Path(__file__).resolve().parents[2]


def strict_json(path):
  def reject(constant):
    raise ValueError(f"{path} holds {constant}, which is not JSON")
  with open(path, encoding="utf-8") as f:
    return json.load(f, parse_constant=reject)


def test_rerunning_a_finished_run_keeps_its_loss(tmp_path):
  data = write_tiny_corpus(str(tmp_path / "data"), n_docs=60)
  shutil.copy(ROOT / "tests" / "data" / "griffin" / "tokenizer.model", tmp_path / "data")
  out = str(tmp_path / "run")
  command = ["--data", data, "--out", out, "--arch", "hawk", "--width", "16", "--layers", "1",
             "--heads", "2", "--seq_len", "16", "--batch_size", "2", "--steps", "4",
             "--warmup", "1", "--log_every", "2", "--eval_every", "0", "--eval_batches", "1",
             "--no_progress", "--threads", "1", "--seed", "1", "--export", str(tmp_path / "hf")]
  first = train_mod.main(command)
  loss = strict_json(os.path.join(out, "summary.json"))["final_train_loss"]
  assert loss == first["final_train_loss"] and loss > 0
  again = train_mod.main(command)  # nothing left to train: resumes at step 4 and stops
  assert again["steps"] == 4
  summary = strict_json(os.path.join(out, "summary.json"))
  assert summary["final_train_loss"] == loss
  # The export names the model after its run.
  assert json.loads((tmp_path / "hf" / "config.json").read_text())["_name_or_path"] == "run"


def test_exported_weights_are_readable_by_other_users(tmp_path):
  old = os.umask(0o022)
  try:
    export.export_model(tiny("hawk"), str(tmp_path), dtype="bfloat16", name="tiny-hawk")
  finally:
    os.umask(old)
  for f in tmp_path.iterdir():
    assert stat.S_IMODE(f.stat().st_mode) == 0o644, f.name
  assert json.loads((tmp_path / "config.json").read_text())["_name_or_path"] == "tiny-hawk"
