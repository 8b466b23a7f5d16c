"""bench/make_dummy_model.py, bench/serving_sweep.py and bench/thread_cpu.py, the tools behind bench/RESULTS.md's serving
section: the dummy folder is the published 2B shape with a 256k tokenizer, and the sweep runs its
whole procedure (peak, Poisson levels, SLO search, summary) against a real CPU server. Also the
decode A/B tools (bench/ab_decode.sh, bench/ab_table.py), against a stand-in engine_bench."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from server_harness import Server

ROOT = Path(__file__).resolve().parents[2]


def binary(name):
    path = Path(os.environ.get("GRIFFIN_BIN", "")) / name
    if not os.environ.get("GRIFFIN_BIN") or not path.exists():
        pytest.fail(f"GRIFFIN_BIN does not hold a built {name}: build it and set GRIFFIN_BIN to its "
                    "bin/ folder (make test does both)", pytrace=False)
    return str(path)


def test_dummy_model_has_the_published_2b_shape(tmp_path):
    import sentencepiece as spm
    subprocess.run([sys.executable, str(ROOT / "bench" / "make_dummy_model.py"), str(tmp_path)],
                   check=True, capture_output=True, text=True, timeout=120)
    info = subprocess.run([binary("griffin-cli"), "info", "--model", str(tmp_path)],
                          check=True, capture_output=True, text=True, timeout=60).stdout
    assert "2,682,862,080" in info, info
    assert "RRARRARRARRARRARRARRARRARR" in info, info
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    assert sp.get_piece_size() == 256000
    assert (sp.pad_id(), sp.eos_id(), sp.bos_id(), sp.unk_id()) == (0, 1, 2, 3)
    # The 256k pieces decode to the text they hold (make_dummy_model.py builds piece i from i).
    ids = sp.encode("hello world", out_type=int)
    assert ids and sp.decode(ids) == "hello world"
    assert sp.id_to_piece(255999) and sp.id_to_piece(255999) != sp.id_to_piece(5)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["block_types"] == config["_block_types"]


@pytest.fixture()
def deep_queue_server():
    """The sweep's top level runs at the measured peak rate, so on a loaded machine it may briefly
    outrun the server: with a queue this deep that shows as latency, never as RESOURCE_EXHAUSTED
    (which the shared server's queue of 128 turned into failed requests about one run in three
    while other work shared the two cores)."""
    s = Server("--slots", 8, "--max_queue", 4096, "--max_prompt_tokens", 64)
    yield s
    assert s.stop() == 0, s.logs()


def test_serving_sweep_against_a_real_server(deep_queue_server, tmp_path):
    server = deep_queue_server
    out = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "serving_sweep.py"), "--bench", binary("griffin-bench"),
         "--out", str(out), "--protocol", "grpc", "--port", str(server.grpc_port),
         "--workload", "8:4:1", "--concurrency", "4", "--max_search_runs", "1", "--no-plot",
         "--bench_arg=--token_id_range=10:500"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = (out / "summary_grpc.md").read_text()
    assert "TPOT p99 <= 10 ms" in summary and "griffin-bench" in summary, summary
    sweep = json.loads((out / "8x4_grpc_sweep.json").read_text())
    assert [round(l["request_rate"] / sweep["levels"][-1]["request_rate"], 2) for l in sweep["levels"]] == [0.25, 0.5, 0.75, 1.0]
    for level in sweep["levels"]:
        assert level["failed"] == 0 and level["completed"] > 0
    assert (out / "8x4_grpc_peak.json").exists()


def test_compare_scores_counts_agreement_and_cross_entropy(tmp_path):
    """bench/compare_scores.py, behind RESULTS.md's FP8 figures on held-out text: on two real
    griffin-cli score runs it reports the cross-entropy griffin-cli printed (mean_nll) and an
    agreement it recounts here; one changed argmax moves the count by one; runs over different
    tokens are refused."""
    sys.path.insert(0, str(ROOT / "bench"))
    import compare_scores
    text = "In the beginning was the word, and the word was with the model."
    runs = {}
    for name, flags in (("base", ["--numerics", "bf16"]), ("fp8", ["--quantization", "fp8"])):
        out = subprocess.run([binary("griffin-cli"), "score", "--model", str(ROOT / "models" / "demo"),
                              "--text", text, *flags], check=True, capture_output=True, text=True,
                             timeout=120).stdout
        runs[name] = json.loads(out)
    q = compare_scores.compare(runs["base"], runs["fp8"])
    assert q["positions"] == runs["base"]["num_tokens"] - 1
    assert q["ce_base"] == pytest.approx(runs["base"]["mean_nll"], rel=1e-9)
    assert q["ce_other"] == pytest.approx(runs["fp8"]["mean_nll"], rel=1e-9)
    agreed = sum(x["argmax"] == y["argmax"] for x, y in
                 zip(runs["base"]["positions"][:-1], runs["fp8"]["positions"][:-1]))
    assert q["agreed"] == agreed
    first = runs["fp8"]["positions"][0]
    first["argmax"] = runs["base"]["positions"][0]["argmax"]
    agreeing = compare_scores.compare(runs["base"], runs["fp8"])["agreed"]
    first["argmax"] += 1
    assert compare_scores.compare(runs["base"], runs["fp8"])["agreed"] == agreeing - 1
    runs["fp8"]["positions"][1]["token"] += 1
    with pytest.raises(ValueError, match="different tokens"):
        compare_scores.compare(runs["base"], runs["fp8"])



def test_thread_cpu_splits_cpu_by_thread_name(tmp_path):
    """bench/thread_cpu.py: a live simulated-backend server's threads are found by name, and the
    difference of two snapshots is summed per name (threads that started in between count from
    zero), with the per-1000-token column. A process that does not exist is a clear error."""
    script = ROOT / "bench" / "thread_cpu.py"

    def run(*args):
        return subprocess.run([sys.executable, str(script), *map(str, args)],
                              capture_output=True, text=True, timeout=30)

    s = Server("--backend", "simulated", "--simulated_step_us", "200,1,1", "--slots", 2,
               "--load_format", "dummy")
    try:
        live = json.loads(run("snapshot", s.proc.pid).stdout)
        assert {"griffin-engine", "griffin-output", "griffin-http"} <= {
            t["name"] for t in live.values()}, live
        assert all(t["cpu_s"] >= 0 for t in live.values())
    finally:
        assert s.stop() == 0, s.logs()
    before = {"1": {"name": "griffin-engine", "cpu_s": 1.0},
              "2": {"name": "griffin-http", "cpu_s": 0.5},
              "3": {"name": "griffin-http", "cpu_s": 0.25}}
    after = {"1": {"name": "griffin-engine", "cpu_s": 1.5},
             "2": {"name": "griffin-http", "cpu_s": 1.5},
             "3": {"name": "griffin-http", "cpu_s": 1.25},
             "4": {"name": "griffin-output", "cpu_s": 0.25}}  # started after the first snapshot
    (tmp_path / "b.json").write_text(json.dumps(before))
    (tmp_path / "a.json").write_text(json.dumps(after))
    out = run("diff", tmp_path / "b.json", tmp_path / "a.json", "--tokens", 1000).stdout
    rows = [l.split() for l in out.splitlines()]
    assert rows[0] == ["thread", "threads", "cpu", "s", "ms/1k", "tok"], out
    assert rows[1:] == [["griffin-http", "2", "2.00", "2000.0"],
                        ["griffin-engine", "1", "0.50", "500.0"],
                        ["griffin-output", "1", "0.25", "250.0"],
                        ["total", "2.75", "2750.0"]], out
    missing = run("snapshot", 999999999)
    assert missing.returncode != 0 and "no process 999999999" in missing.stderr


def test_ab_decode_rotates_variants_and_tables_them(tmp_path):
    """bench/ab_decode.sh and bench/ab_table.py, behind RESULTS.md's A/B figures, against a stand-in
    engine_bench that prints a variant's figures (its --ms flag), records the order it ran in, and
    fails for --fail: each round starts with the next variant, every figure lands in the log under
    its variant and round, a failed run is logged and makes both scripts exit 1, and the table
    holds each variant's rounds and its median over the base's."""
    calls = tmp_path / "calls"
    stand_in = tmp_path / "engine_bench"
    stand_in.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {calls}
ms=
for a in "$@"; do
  case $a in --ms=*) ms=${{a#--ms=}} ;; --fail) echo "INTERNAL: no device"; exit 3 ;; esac
done
echo "warming up"
echo "| decode step, batch 1, position 128 | $ms ms (1 tok/s) | 1.260 ms (794 tok/s) | 1.00 |"
echo "| decode step, batch 64, position 4096 | 2$ms ms (1 tok/s) | 1.523 ms (1 tok/s) | 1.00 |"
echo "| prefill 1 x 512 | 5.1 ms (${{ms/./}}000 tok/s) | 2.6 ms (193695 tok/s) | 2.00 |"
echo "| time to first token, 1 x 512 prompt | 5.1 ms | 2.6 ms | 2.00 |"
echo "| decode step, batch 1, position 128, launched eagerly | 1.910 ms | its CUDA graph 1.776 ms | 1.08 |"
echo "| time to first token, 2048 prompt, 1984 restored + 64 prefilled | 3$ms ms | full prefill 17.61 ms | 0.285 |"
""")
    stand_in.chmod(0o755)
    log = tmp_path / "out" / "ab.log"
    env = dict(os.environ, ENGINE_BENCH=str(stand_in), AB_FLAGS="--common")
    run = subprocess.run(["bash", str(ROOT / "bench" / "ab_decode.sh"), str(tmp_path), str(log), "2",
                          "base=--ms=2.0", "new=--ms=1.5 --extra", "broken=--fail"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 1, run.stdout + run.stderr
    assert calls.read_text().splitlines() == [
        "--common --ms=2.0", "--common --ms=1.5 --extra", "--common --fail",
        "--common --ms=1.5 --extra", "--common --fail", "--common --ms=2.0"]
    lines = log.read_text().splitlines()
    assert "base r1: | decode step, batch 1, position 128 | 2.0 ms (1 tok/s) | 1.260 ms (794 tok/s) | 1.00 |" in lines
    assert "new r2: | decode step, batch 64, position 4096 | 21.5 ms (1 tok/s) | 1.523 ms (1 tok/s) | 1.00 |" in lines
    assert [l for l in lines if l.startswith("broken")] == [
        "broken r1: failed (rc 3): INTERNAL: no device", "broken r2: failed (rc 3): INTERNAL: no device"]
    assert "new r1: | prefill 1 x 512 | 5.1 ms (15000 tok/s) | 2.6 ms (193695 tok/s) | 2.00 |" in lines
    assert not [l for l in lines if "1 x 512 prompt" in l], "the TTFT line that repeats prefill's"
    assert not [l for l in lines if "launched eagerly" in l], "the eager step beside its graph"
    assert len(lines) == 2 * 2 * 4 + 2

    table = subprocess.run([sys.executable, str(ROOT / "bench" / "ab_table.py"), str(log),
                            "--ratio", "base"], capture_output=True, text=True, timeout=30)
    assert table.returncode == 1, table.stderr
    rows = table.stdout.splitlines()
    assert rows[0] == ("| shape (decode: batch, position) | base | new | broken | new / base | "
                       "broken / base |")
    assert rows[2] == "| 1, 128 | 2.000, 2.000 | 1.500, 1.500 | - | 0.750 | - |"
    assert rows[3] == "| 64, 4096 | 22.000, 22.000 | 21.500, 21.500 | - | 0.977 | - |"
    # prefill's time from its tok/s (512 / 20000 and 512 / 15000 tok/s), then the restored prefix
    assert rows[4] == "| prefill 1 x 512 | 25.600, 25.600 | 34.133, 34.133 | - | 1.333 | - |"
    assert rows[5] == "| 1984 restored + 64 | 32.000, 32.000 | 31.500, 31.500 | - | 0.984 | - |"
    assert "broken r2: failed (rc 3): INTERNAL: no device" in rows

    bad = subprocess.run(["bash", str(ROOT / "bench" / "ab_decode.sh"), str(tmp_path), str(log), "2",
                          "no flags"], capture_output=True, text=True, timeout=30, env=env)
    assert bad.returncode == 2 and "NAME=FLAGS" in bad.stderr
    (tmp_path / "garbled.log").write_text("base r1: | prefill 1 x 2048 | 10 ms\n")
    garbled = subprocess.run([sys.executable, str(ROOT / "bench" / "ab_table.py"),
                              str(tmp_path / "garbled.log")], capture_output=True, text=True, timeout=30)
    assert garbled.returncode == 1 and "holds no figure" in garbled.stderr
    # Logs written before ab_decode.sh dropped the eager step's line still table.
    (tmp_path / "eager.log").write_text(
        "base r1: | decode step, batch 1, position 128 | 2.0 ms (1 tok/s) | 1.2 ms | 1.6 |\n"
        "base r1: | decode step, batch 1, position 128, launched eagerly | 1.910 ms | its CUDA "
        "graph 1.776 ms | 1.08 |\n")
    eager = subprocess.run([sys.executable, str(ROOT / "bench" / "ab_table.py"),
                            str(tmp_path / "eager.log")], capture_output=True, text=True, timeout=30)
    assert eager.returncode == 0 and "| 1, 128 | 2.000 |" in eager.stdout, eager.stdout + eager.stderr


def test_ab_decode_runs_a_variant_from_another_build(tmp_path):
    """A variant whose flags start with @DIR runs DIR/engine_bench (an A/B of two builds), the
    other variants the bundle's; a missing build is a failed run, not a silent skip."""
    calls = tmp_path / "calls"
    for build, ms in (("new", "1.5"), ("old", "2.0")):
        (tmp_path / build).mkdir()
        stand_in = tmp_path / build / "engine_bench"
        stand_in.write_text(f"""#!/usr/bin/env bash
echo "{build} $*" >> {calls}
echo "| decode step, batch 1, position 128 | {ms} ms (1 tok/s) | 1.260 ms (794 tok/s) | 1.00 |"
""")
        stand_in.chmod(0o755)
    log = tmp_path / "ab.log"
    env = dict(os.environ, AB_FLAGS="--common")
    env.pop("ENGINE_BENCH", None)
    run = subprocess.run(["bash", str(ROOT / "bench" / "ab_decode.sh"), str(tmp_path / "new"),
                          str(log), "1", "new=--x", f"old=@{tmp_path / 'old'} --y",
                          f"gone=@{tmp_path / 'gone'}"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 1, run.stdout + run.stderr
    assert calls.read_text().splitlines() == ["new --common --x", "old --common --y"]
    lines = log.read_text().splitlines()
    assert lines[0] == ("new r1: | decode step, batch 1, position 128 | 1.5 ms (1 tok/s) | "
                        "1.260 ms (794 tok/s) | 1.00 |")
    assert lines[1] == ("old r1: | decode step, batch 1, position 128 | 2.0 ms (1 tok/s) | "
                        "1.260 ms (794 tok/s) | 1.00 |")
    assert lines[2].startswith("gone r1: failed (rc 127)"), lines


def _executable(path, text):
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def _gtest_bundle(tmp_path, binaries, tests):
    """A bundle of stand-in gtest binaries that list `tests` under Suite. and run nothing."""
    listing = "".join(f"  {t}\\n" for t in tests)
    for binary in binaries:
        _executable(tmp_path / "bundle" / binary, f"""#!/usr/bin/env bash
for a in "$@"; do [[ $a == --gtest_list_tests ]] && printf 'Suite.\\n{listing}' && exit 0; done
exit 0
""")
    return tmp_path / "bundle"


def _run_sanitizers(bundle, out, bin_dir, *, limit=30, timeout=60, wrap=(), **settings):
    """bench/run_sanitizers.sh BUNDLE OUT LIMIT with bin_dir's stand-in compute-sanitizer first on
    PATH, one process a test, and `settings` as its environment; the caller's own SANITIZE_* and
    COMPUTE_SANITIZER settings never leak in. `wrap`: a command to run it under (`timeout N`)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SANITIZE_") and k != "COMPUTE_SANITIZER"}
    env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", SANITIZE_PER_TEST="1", **settings)
    return subprocess.run([*wrap, "bash", str(ROOT / "bench" / "run_sanitizers.sh"), str(bundle),
                           str(out), str(limit)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _summary_row(summary, tool):
    """run_sanitizers.sh's summary line for `tool` (after the tool's version and the header)."""
    return next(line for line in summary.splitlines() if line.startswith(tool + " "))


def test_run_sanitizers_passes_a_test_that_makes_no_cuda_call(tmp_path):
    """compute-sanitizer exits 255 ("Target application terminated before first instrumented API
    call") for a test that makes no CUDA call, after the test passed: run_sanitizers.sh counts
    that job as a pass, but not the same exit status without the message, nor with a failed
    test."""
    bundle = _gtest_bundle(tmp_path, ["kernels_test"], ["a"])
    bin_dir = tmp_path / "bin"

    def run(gtest_line, message):
        _executable(bin_dir / "compute-sanitizer", f"""#!/usr/bin/env bash
echo "========= COMPUTE-SANITIZER"
echo "{gtest_line}"
echo "{message}"
exit 255
""")
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        done = _run_sanitizers(bundle, out, bin_dir, SANITIZE_TOOLS="memcheck",
                               SANITIZE_BINARIES="kernels_test")
        return done.returncode, (out / "summary.txt").read_text()

    no_call = "========= Error: Target application terminated before first instrumented API call"
    rc, summary = run("[  PASSED  ] 1 test.", no_call)
    assert rc == 0, summary
    row = _summary_row(summary, "memcheck")
    assert row.split()[:3] == ["memcheck", "kernels_test", "0"], summary
    rc, summary = run("[  PASSED  ] 1 test.", "========= Error: something else")
    assert rc == 1 and _summary_row(summary, "memcheck").split()[2] == "255", summary
    rc, summary = run("[  FAILED  ] Suite.a", no_call)
    assert rc == 1 and _summary_row(summary, "memcheck").split()[2] == "255", summary


def test_run_sanitizers_lists_every_test_of_a_long_list(tmp_path):
    """One job per test for every test the binary lists, however long the list: 1,200 names of
    ~80 bytes (more than a pipe's 64 KB) lost tests at random when membership was tested with
    `printf | grep -q` under pipefail (grep's early exit killed printf with SIGPIPE); and
    SANITIZE_FIRST's tests first, without adding tests the filter leaves out."""
    bundle = tmp_path / "bundle"
    name = "a_kernel_case_with_a_name_as_long_as_a_parameterized_one_of_the_registry_"
    _executable(bundle / "kernels_test", f"""#!/usr/bin/env bash
filter=
for a in "$@"; do [[ $a == --gtest_filter=* ]] && filter=${{a#--gtest_filter=}}; done
for a in "$@"; do
  if [[ $a == --gtest_list_tests ]]; then
    echo "Suite."
    if [[ $filter != "*" ]]; then printf '  {name}1199\\n  outside\\n'; exit 0; fi
    for ((i = 0; i < 1200; ++i)); do printf '  {name}%d\\n' $i; done
    exit 0
  fi
done
exit 0
""")
    bin_dir = tmp_path / "bin"
    _executable(bin_dir / "compute-sanitizer", "#!/usr/bin/env bash\nexit 0\n")
    _run_sanitizers(bundle, tmp_path / "out", bin_dir, timeout=120, SANITIZE_TOOLS="memcheck",
                    SANITIZE_BINARIES="kernels_test", SANITIZE_DEADLINE_S="0",
                    SANITIZE_FIRST="Suite.first")
    jobs = [l.split()[2] for l in (tmp_path / "out" / "jobs.txt").read_text().splitlines()]
    assert len(jobs) == 1200 and len(set(jobs)) == 1200, len(jobs)
    assert jobs[:2] == [f"Suite.{name}1199", f"Suite.{name}0"], jobs[:2]
    assert "Suite.outside" not in jobs


def test_run_sanitizers_interleaves_the_tools_jobs(tmp_path):
    """bench/run_sanitizers.sh starts its jobs round-robin over the (tool, binary) pairs, each
    pair's tests in order, so that a deadline cuts every tool's last tests rather than whole
    tools; against a stand-in compute-sanitizer that records what it was asked to run, one job
    at a time."""
    bundle = _gtest_bundle(tmp_path, ["kernels_test", "cuda_backend_test"], ["a", "b"])
    bin_dir = tmp_path / "bin"
    calls = tmp_path / "calls"
    _executable(bin_dir / "compute-sanitizer", f"""#!/usr/bin/env bash
[[ $1 == --version ]] && exit 0
tool=; while (($#)); do [[ $1 == --tool ]] && tool=$2; last=$1; shift; done
echo "$tool $(basename "$last") $GTEST_FILTER" >> {calls}
echo "========= ERROR SUMMARY: 0 errors"
""")
    run = _run_sanitizers(bundle, tmp_path / "out", bin_dir, SANITIZE_JOBS="1",
                          SANITIZE_TOOLS="racecheck memcheck",
                          SANITIZE_BINARIES="kernels_test cuda_backend_test")
    assert (tmp_path / "out" / "summary.txt").exists(), run.stdout + run.stderr
    assert calls.read_text().splitlines() == [
        "racecheck kernels_test Suite.a", "racecheck cuda_backend_test Suite.a",
        "memcheck kernels_test Suite.a", "memcheck cuda_backend_test Suite.a",
        "racecheck kernels_test Suite.b", "racecheck cuda_backend_test Suite.b",
        "memcheck kernels_test Suite.b", "memcheck cuda_backend_test Suite.b"]


def test_run_sanitizers_writes_its_summary_inside_the_deadline(tmp_path):
    """SANITIZE_DEADLINE_S counts from the script's start, less a few seconds for the summary:
    under a `timeout` of the same length (a device call's pattern), a job that would run past it
    is cut and the summary is still written. Counted from after the tests were listed (here 3 s
    of listing), the job overran the timeout and the script died without a summary (session 29,
    call 4)."""
    bundle = tmp_path / "bundle"
    _executable(bundle / "kernels_test", """#!/usr/bin/env bash
for a in "$@"; do [[ $a == --gtest_list_tests ]] && sleep 3 && printf 'Suite.\\n  slow\\n'; done
exit 0
""")
    bin_dir = tmp_path / "bin"
    _executable(bin_dir / "compute-sanitizer",
                "#!/usr/bin/env bash\n[[ $1 == --version ]] && exit 0\nexec sleep 60\n")
    run = _run_sanitizers(bundle, tmp_path / "out", bin_dir, limit=60, wrap=("timeout", "20"),
                          SANITIZE_TOOLS="memcheck", SANITIZE_BINARIES="kernels_test",
                          SANITIZE_DEADLINE_S="20")
    summary = tmp_path / "out" / "summary.txt"
    assert run.returncode != 124 and summary.exists(), run.stdout + run.stderr
    assert "did not finish: Suite.slow (rc 124" in summary.read_text(), summary.read_text()


def test_run_sanitizers_fails_on_hazards_past_the_print_limit(tmp_path):
    """Racecheck counts the hazards past its print limit without showing them: run_sanitizers.sh
    cannot tell whose they are, so it reports them as unclassified and fails the run; the same
    log with every hazard shown (all in a library kernel) passes. Session 29: cuDNN's report
    filled five kernels_test shards' limit, and the summary would have said "ours 0"."""
    bundle = _gtest_bundle(tmp_path, ["kernels_test"], ["a"])
    bin_dir = tmp_path / "bin"

    def run(displayed, errors):
        _executable(bin_dir / "compute-sanitizer", f"""#!/usr/bin/env bash
echo "========= Error: Potential RAW hazard detected at __shared__ 0x47f in block (9,0,0) :"
echo "=========     Write Thread (0,0,0) at cudnn_generated_fort_native_sdpa_sm90_kernel0_0+0x6bd0"
echo "[  PASSED  ] 1 test."
echo "========= RACECHECK SUMMARY: {displayed} hazards displayed ({errors} errors, 0 warnings)"
exit 3
""")
        out = tmp_path / f"out{displayed}"
        done = _run_sanitizers(bundle, out, bin_dir, SANITIZE_TOOLS="racecheck",
                               SANITIZE_BINARIES="kernels_test")
        return done.returncode, _summary_row((out / "summary.txt").read_text(), "racecheck")

    rc, line = run(1, 1)
    assert rc == 0 and "ours 0, library 1;" in line, line
    rc, line = run(1, 36064)
    assert rc == 1 and "ours 0, library 1, not displayed 36063 (unclassified);" in line, line


def test_run_sanitizers_analyses_every_kernel_unless_told(tmp_path):
    """Racecheck analyses every kernel, the libraries' included: compute-sanitizer 2025.3 failed
    cuBLASLt's kernels when told to leave them out (session 31). SANITIZE_RACECHECK_EXCLUDE passes
    a --kernel-name-exclude filter to racecheck only, and the summary says which."""
    bundle = _gtest_bundle(tmp_path, ["kernels_test"], ["a"])
    bin_dir = tmp_path / "bin"
    calls = tmp_path / "calls"
    _executable(bin_dir / "compute-sanitizer", f"""#!/usr/bin/env bash
printf '%s\\t' "$@" >> {calls}; echo >> {calls}
echo "[  PASSED  ] 1 test."
""")

    def run(**settings):
        calls.write_text("")
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        done = _run_sanitizers(bundle, out, bin_dir, SANITIZE_TOOLS="racecheck memcheck",
                               SANITIZE_BINARIES="kernels_test", SANITIZE_JOBS="1", **settings)
        assert done.returncode == 0, done.stdout + done.stderr
        by_tool = {line.split("\t")[1]: line.split("\t") for line in calls.read_text().splitlines()
                   if not line.startswith("--version")}
        return by_tool, (out / "summary.txt").read_text()

    by_tool, summary = run()
    assert "--kernel-name-exclude" not in by_tool["racecheck"], by_tool
    assert "did not analyse the kernels matching: (none)" in summary, summary
    by_tool, summary = run(SANITIZE_RACECHECK_EXCLUDE="regex=nvjet|cudnn")
    racecheck = by_tool["racecheck"]
    assert racecheck[racecheck.index("--kernel-name-exclude") + 1] == "regex=nvjet|cudnn", racecheck
    assert "--kernel-name-exclude" not in by_tool["memcheck"], by_tool
    assert "did not analyse the kernels matching: regex=nvjet|cudnn" in summary, summary


def test_run_sanitizers_checks_racecheck_against_a_known_race(tmp_path):
    """With sanitizer_control in the bundle, racecheck first runs its known race and its clean
    twin: a tool that reports the race and not the twin passes; one that misses the race (or
    flags the twin) fails the run whatever the tests say, and the summary says why. Without the
    control the summary says it did not run."""
    bundle = _gtest_bundle(tmp_path, ["kernels_test"], ["a"])
    bin_dir = tmp_path / "bin"

    def run(race_errors, clean_errors, control=True):
        _executable(bin_dir / "compute-sanitizer", f"""#!/usr/bin/env bash
[[ $1 == --version ]] && exit 0
errors=0
for a in "$@"; do
  [[ $a == race ]] && errors={race_errors}
  [[ $a == clean ]] && errors={clean_errors}
done
echo "[  PASSED  ] 1 test."
if ((errors == 1)); then
  echo "========= RACECHECK SUMMARY: 1 hazard displayed (1 error, 0 warnings)"; exit 3
elif ((errors > 1)); then
  echo "========= RACECHECK SUMMARY: $errors hazards displayed ($errors errors, 0 warnings)"; exit 3
fi
echo "========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)"
""")
        control_binary = bundle / "sanitizer_control"
        if control:
            _executable(control_binary, "#!/usr/bin/env bash\nexit 0\n")
        elif control_binary.exists():
            control_binary.unlink()
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        done = _run_sanitizers(bundle, out, bin_dir, SANITIZE_TOOLS="racecheck",
                               SANITIZE_BINARIES="kernels_test")
        summary = (out / "summary.txt").read_text()
        return done.returncode, next(line for line in summary.splitlines()
                                     if line.startswith("control"))

    rc, line = run(1, 0)
    assert rc == 0 and "race rc 3, 1 reported; clean rc 0, 0 reported;" in line, line
    assert "the known race reported, the clean kernel not" in line, line
    rc, line = run(7, 0)
    assert rc == 0 and "race rc 3, 7 reported;" in line, line
    rc, line = run(0, 0)
    assert rc == 1 and "race rc 0, 0 reported;" in line and "FAILED" in line, line
    rc, line = run(1, 2)
    assert rc == 1 and "clean rc 3, 2 reported;" in line and "FAILED" in line, line
    rc, line = run(1, 0, control=False)
    assert rc == 0 and "not run (no sanitizer_control in" in line, line


def test_run_sanitizers_says_which_jobs_were_killed_and_how_low_memory_ran(tmp_path):
    """A test that ends with exit 9 (SIGKILL's number, what the out-of-memory killer sends;
    session 31's racecheck runs lost 15 tests so) is marked as likely killed, and the summary
    gives the lowest host
    MemAvailable seen while the jobs ran; the memory sampler ends with the script (a lingering
    one would hold the captured output open past the timeout)."""
    bundle = _gtest_bundle(tmp_path, ["kernels_test"], ["a", "b"])
    bin_dir = tmp_path / "bin"
    _executable(bin_dir / "compute-sanitizer", """#!/usr/bin/env bash
[[ $1 == --version ]] && exit 0
if [[ $GTEST_FILTER == Suite.b ]]; then
  echo "========= Error: process didn't terminate successfully"; exit 9
fi
sleep 3
echo "[  PASSED  ] 1 test."
""")
    done = _run_sanitizers(bundle, tmp_path / "out", bin_dir, timeout=30,
                           SANITIZE_TOOLS="memcheck", SANITIZE_BINARIES="kernels_test")
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert done.returncode == 1, summary
    assert "did not finish: Suite.b (rc 9, SIGKILL's number: likely killed," in summary, summary
    assert "Suite.a" not in summary.split("did not finish")[1].splitlines()[0], summary
    memory = next(line for line in summary.splitlines() if line.startswith("host memory:"))
    lowest, total = (int(v) for v in re.findall(r"(\d+) MiB", memory)[:2])
    assert 0 < lowest <= total, memory
    assert int(re.search(r"\((\d+) samples", memory).group(1)) >= 1, memory


def test_run_sanitizers_runs_the_tool_compute_sanitizer_names(tmp_path):
    """COMPUTE_SANITIZER picks the tool (a newer one bundled by bench/bundle_sanitizer.sh) over
    the one on PATH, the summary starts with its version, and a path that is not an executable
    stops the run with a clear line rather than falling back unseen."""
    bundle = _gtest_bundle(tmp_path, ["kernels_test"], ["a"])
    tool = _executable(tmp_path / "newer" / "compute-sanitizer", """#!/usr/bin/env bash
if [[ $1 == --version ]]; then
  echo "NVIDIA (R) Compute Sanitizer"; echo "Version 2099.1.0.0 (fake)"; exit
fi
echo "[  PASSED  ] 1 test."
""")
    bin_dir = tmp_path / "bin"
    _executable(bin_dir / "compute-sanitizer", "#!/usr/bin/env bash\nexit 7\n")
    settings = dict(SANITIZE_TOOLS="memcheck", SANITIZE_BINARIES="kernels_test")
    run = _run_sanitizers(bundle, tmp_path / "out", bin_dir, COMPUTE_SANITIZER=str(tool),
                          **settings)
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert run.returncode == 0, summary
    assert summary.splitlines()[0] == f"{tool}: Version 2099.1.0.0 (fake)", summary
    run = _run_sanitizers(bundle, tmp_path / "out2", bin_dir,
                          COMPUTE_SANITIZER=str(tmp_path / "missing"), **settings)
    assert run.returncode == 2 and "is not an executable" in run.stdout, run.stdout + run.stderr


def test_bundle_sanitizer_unpacks_the_tool_from_its_wheel(tmp_path):
    """bench/bundle_sanitizer.sh unpacks the compute-sanitizer folder of NVIDIA's wheel with the
    files' modes (the executables must run on the GPU machine), leaves the documentation and
    headers out, and refuses a wheel without the tool."""
    import zipfile

    def wheel(name, entries):
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as z:
            for entry, text, mode in entries:
                info = zipfile.ZipInfo(entry)
                info.external_attr = mode << 16
                z.writestr(info, text)
        return path

    prefix = "nvidia/cu13/compute-sanitizer/"
    good = wheel("good.whl", [
        ("nvidia/cu13/bin/compute-sanitizer", "#!/bin/sh\n", 0o755),
        (prefix + "compute-sanitizer", "#!/bin/sh\necho 'Version 2099.1.0.0 (fake)'\n", 0o755),
        (prefix + "libsanitizer-collection.so", "library", 0o644),
        (prefix + "docs/index.html", "<html/>", 0o644),
        (prefix + "include/sanitizer.h", "", 0o644)])
    env = dict(os.environ, SANITIZER_WHEEL=str(good))
    run = subprocess.run(["bash", str(ROOT / "bench" / "bundle_sanitizer.sh"),
                          str(tmp_path / "bundle")], capture_output=True, text=True, timeout=60,
                         env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == "Version 2099.1.0.0 (fake)"
    unpacked = tmp_path / "bundle" / "compute-sanitizer"
    assert sorted(p.name for p in unpacked.iterdir()) == ["compute-sanitizer",
                                                          "libsanitizer-collection.so"]
    assert os.access(unpacked / "compute-sanitizer", os.X_OK)

    env["SANITIZER_WHEEL"] = str(wheel("empty.whl", [(prefix + "docs/index.html", "", 0o644)]))
    run = subprocess.run(["bash", str(ROOT / "bench" / "bundle_sanitizer.sh"),
                          str(tmp_path / "bundle2")], capture_output=True, text=True, timeout=60,
                         env=env)
    assert run.returncode != 0 and "holds no executable" in run.stderr, run.stdout + run.stderr
