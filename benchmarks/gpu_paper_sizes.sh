#!/usr/bin/env bash
# Paper-size step FLOP/s and sampler cost/quality on a GPU, in one prepared run.
#
# For a session that is lent a GPU machine (an H100/H200 with no internet). Runs
#   benchmarks/step_flops.py --points paper --matmul-n 8192   (stage-A/-B steps at d = 1000)
#   benchmarks/sampler_quality.py                            (sampler cost vs held-out MMD²)
# with JAX_PLATFORMS=cuda, each under `timeout`, and writes their .md/.json plus a log and an
# environment report into a separate folder, so the CPU results in benchmarks/results/ are kept.
# Budget: about 8 minutes of device time in all (STEP_FLOPS_TIMEOUT + SAMPLER_TIMEOUT + setup).
#
# Usage (from anywhere; paths are relative to the repository root):
#   bash benchmarks/gpu_paper_sizes.sh [OUT_DIR] [--dry-run | --smoke]
#   bash benchmarks/gpu_paper_sizes.sh --fetch-wheels       # on a machine WITH internet
#
#   OUT_DIR      results folder; default $OUT when set (the device tool's folder), else
#                benchmarks/results/gpu
#   --dry-run    choose the interpreter and check it, print the commands, run nothing
#   --smoke      run the whole flow on CPU with tiny sizes (tests this script without a GPU)
#   --fetch-wheels  download into .whl/ the pure-Python packages lcdiff needs that the device
#                image lacks (anndata and its dependencies), built for its Python 3.12
#
# Which Python: $PYTHON if set; else the first of .venv/bin/python and python3 whose JAX sees a
# GPU. The project's .venv (1.7 GB) does not travel to the device machine, whose image has a
# python3 with CUDA-enabled JAX, optax and equinox but no anndata: run --fetch-wheels here
# first and carry .whl (the script installs it into /tmp/site). Only when no interpreter sees a
# GPU and the package index is reachable is jax[cuda12] installed into the venv; without network
# the script says so and exits with status 3.
#
# A device session's command (carry [".whl"] after --fetch-wheels; ignore .whl in
# .git/info/exclude so it is not committed):
#   bash benchmarks/gpu_paper_sizes.sh
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 1

MODE=run
OUT_DIR=""
for arg in "$@"; do
    case "$arg" in
        --dry-run) MODE=dry ;;
        --smoke) MODE=smoke ;;
        --fetch-wheels) MODE=fetch ;;
        -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
        -*) echo "unknown option $arg (see --help)" >&2; exit 2 ;;
        *) OUT_DIR="$arg" ;;
    esac
done
OUT_DIR="${OUT_DIR:-${OUT:-benchmarks/results/gpu}}"
STEP_FLOPS_TIMEOUT="${STEP_FLOPS_TIMEOUT:-240}"
SAMPLER_TIMEOUT="${SAMPLER_TIMEOUT:-180}"
# anndata and what it imports that the device image lacks (pure Python except numcodecs and
# google-crc32c, fetched as CPython 3.12 manylinux wheels)
WHEELS="anndata==0.12.19 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c \
natsort legacy-api-wrap scverse-misc session-info2 array-api-compat"

if [[ "$MODE" == fetch ]]; then
    mkdir -p .whl
    # shellcheck disable=SC2086  # WHEELS is a list of requirement specifiers
    pip_python=python3
    [[ -x .venv/bin/python ]] && pip_python=.venv/bin/python
    "$pip_python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl $WHEELS || exit 1
    echo "wheels in .whl/: carry [\".whl\"] in the device call; keep .whl out of git:"
    echo "  echo /.whl/ >> .git/info/exclude"
    exit 0
fi

mkdir -p "$OUT_DIR" || exit 1
LOG="$OUT_DIR/gpu_paper_sizes.log"
: > "$LOG"
say() { echo "$*" | tee -a "$LOG"; }

say "# gpu_paper_sizes.sh $(date -u +%FT%TZ) mode=$MODE out=$OUT_DIR"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L 2>&1 | tee -a "$LOG"
else
    say "nvidia-smi: not found (no NVIDIA driver on this machine)"
fi

# wheels carried from a machine with internet (see --fetch-wheels)
if compgen -G ".whl/*.whl" >/dev/null; then
    if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl >>"$LOG" 2>&1; then
        export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
        say "installed carried wheels from .whl/ into /tmp/site"
    else
        say "WARNING: installing the carried wheels in .whl/ failed (see the log)"
    fi
fi
# lcdiff from the working tree: the device machine has no editable install
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"

sees_gpu() { env -u JAX_PLATFORMS "$1" -c "import jax; jax.devices('gpu')" >/dev/null 2>&1; }

