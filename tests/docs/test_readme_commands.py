"""Docs that run as written (issue 18): the shell commands of README.md and of every folder's
README.md run here, verbatim, so the docs cannot drift from the code again.

Every ```sh / ```bash / ```python block of those files carries an HTML comment on the line above:

  <!-- docs-test -->               run it: bash -euo pipefail (python for python blocks), from the
                                   root of a copy of the checkout, as a user would after `make test`
  <!-- docs-test: server -->       run it while a griffin-server serves the default model (what
                                   `make serve` starts); only the ports 8000 / 50051 written in the
                                   block are replaced by the test server's free ones
  <!-- docs-test: skip REASON -->  not run, and REASON says why (a GPU, Docker, the network, root,
                                   a command that runs until Ctrl-C)
  <!-- docs-test: output -->       on a ```text block right after a run block: that block's stdout,
                                   compared exactly

A block without a marker fails the test. Blocks of one file run in order in the same copy, so an
earlier block may prepare a later one (train/README.md: corpus, training, export). The copy holds
the tracked files, bin/ with links to the programs under test ($GRIFFIN_BIN, which make test sets)
and .venv pointing at the Python environment running this test (the docs say
`. .venv/bin/activate`); nothing a block writes reaches the checkout.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = ("griffin-server", "griffin-cli", "griffin-bench")
MARKER = re.compile(r"^<!-- docs-test(?::\s*(server|output|skip)\b\s*(.*?))?\s*-->$")
RUNNABLE = {"sh", "bash", "shell", "python"}
BLOCK_TIMEOUT_S = 600


def readmes():
    out = subprocess.run(["git", "-C", ROOT, "ls-files", "README.md", "*/README.md"],
                         capture_output=True, text=True)
    if out.returncode == 0 and out.stdout.strip():
        return [ROOT / f for f in out.stdout.split()]
    # A copy without .git (a source archive): every README.md outside build and environment dirs.
    skip = {"build", ".venv", "bin", ".git", "node_modules"}
    return sorted(p for p in ROOT.rglob("README.md") if not skip & set(p.relative_to(ROOT).parts))


def blocks(path):
    """[(line, language, marker kind or None, marker argument, code)] of the fenced blocks."""
    lines = path.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        kind = arg = None
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = MARKER.match(lines[k].strip()) if k >= 0 else None
        if marker:
            kind, arg = marker.group(1) or "run", marker.group(2)
        out.append((i + 1, m.group(1), kind, arg, "\n".join(lines[i + 1:j]) + "\n"))
        i = j + 1
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bin_dir():
    d = os.environ.get("GRIFFIN_BIN")
    missing = [p for p in PROGRAMS if not d or not (Path(d) / p).exists()]
    if missing:
        pytest.fail(f"GRIFFIN_BIN ({d!r}) lacks {missing}: build everything first (make test sets it)")
    return Path(d)


@pytest.fixture(scope="module")
def venv():
    if sys.prefix == sys.base_prefix:
        pytest.fail(f"the docs test runs in the project's virtual environment (the docs say "
                    f". .venv/bin/activate); this is {sys.executable}")
    return Path(sys.prefix)


@pytest.fixture(scope="module")
def checkout_copy(tmp_path_factory, bin_dir, venv):
    """The tracked files, bin/ -> the programs under test, .venv -> this test's environment."""
    copy = tmp_path_factory.mktemp("docs") / "griffin"
    listed = subprocess.run(["git", "-C", ROOT, "ls-files", "-z"], capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout:
        for name in listed.stdout.split("\0"):
            if name and (ROOT / name).is_file():
                (copy / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, copy / name)
    else:  # no git: everything but build outputs, environments and data
        shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
            ".git", "build", "bin", ".venv", "__pycache__", "runs"))
    (copy / "bin").mkdir()
    for p in PROGRAMS:
        (copy / "bin" / p).symlink_to(bin_dir / p)
    (copy / ".venv").symlink_to(venv)
    return copy


@pytest.fixture(scope="module")
def docs_server(bin_dir, checkout_copy):
    """griffin-server on free ports, as `make serve` runs it (default model, CPU)."""
    http, grpc = free_port(), free_port()
    log = open(checkout_copy / "docs-server.log", "wb")
    proc = subprocess.Popen([str(bin_dir / "griffin-server"), "--model", "models/demo",
                             "--backend", "cpu", "--http_port", str(http), "--grpc_port", str(grpc)],
                            cwd=checkout_copy, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while True:
        assert proc.poll() is None, (checkout_copy / "docs-server.log").read_text()
        try:
            if requests.get(f"http://127.0.0.1:{http}/ready", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.time() < deadline, "the docs' griffin-server did not become ready in 120 s"
        time.sleep(0.05)
    yield http, grpc
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def with_ports(code, http, grpc):
    code = re.sub(r"(?<=[:=\s])8000\b", str(http), code)
    return re.sub(r"(?<=[:=\s])50051\b", str(grpc), code)


def run_block(code, language, cwd, venv):
    env = dict(os.environ)
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}:{env.get('PATH', '')}",
               PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    if language == "python":
        args = [str(venv / "bin" / "python"), "-c", code]
    else:
        args = ["bash", "-c", "set -euo pipefail\n" + code]
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S)


def documents():
    return [p.relative_to(ROOT).as_posix() for p in readmes()]


def test_every_shell_block_is_marked():
    unmarked = [f"{p.relative_to(ROOT)}:{line}" for p in readmes()
                for line, lang, kind, _, _ in blocks(p) if lang in RUNNABLE and kind is None]
    assert not unmarked, ("shell blocks without a <!-- docs-test... --> marker (run it, or skip "
                          f"it with a reason): {unmarked}")
    reasonless = [f"{p.relative_to(ROOT)}:{line}" for p in readmes()
                  for line, _, kind, arg, _ in blocks(p) if kind == "skip" and not arg]
    assert not reasonless, f"skips without a reason: {reasonless}"


def test_documented_programs_exist():
    """bin/<program> in the docs names a program the build links there (deploy/build.sh)."""
    named = set()
    for p in readmes():
        named |= set(re.findall(r"(?<![\w/.])bin/(griffin-[\w-]+)", p.read_text()))
    assert named and named <= set(PROGRAMS), named - set(PROGRAMS)
    for program in named:
        link = ROOT / "bin" / program
        assert link.exists(), f"{link} is missing: deploy/build.sh links every program it builds"


@pytest.mark.parametrize("document", documents())
def test_commands_run_as_written(document, checkout_copy, venv, request):
    todo = [b for b in blocks(ROOT / document) if b[2] in ("run", "server", "output")]
    if not todo:
        return  # nothing to run in this file (its blocks are all skipped or not shell)
    last = None
    for line, language, kind, _, code in todo:
        where = f"{document}:{line}"
        if kind == "output":
            assert last is not None, f"{where}: an output block follows no run block"
            assert last.stdout.rstrip("\n") == code.rstrip("\n"), \
                f"{where}: the command above printed\n{last.stdout}"
            continue
        if kind == "server":
            http, grpc = request.getfixturevalue("docs_server")
            code = with_ports(code, http, grpc)
        last = run_block(code, language, checkout_copy, venv)
        assert last.returncode == 0, (f"{where} failed ({last.returncode}):\n{code}\n"
                                      f"stdout:\n{last.stdout[-3000:]}\nstderr:\n{last.stderr[-3000:]}")
