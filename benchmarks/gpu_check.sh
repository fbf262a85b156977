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
#                     temperature and at 0.02 (benchmarks/bench_gpu.py); where triton is there,
#                     the opt-in Triton step too (--fused: its speed, and whether its grids and
#                     logits equal the eager step's bit for bit)
#   pipeline_50_100   serial vs pipelined `generate` on CUDA, band 0.5-1.0 (bench_pipeline.py)
#   build_164M        `python -m ncagen.build --band 0.5-1.0 --states 10 --rows 160000 --device
#                     cuda` (164M tokens), timed; the dataset goes to a temp folder, removed after
#   pipeline_30_40    as pipeline_50_100, band 0.3-0.4 (fewer tails, more gzip per row)
#   fidelity          benchmarks/fidelity.py --device cuda at 2,000 rows a side
#   compiled_step     bench_gpu.py --compile: the opt-in torch.compile'd step, its speed against
#                     the eager step and whether its grids equal the eager ones bit for bit
# Every step's output goes to stdout and to $OUT/<step>.log ($OUT if set, else
# /tmp/ncagen-gpu-check); $OUT/summary.txt lists each step's exit status and seconds.
#
# The machine: PYTHON picks the interpreter (default python3, else python). Nothing is fetched
# (a GPU machine may reach no network): it needs this repository's dependencies already there,
# less Ray, or carried as wheels in ./.whl (ignored by git), which are installed first into a
# temp folder put on PYTHONPATH. The H200 image of this workplace has torch, numba, pyarrow and
# the rest, but no zstandard (every kept row's zstd ratio needs it) and no Ray, whose wheel is
# larger than a device call may carry: `bash benchmarks/gpu_wheels.sh` fetches the wheels it
# lacks (for its Python, 3.12), to carry as `.whl`. Without Ray the build step runs with
# `--executor local` (on one GPU the same shard order; the cores do the ratios). The env step
# says what is missing. On a machine without a GPU the CUDA steps fail fast (pytest_gpu still
# runs the stand-in pipeline tests). The steps' own limits add up to more than the budget: on a
# slow machine the last ones (fidelity, compiled_step) are skipped, said so in summary.txt.
#
# GPU_CHECK_REHEARSAL=1 runs every step on the CPU stand-ins (the torch engine on the CPU for
# the device, the CPU engine for the build and fidelity) at small sizes: the script's own
# plumbing (wheels, imports, arguments, the executor without Ray) checked on any machine before
# a loan's minutes are spent on it.

set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
LOGS="${OUT:-/tmp/ncagen-gpu-check}"
BUDGET="${GPU_CHECK_BUDGET:-480}"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
CORES="$(nproc)"
SCRATCH="$(mktemp -d /tmp/ncagen-gpu-check.XXXXXX)"
trap 'rm -rf "$SCRATCH"' EXIT
mkdir -p "$LOGS"
: > "$LOGS/summary.txt"
REHEARSAL="${GPU_CHECK_REHEARSAL:-0}"

# carried wheels (benchmarks/gpu_wheels.sh): installed into the scratch folder, never the system
if compgen -G ".whl/*.whl" > /dev/null; then
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SCRATCH/site" .whl/*.whl; then
        export PYTHONPATH="$SCRATCH/site:$PYTHONPATH"
        echo "carried wheels installed: $(cd .whl && ls -- *.whl | tr '\n' ' ')" | tee -a "$LOGS/summary.txt"
    else
        echo "carried wheels: pip install failed (see above)" | tee -a "$LOGS/summary.txt"
    fi
fi

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
rehearsal = os.environ.get("GPU_CHECK_REHEARSAL", "0") not in ("", "0")
missing = []
for name in ("numpy", "numba", "pyarrow", "zstandard", "matplotlib", "scipy", "pytest", "torch", "ray"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except ImportError as e:
        if name == "ray":
            print("ray missing: the build step runs with --executor local")
        else:
            missing.append(f"{name} ({e})")
import ncagen
print(f"python {sys.version.split()[0]}, ncagen {ncagen.__version__} from {ncagen.__file__}, {os.cpu_count()} cores")
if missing:
    sys.exit("missing: " + ", ".join(missing) + " (carry wheels: bash benchmarks/gpu_wheels.sh)")
import torch
print(f"torch CUDA build {torch.version.cuda}, cuda available {torch.cuda.is_available()}")
if not torch.cuda.is_available() and not rehearsal:
    sys.exit("torch sees no CUDA GPU: a CPU build of torch, or no driver")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs")
PY

# the real run, or the rehearsal's stand-ins and sizes
if ((REHEARSAL)); then
    DEV=torch-cpu BUILD_DEV=cpu FID_DEV=cpu BATCH=512 REPEAT=1
    ROWS_50=300 ROWS_BUILD=2000 ROWS_30=100 ROWS_FID=200 ROWS_FID2=400
    echo "rehearsal: CPU stand-ins at small sizes, no figure of this run is a GPU's" | tee -a "$LOGS/summary.txt"
else
    DEV=cuda BUILD_DEV=cuda FID_DEV=cuda BATCH=32768 REPEAT=3
    ROWS_50=100000 ROWS_BUILD=160000 ROWS_30=20000 ROWS_FID=2000 ROWS_FID2=4000
fi
EXECUTOR=ray
"$PY" -c "import ray" 2> /dev/null || EXECUTOR=local
FUSED=()  # the Triton step: on a GPU with triton (the interpreter is far too slow for a rehearsal)
((REHEARSAL)) || ! "$PY" -c "import triton" 2> /dev/null || FUSED=(--fused)

if ((REHEARSAL)) || ! command -v nvidia-smi > /dev/null; then
    echo "nvidia_smi: skipped, $( ((REHEARSAL)) && echo rehearsal || echo 'no nvidia-smi')" | tee -a "$LOGS/summary.txt"
else
    step nvidia_smi 20 nvidia-smi
fi
step env 60 "$PY" "$SCRATCH/env_check.py"
step pytest_gpu 150 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_gpu.py tests/test_pipeline.py
step bench_gpu 130 "$PY" benchmarks/bench_gpu.py --device "$DEV" --batch "$BATCH" --repeat "$REPEAT" \
    ${FUSED[@]+"${FUSED[@]}"}
step pipeline_50_100 70 "$PY" benchmarks/bench_pipeline.py --device "$DEV" --band 0.5-1.0 \
    --rows "$ROWS_50" --batch "$BATCH" --threads "$CORES" --repeat 2
step build_164M 150 "$PY" -m ncagen.build --band 0.5-1.0 --states 10 --rows "$ROWS_BUILD" \
    --device "$BUILD_DEV" --executor "$EXECUTOR" --out "$SCRATCH/band_50_100"
find "$SCRATCH" -name ncagen.json -size -2M -exec cp {} "$LOGS/build_164M_manifest.json" \; 2>/dev/null
rm -rf "$SCRATCH/band_50_100"
step pipeline_30_40 60 "$PY" benchmarks/bench_pipeline.py --device "$DEV" --band 0.3-0.4 \
    --rows "$ROWS_30" --batch "$BATCH" --threads "$CORES" --repeat 2
step fidelity 100 "$PY" benchmarks/fidelity.py --device "$FID_DEV" --rows "$ROWS_FID" \
    --binary-rows "$ROWS_FID2"
step compiled_step 150 "$PY" benchmarks/bench_gpu.py --device "$DEV" --batch "$BATCH" --repeat 2 \
    --compile --temperature 1e-4 --temperature 0.02

echo "=== summary (${SECONDS} s in all; logs in $LOGS)"
cat "$LOGS/summary.txt"