if [[ "$MODE" == smoke ]]; then
    PLATFORM=cpu
    PY="${PYTHON:-.venv/bin/python}"
else
    PLATFORM=cuda
    PY="${PYTHON:-}"
    if [[ -z "$PY" ]]; then
        for candidate in .venv/bin/python python3; do
            if command -v "$candidate" >/dev/null 2>&1 && sees_gpu "$candidate"; then
                PY="$candidate"
                break
            fi
        done
    fi
    if [[ -z "$PY" ]]; then
        if ! nvidia-smi -L 2>/dev/null | grep -q GPU; then
            say "no NVIDIA GPU on this machine (nvidia-smi lists none): nothing to install"
        elif [[ ! -x .venv/bin/python ]]; then
            say "no .venv here to install jax[cuda12] into"
        elif ! .venv/bin/python -c \
            'import socket; socket.create_connection(("pypi.org", 443), timeout=5).close()' \
            >/dev/null 2>&1; then
            say "no network: pypi.org is unreachable, so jax[cuda12] cannot be installed here"
        else
            jax_version="$(.venv/bin/python -c 'import jax; print(jax.__version__)')"
            say "no interpreter sees the GPU; installing jax[cuda12]==$jax_version into .venv"
            if [[ "$MODE" == run ]]; then
                .venv/bin/python -m pip install -q "jax[cuda12]==$jax_version" >>"$LOG" 2>&1
                sees_gpu .venv/bin/python && PY=.venv/bin/python
            fi
        fi
    fi
    if [[ -z "$PY" ]] && [[ "$MODE" == dry ]]; then
        say "dry run: no Python here has a JAX that sees a GPU; a real run would exit 3 here"
        PY="<python with GPU JAX>"
    elif [[ -z "$PY" ]]; then
        say "ERROR: no Python here has a JAX that sees a GPU (tried \$PYTHON, .venv/bin/python,"
        say "python3) and none could be installed. On a machine without internet, use an image"
        say "whose python3 has CUDA-enabled JAX, or set PYTHON=/path/to/python. Nothing was run."
        exit 3
    fi
fi

if [[ -x "$PY" ]] || command -v "$PY" >/dev/null 2>&1; then
    say "python: $PY"
    "$PY" - <<'EOF' 2>&1 | tee -a "$LOG" "$OUT_DIR/environment.txt"
import importlib, importlib.metadata, platform, sys
print("python", sys.version.split()[0], platform.platform())
for name in ("jax", "jaxlib", "optax", "equinox", "numpy", "scipy", "pandas", "anndata"):
    try:
        importlib.import_module(name)
        print(name, importlib.metadata.version(name))
    except Exception as exc:  # a missing package is reported, not fatal here
        print(name, "MISSING:", type(exc).__name__, exc)
try:
    import jax
    print("devices", jax.devices())
except Exception as exc:
    print("jax devices: ERROR", exc)
EOF
    if ! "$PY" -c "import anndata" >/dev/null 2>&1; then
        say "WARNING: anndata is missing for $PY: sampler_quality.py will fail. Run"
        say "  bash benchmarks/gpu_paper_sizes.sh --fetch-wheels   (on a machine with internet)"
        say "and carry .whl in the device call. step_flops.py does not need it."
    fi
fi

if [[ "$MODE" == smoke ]]; then
    STEP_ARGS=(--points fast --repeats 1 --matmul-n 256)
    SAMPLER_ARGS=(--seeds 1 --cells 50)
else
    STEP_ARGS=(--points paper --repeats 5 --matmul-n 8192)
    SAMPLER_ARGS=()
fi

status=0
run_one() {  # name, timeout seconds, script args...
    local name="$1" limit="$2"
    shift 2
    local cmd=(timeout "$limit" env JAX_PLATFORMS="$PLATFORM" PYTHONUNBUFFERED=1 "$PY"
               "benchmarks/$name.py" "$@" --out "$OUT_DIR/$name")
    say "\$ ${cmd[*]}"
    if [[ "$MODE" == dry ]]; then
        return 0
    fi
    local start=$SECONDS rc
    "${cmd[@]}" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    if [[ $rc -eq 124 ]]; then
        say "$name: TIMED OUT after ${limit}s"
    fi
    say "$name: exit $rc after $((SECONDS - start)) s"
    [[ $rc -eq 0 ]] || status=1
}

run_one step_flops "$STEP_FLOPS_TIMEOUT" "${STEP_ARGS[@]}"
run_one sampler_quality "$SAMPLER_TIMEOUT" "${SAMPLER_ARGS[@]}"
say "done (status $status); results in $OUT_DIR"
exit $status
