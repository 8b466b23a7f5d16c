"""What the three programs say about themselves and about the model they load (issue 18):
--help lists each program's own flags, --version names the version, commit and build type, the
server logs what it loads and names the folder in load errors, warns about missing files, picks
a served name, and renders chat with the Gemma turn markers when the tokenizer has them."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from server_harness import ROOT, Server, free_port

PROGRAMS = {
    "griffin-server": ROOT / "server" / "griffin_server_main.cc",
    "griffin-cli": ROOT / "server" / "griffin_cli.cc",
    "griffin-bench": ROOT / "bench" / "griffin_bench.cc",
}


def binary(name):
    bin_dir = os.environ.get("GRIFFIN_BIN")
    if not bin_dir or not (Path(bin_dir) / name).exists():
        pytest.fail(f"GRIFFIN_BIN ({bin_dir!r}) holds no {name}: build first (make test sets it)")
    return str(Path(bin_dir) / name)


def run(*args, timeout=60):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_help_lists_the_programs_own_flags(program):
    r = run(binary(program), "--help")
    assert r.returncode == 0, r.stderr
    assert "No flags matched" not in r.stdout
    source = PROGRAMS[program].read_text()
    names = re.findall(r"ABSL_FLAG\([^,]+,\s*(\w+),", source)
    assert len(names) > 10
    for name in names:
        assert f"--{name} (default " in r.stdout, name
    # Help text too, not only names: the first words of the last string literal of each flag.
    helps = [re.findall(r'"((?:[^"\\]|\\.)*)"', block.split('");')[0] + '"')[-1]
             for block in source.split("ABSL_FLAG(")[1:]]
    assert len(helps) == len(names)
    words = " ".join(r.stdout.split())
    for text in helps:
        assert " ".join(text.replace('\\"', '"').split()[:3]) in words, text
    assert "--flagfile" not in r.stdout  # Abseil's own flags stay in --helpfull


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_version_names_the_version_commit_and_build(program):
    r = run(binary(program), "--version")
    assert r.returncode == 0, r.stderr
    version = re.search(r"project\(griffin LANGUAGES \w+ VERSION ([\d.]+)\)",
                        (ROOT / "CMakeLists.txt").read_text()).group(1)
    m = re.fullmatch(rf"{program} {re.escape(version)} \(commit ([0-9a-f]{{12}}(?:-dirty)?|unknown), "
                     r"(RelWithDebInfo|Release|Debug|MinSizeRel)(, CUDA [^)]+\))?\)\n", r.stdout)
    assert m, r.stdout
    if (ROOT / ".git").exists():
        head = run("git", "-C", ROOT, "rev-parse", "--short=12", "HEAD").stdout.strip()
        assert m.group(1).split("-")[0] == head


def test_server_logs_version_and_what_it_loads():
    s = Server(model=ROOT / "tests" / "data" / "griffin")
    try:
        logs = s.logs()
    finally:
        assert s.stop() == 0
    assert re.search(r"info griffin-server \S+ \(commit ", logs), logs
    with open(ROOT / "tests/data/griffin/model.safetensors", "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    tensors = len([k for k in header if k != "__metadata__"])
    assert re.search(rf"loading \S*tests/data/griffin: {tensors} tensors, [\d.]+ GB", logs), logs
    assert re.search(r"loaded \S*tests/data/griffin in [\d.]+ s \(backend cpu, \d+ slots, "
                     r"weights bf16: \d+ bytes on a GPU\)", logs), logs


@pytest.mark.parametrize("missing", ["folder", "config", "weights"])
def test_load_errors_name_the_folder(missing, tmp_path):
    model = tmp_path / "my-model"
    if missing != "folder":
        shutil.copytree(ROOT / "tests" / "data" / "hawk", model)
        (model / ("config.json" if missing == "config" else "model.safetensors")).unlink()
    r = run(binary("griffin-server"), "--model", model, "--backend", "cpu", "--http_port",
            free_port(), "--grpc_port", free_port())
    assert r.returncode == 1
    assert f"startup failed: loading {model}: NOT_FOUND" in r.stdout + r.stderr
    r = run(binary("griffin-cli"), "score", "--model", model, "--ids", "2,3")
    assert r.returncode == 1 and f"loading {model}: " in r.stderr, r.stderr


def test_warns_when_the_folder_has_no_tokenizer_model(tmp_path):
    s = Server(model=ROOT / "tests" / "data" / "hawk")
    try:
        logs = s.logs()
    finally:
        assert s.stop() == 0
    assert "warning" in logs and "has no tokenizer.model: clients must send prompts as token ids" in logs


def copy_with_name(src, dst, name):
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config["_name_or_path"] = name
    (dst / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("recorded,served", [
    ("google/recurrentgemma-2b-it", "google/recurrentgemma-2b-it"),
    ("tiny-griffin", "tiny-griffin"),
    ("/home/someone/checkpoints/run7", "hf"),   # a local path is never served as a name
    ("../escape", "hf"),
])
def test_served_name_comes_from_config_when_it_is_a_model_id(recorded, served, tmp_path):
    copy_with_name(ROOT / "tests" / "data" / "hawk", tmp_path / "hf", recorded)
    s = Server(model=tmp_path / "hf")
    try:
        assert s.model == served
    finally:
        assert s.stop() == 0


def test_chat_uses_the_gemma_turn_markers_of_the_tokenizer():
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(ROOT / "tests/data/griffin/tokenizer.model"))
    start, end = sp.piece_to_id("<start_of_turn>"), sp.piece_to_id("<end_of_turn>")
    assert (start, end) == (4, 5)
    expected = ([sp.bos_id(), start] + sp.encode("user\nHi there") + [end] + sp.encode("\n")
                + [start] + sp.encode("model\n"))
    # Markers written as text (the server splits them so they cannot match the marker pieces).
    def literal(marker):
        return sp.encode(marker[0]) + sp.encode(marker[1:])
    as_text = ([sp.bos_id()] + literal("<start_of_turn>") + sp.encode("user\nHi there")
               + literal("<end_of_turn>") + sp.encode("\n") + literal("<start_of_turn>")
               + sp.encode("model\n"))
    assert len(as_text) != len(expected)  # the count tells the two renderings apart
    s = Server(model=ROOT / "tests" / "data" / "griffin")
    try:
        r = requests.post(s.url + "/v1/chat/completions", timeout=30, json={
            "model": s.model, "messages": [{"role": "user", "content": "Hi there"}],
            "max_tokens": 1})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens"] == len(expected)
    finally:
        assert s.stop() == 0


def test_cli_info_on_a_hawk_model_shows_no_attention():
    r = run(binary("griffin-cli"), "info", "--model", ROOT / "tests" / "data" / "hawk")
    assert r.returncode == 0, r.stderr
    assert "attention        none (all layers recurrent)" in r.stdout
    assert "window" not in r.stdout and "0.00 MiB" not in r.stdout and "KV" not in r.stdout
    # 3 layers x 64 channels: RG-LRU 768 B (fp32) + conv 3 x 3 x 64 x 2 B = 1,920 B.
    assert "state/sequence   1.88 KiB with bf16 activations (RG-LRU 768 B fp32, conv 1.12 KiB)" \
        in r.stdout
