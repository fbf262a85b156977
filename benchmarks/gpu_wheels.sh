#!/usr/bin/env bash
# Fetch the wheels benchmarks/gpu_check.sh needs on the H200 image of this workplace and that
# image lacks, into ./.whl (ignored by git), to carry to the machine with the device call:
#
#     bash benchmarks/gpu_wheels.sh          # then run gpu_check.sh there with carry [".whl"]
#
# The image has Python 3.12, torch, numba, numpy, pyarrow, scipy, matplotlib, pytest and
# huggingface_hub (its package list: .library/device/KINDS.md), but not zstandard, which every
# kept row's zstd ratio needs. Ray is missing too, and its wheel (79 MB for 2.60) is more than a
# call may carry (64 MiB in all): gpu_check.sh builds with --executor local without it.
# WHEEL_PYTHON picks the Python version the wheels are for (default 3.12, the image's); the
# versions are the ones installed here, so both machines run the same code.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER="${WHEEL_PYTHON:-3.12}"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
mkdir -p .whl
for name in zstandard; do
    version="$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))")"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "$name==$version"
done
ls -l .whl
