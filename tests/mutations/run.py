#!/usr/bin/env python3
"""Runs the mutation catalogue (tests/README.md): each tests/mutations/NN-name.patch plants one bug
in a scratch git worktree of the committed HEAD, the cpu preset rebuilds incrementally, and the
tests the patch names must fail ("caught"). Prints a Markdown table.

    tests/mutations/run.py                 # every entry
    tests/mutations/run.py 07 sampler      # entries whose file name contains any of these

A patch starts with a header, then a unified diff (git apply ignores the header):

    mutation: what the planted bug does
    catches: ctest REGEX                 (ctest -R: every matching test case runs)
    catches: pytest tests/python/x.py::test_y

Results: caught (a named test failed), MISSED (all passed), does not apply (the code moved on:
refresh the patch), build fails, baseline fails (a named test fails without the bug), no such
test (a catches line matches nothing). Builds and test runs hold the shared build lock
($GRIFFIN_BUILD_LOCK, default /tmp/griffin-build.lock). The scratch worktree (--worktree, default
/tmp/griffin-mutations) is kept between runs, so only the first run builds from scratch.
"""

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
LOCK = os.environ.get("GRIFFIN_BUILD_LOCK", "/tmp/griffin-build.lock")


def sh(cmd, cwd, log=None, env=None, lock=False):
    """Runs cmd (a list); returns the exit code. Output goes to `log` (appended) if given."""
    if lock:
        cmd = ["flock", LOCK] + cmd
    with open(log, "a") if log else open(os.devnull, "w") as out:
        if log:
            out.write(f"\n$ {' '.join(cmd)}\n")
            out.flush()
        return subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode


def parse(patch):
    what, catches = "", []
    for line in patch.read_text().splitlines():
        if line.startswith("diff --git"):
            break
        if line.startswith("mutation:"):
            what = line.split(":", 1)[1].strip()
        elif line.startswith("catches:"):
            kind, _, target = line.split(":", 1)[1].strip().partition(" ")
            if kind not in ("ctest", "pytest"):
                sys.exit(f"{patch.name}: catches must be 'ctest REGEX' or 'pytest NODEID'")
            catches.append((kind, target.strip()))
    files = re.findall(r"^\+\+\+ b/(\S+)", patch.read_text(), re.M)
    if not what or not catches or not files:
        sys.exit(f"{patch.name}: needs a 'mutation:' line, 'catches:' lines and a diff")
    return what, catches, files


def run_tests(work, catches, log):
    """'passed', 'failed' or 'no such test'."""
    env = dict(os.environ, GRIFFIN_BIN=str(work / "build/cpu/bin"),
               GRIFFIN_CLI=str(work / "build/cpu/bin/griffin-cli"))
    failed = False
    for kind, target in catches:
        if kind == "ctest":
            rc = sh(["ctest", "--test-dir", "build/cpu", "-R", target, "--no-tests=error",
                     "--output-on-failure", "-j2"], work, log, env, lock=True)
            if rc != 0 and "No tests were found" in Path(log).read_text()[-4000:]:
                return "no such test"
        else:
            rc = sh([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", target],
                    work, log, env, lock=True)
            if rc in (4, 5):
                return "no such test"
        failed |= rc != 0
    return "failed" if failed else "passed"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("only", nargs="*", help="run entries whose file name contains one of these")
    ap.add_argument("--worktree", default="/tmp/griffin-mutations", type=Path)
    ap.add_argument("--logs", default=None, type=Path, help="folder for the logs (default: in the worktree)")
    args = ap.parse_args()

    patches = sorted(HERE.glob("*.patch"))
    if args.only:
        patches = [p for p in patches if any(o in p.name for o in args.only)]
    if not patches:
        sys.exit("no patch selected")
    entries = [(p, *parse(p)) for p in patches]

    work = args.worktree
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    if not (work / ".git").exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(work), head],
                       check=True, capture_output=True)
    subprocess.run(["git", "-C", str(work), "checkout", "--detach", "--force", head], check=True,
                   capture_output=True)
    subprocess.run(["git", "-C", str(work), "clean", "-fdq", "-e", "build/"], check=True)
    logs = args.logs or work / "mutation-logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"scratch worktree {work} at {head[:12]}; logs in {logs}", file=sys.stderr)

    base_log = logs / "baseline.log"
    base_log.write_text("")
    # ccache rewrites paths under its base_dir to relative ones: with the scratch tree as base_dir,
    # its first build reuses the objects of a checkout built under the configured base_dir.
    build_env = dict(os.environ, CCACHE_BASEDIR=str(work))
    if sh(["cmake", "--preset", "cpu"], work, base_log, build_env, lock=True) or \
            sh(["cmake", "--build", "--preset", "cpu"], work, base_log, build_env, lock=True):
        sys.exit(f"the unmutated tree does not build: {base_log}")
    baseline = {}
    for _, _, catches, _ in entries:
        for c in catches:
            if c not in baseline:
                baseline[c] = run_tests(work, [c], base_log)
    broken = [f"{t}: {r}" for (_, t), r in baseline.items() if r != "passed"]
    print("baseline: " + (", ".join(broken) if broken else "every named test passes"),
          file=sys.stderr)

    rows, counts = [], {}
    for patch, what, catches, files in entries:
        start = time.time()
        log = logs / (patch.stem + ".log")
        log.write_text("")
        bad = [f"{t} ({baseline[(k, t)]})" for k, t in catches if baseline[(k, t)] != "passed"]
        if bad:
            result = "baseline fails: " + ", ".join(bad)
        elif sh(["git", "apply", "--check", str(patch)], work, log) != 0:
            result = "does not apply"
        else:
            sh(["git", "apply", str(patch)], work, log)
            try:
                if sh(["cmake", "--build", "--preset", "cpu"], work, log, build_env, lock=True) != 0:
                    result = "build fails"
                else:
                    outcome = run_tests(work, catches, log)
                    result = {"failed": "caught", "passed": "MISSED"}.get(outcome, outcome)
            finally:
                # Every tracked file, not only those the patch named when the run began: a patch
                # edited during a run must not leave its bug planted under the next entries.
                sh(["git", "checkout", "--", "."], work, log)
        counts[result.split(":")[0]] = counts.get(result.split(":")[0], 0) + 1
        seconds = time.time() - start
        tests = "; ".join(f"{k} `{t}`" for k, t in catches)
        rows.append(f"| {patch.stem} | {what} | {', '.join(files)} | {tests} | {result} | {seconds:.0f} |")
        print(f"{patch.stem}: {result} ({seconds:.0f} s)", file=sys.stderr)
    # Leave the scratch tree built as committed, so the next run starts incremental.
    sh(["cmake", "--build", "--preset", "cpu"], work, base_log, build_env, lock=True)

    print("| entry | planted bug | file | tests that must fail | result | s |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print(", ".join(f"{n} {r}" for r, n in sorted(counts.items())))
    return 0 if set(counts) == {"caught"} else 1


if __name__ == "__main__":
    sys.exit(main())
