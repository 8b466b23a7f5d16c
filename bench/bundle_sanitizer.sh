#!/usr/bin/env bash
# Puts a newer compute-sanitizer than the GPU machine's CUDA carries into a bundle folder, for a
# device call (that machine reaches no network):
#   bench/bundle_sanitizer.sh DIR
#   (on the GPU machine) COMPUTE_SANITIZER=DIR/compute-sanitizer/compute-sanitizer \
#     bench/run_sanitizers.sh ...
# NVIDIA publishes the whole tool on PyPI (nvidia-cuda-sanitizer-api: the executable, its
# injection libraries and launcher). Why a newer one: racecheck's false positives on Hopper's
# mbarrier, complete-tx and warp-group synchronizations were fixed release by release from 2025.4
# to 2026.3 (its release notes); the machine's CUDA 13 tool may predate some of them (its version
# now heads run_sanitizers.sh's summary), and our racecheck runs report hazards in cuBLASLt's and
# cuDNN's generated kernels (bench/NOTES.md sessions 18 and 29) that such fixes may or may not
# explain.
#
# SANITIZER_VERSION: the package's version (default 13.5.25: Compute Sanitizer 2026.4.0).
# SANITIZER_WHEEL: a wheel already here, instead of downloading one.
# PYTHON: the interpreter whose pip downloads (default: the project's .venv, else python3).
# Leaves the documentation and the API headers out; prints the tool's version line.
set -euo pipefail
dir=${1:?usage: bundle_sanitizer.sh DIR}
version=${SANITIZER_VERSION:-13.5.25}
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-${GRIFFIN_VENV:-$root/.venv}/bin/python}
[[ -x $python ]] || python=python3

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
wheel=${SANITIZER_WHEEL:-}
if [[ -z $wheel ]]; then
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" \
    "nvidia-cuda-sanitizer-api==$version"
  wheel=$(ls "$tmp"/nvidia_cuda_sanitizer_api-*.whl)
fi
[[ -f $wheel ]] || { echo "bundle_sanitizer.sh: no wheel at $wheel" >&2; exit 2; }

rm -rf "$dir/compute-sanitizer"
mkdir -p "$dir"
# zipfile's own extraction drops the files' modes; a wheel keeps them in each entry's upper 16
# bits of external_attr, and the executables need theirs.
"$python" - "$wheel" "$dir/compute-sanitizer" <<'EOF'
import os
import sys
import zipfile

wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        parts = info.filename.split("/")
        if "compute-sanitizer" not in parts[:-1]:
            continue
        inner = parts[parts.index("compute-sanitizer") + 1:]
        if not inner or not inner[-1] or inner[0] in ("docs", "include"):
            continue
        target = os.path.join(dest, *inner)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(info) as src, open(target, "wb") as out:
            out.write(src.read())
        mode = (info.external_attr >> 16) & 0o777
        if mode:
            os.chmod(target, mode)
if not os.access(os.path.join(dest, "compute-sanitizer"), os.X_OK):
    sys.exit(f"bundle_sanitizer.sh: {wheel} holds no executable compute-sanitizer/compute-sanitizer")
EOF
"$dir/compute-sanitizer/compute-sanitizer" --version | grep -m1 -E "^Version"
