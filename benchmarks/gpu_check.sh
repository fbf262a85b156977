#!/usr/bin/env bash
# The GPU checks of issue 10, prepared for a short loan of a GPU machine. From the repo root:
#
#     bash benchmarks/gpu_check.sh
#
# Steps, most important first, each under its own `timeout`, all of them together within
# GPU_CHECK_BUDGET seconds (default 480: a step gets what is left, and is skipped under 15 s):
#   nvidia_smi        the GPU, its driver and memory
#   env               versions; fails when torch sees no CUDA GPU or a dependency is missing
#   pytest_gpu        tests/test_gpu.py (CUDA rows == CPU rows, through the pipeline too) and
#                     tests/test_pipeline.py (the pipeline on the CPU stand-ins)
#   bench_gpu         the torch engine at batch 32,768: candidates/s and tokens/s at the spec's
#                     temperature and at 0.02 (benchmarks/bench_gpu.py)
#   pipeline_50_100   serial vs pipelined `generate` on CUDA, band 0.5-1.0 (bench_pipeline.py)
#   build_164M        `python -m ncagen.build --band 0.5-1.0 --states 10 --rows 160000 --device
#                     cuda` (164M tokens), timed; the dataset goes to a temp folder, removed after
#   pipeline_30_40    as pipeline_50_100, band 0.3-0.4 (fewer tails, more gzip per row)
#   fidelity          benchmarks/fidelity.py --device cuda at 2,000 rows a side
#   compiled_step     bench_gpu.py --compile: the opt-in torch.compile'd step, its speed against
#                     the eager step and whether its grids equal the eager ones bit for bit
# Every step's output goes to stdout and to $OUT/<step>.log ($OUT if set, else
# /tmp/ncagen-gpu-check); $OUT/summary.txt lists each step's exit status and seconds.
# PYTHON picks the interpreter (default python). Nothing is installed: the machine needs this
# repository's dependencies (`pip install -e ".[test]"`, with a CUDA build of torch); the env
# step says what is missing. On a machine without a GPU the CUDA steps fail fast (pytest_gpu
# still runs the stand-in pipeline tests). The steps' own limits add up to more than the
# budget: on a slow machine the last ones (fidelity, compiled_step) are skipped, said so in
# summary.txt.

set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
LOGS="${OUT:-/tmp/ncagen-gpu-check}"
BUDGET="${GPU_CHECK_BUDGET:-480}"
PY="${PYTHON:-python}"
CORES="$(nproc)"
SCRATCH="$(mktemp -d /tmp/ncagen-gpu-check.XXXXXX)"
trap 'rm -rf "$SCRATCH"' EXIT
mkdir -p "$LOGS"
: > "$LOGS/summary.txt"

# step NAME LIMIT CMD...: run CMD under timeout (LIMIT, or less if the budget has less left),
# its output to stdout and $LOGS/NAME.log; one line per step in $LOGS/summary.txt
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - SECONDS))
    if ((left < 15)); then
        echo "$name: skipped, budget of ${BUDGET} s spent" | tee -a "$LOGS/summary.txt"
        return
    fi
    ((limit > left)) && limit=$left
    echo "=== $name (timeout ${limit} s, at ${SECONDS} s): $*" | tee "$LOGS/$name.log"
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOGS/$name.log"
    local rc=${PIPESTATUS[0]}
    local note=""
    ((rc == 124 || rc == 137)) && note=" (timed out)"
    echo "$name: exit $rc$note after $((SECONDS - t0)) s" | tee -a "$LOGS/summary.txt"
}

cat > "$SCRATCH/env_check.py" <<'PY'
import importlib, os, sys
missing = []
for name in ("numpy", "numba", "pyarrow", "zstandard", "ray", "matplotlib", "scipy", "pytest", "torch"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except ImportError as e:
        missing.append(f"{name} ({e})")
import ncagen
print(f"python {sys.version.split()[0]}, ncagen {ncagen.__version__} from {ncagen.__file__}, {os.cpu_count()} cores")
if missing:
    sys.exit("missing: " + ", ".join(missing) + '; install with pip install -e ".[test]"')
import torch
print(f"torch CUDA build {torch.version.cuda}, cuda available {torch.cuda.is_available()}")
if not torch.cuda.is_available():
    sys.exit("torch sees no CUDA GPU: a CPU build of torch, or no driver")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs")
PY

step nvidia_smi 20 nvidia-smi
step env 60 "$PY" "$SCRATCH/env_check.py"
step pytest_gpu 150 "$PY" -m pytest -q -rs tests/test_gpu.py tests/test_pipeline.py
step bench_gpu 100 "$PY" benchmarks/bench_gpu.py --device cuda --batch 32768 --repeat 3
step pipeline_50_100 70 "$PY" benchmarks/bench_pipeline.py --device cuda --band 0.5-1.0 \
    --rows 100000 --batch 32768 --threads "$CORES" --repeat 2
step build_164M 150 "$PY" -m ncagen.build --band 0.5-1.0 --states 10 --rows 160000 \
    --device cuda --out "$SCRATCH/band_50_100"
find "$SCRATCH" -name ncagen.json -size -2M -exec cp {} "$LOGS/build_164M_manifest.json" \; 2>/dev/null
rm -rf "$SCRATCH/band_50_100"
step pipeline_30_40 60 "$PY" benchmarks/bench_pipeline.py --device cuda --band 0.3-0.4 \
    --rows 20000 --batch 32768 --threads "$CORES" --repeat 2
step fidelity 100 "$PY" benchmarks/fidelity.py --device cuda --rows 2000 --binary-rows 4000
step compiled_step 150 "$PY" benchmarks/bench_gpu.py --device cuda --batch 32768 --repeat 2 \
    --compile --temperature 1e-4 --temperature 0.02

echo "=== summary (${SECONDS} s in all; logs in $LOGS)"
cat "$LOGS/summary.txt"
