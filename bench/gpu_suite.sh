#!/usr/bin/env bash
# The GPU benchmark suite: benchmarks 1-6 at full size on one GPU, each in its own process under its
# own `timeout` (one failure or overrun loses only that benchmark), in under 8 minutes on one H100.
#
#   bench/gpu_suite.sh [--wheels DIR] [RESULTS_DIR]        (or RESULTS_DIR in $PORT_BENCH_RESULTS)
#
# Writes into RESULTS_DIR (default bench/results/gpu-<UTC time>): each benchmark's JSON and log,
# status.tsv (benchmark, exit code, seconds), nvidia-smi.txt, environment.txt (torch, CUDA, cuDNN,
# packages) and, in pgd_training.json/.log, torch.profiler's top kernels of the ResNet-18 AT step.
#
# Needs only Python and torch (+ numpy, h5py, pandas, scipy, tqdm, pyyaml, safetensors,
# huggingface_hub); no network and no `pip install -e .`: src/ goes on PYTHONPATH, and packages
# that are missing (diffusers, pyautoattack and their dependencies) are installed from the wheels
# in DIR into a temporary folder, also on PYTHONPATH. Wheels already satisfied are skipped.
# Prepare DIR on a machine with network (Python 3.12, manylinux x86_64), e.g. /work/main/.whl:
#
#   pip download --dest .whl --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --abi cp312 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux_2_28_x86_64 diffusers==0.42.1 pyautoattack==0.2.0 importlib_metadata==10.2.0 \
#     zipp==4.1.2 lazy_importer==0.1.0 regex==2026.11.19 requests==2.34.2 charset_normalizer==3.5.3 \
#     urllib3==2.8.0 idna==3.20 certifi==2026.10.19.post1 truststore==0.10.5
#
# Budgets (seconds, each a hard limit): 1 pgd_training 140, 3 certification 40, 4 scoring 40,
# 2 sampling 80, 6 autoattack 60, 5 loader 80. Then extras, each only while the total stays under
# SUITE_SECONDS (default 470): audit (exact nearest neighbours, 1M x 10k x 512) 60, precision_digits
# (bf16 vs fp32 digits training accuracy) 120, pgd_training ResNet-18 with torch.compile 120, the
# same with CUDA graphs (reduce-overhead) 120, certification in fp32 (counts equal to the plain loop)
# 30. SUITE_ARGS is added to every benchmark's arguments: `SUITE_ARGS=--small bench/gpu_suite.sh`
# checks the suite itself on a CPU.
set -u
cd "$(dirname "$0")/.."

wheels=""
results="${PORT_BENCH_RESULTS:-}"
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) wheels="$2"; shift 2 ;;
        --wheels=*) wheels="${1#--wheels=}"; shift ;;
        -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
        *) results="$1"; shift ;;
    esac
done
results="${results:-bench/results/gpu-$(date -u +%Y%m%dT%H%M%S)}"
mkdir -p "$results"
results="$(cd "$results" && pwd)"
suite_seconds="${SUITE_SECONDS:-470}"
started=$SECONDS
python="${PYTHON:-$(command -v python || command -v python3)}"

export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "$wheels" ]; then
    site="$(mktemp -d /tmp/port-site.XXXXXX)"
    missing=()
    for wheel in "$wheels"/*.whl; do
        name="$(basename "$wheel" | cut -d- -f1)"
        "$python" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$name" 2>/dev/null \
            || missing+=("$wheel")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${#missing[@]} wheel(s) into $site: ${missing[*]##*/}"
        if "$python" -m pip --version >/dev/null 2>&1; then
            "$python" -m pip install --quiet --no-index --no-deps --target "$site" "${missing[@]}"
        else  # no pip: a wheel is a zip laid out for site-packages
            for wheel in "${missing[@]}"; do "$python" -m zipfile -e "$wheel" "$site"; done
        fi
    fi
    export PYTHONPATH="$PYTHONPATH:$site"
fi

nvidia-smi >"$results/nvidia-smi.txt" 2>&1 || echo "nvidia-smi failed" >>"$results/nvidia-smi.txt"
"$python" - >"$results/environment.txt" 2>&1 <<'EOF'
import importlib, platform
import torch
print("python", platform.python_version())
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(), torch.cuda.get_device_capability())
for name in ("port", "numpy", "h5py", "diffusers", "pyautoattack"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", ""), module.__file__)
    except Exception as err:  # recorded, not fatal: only the benchmarks that need it fail
        print(name, "NOT IMPORTABLE:", repr(err))
EOF
cat "$results/environment.txt"
printf "benchmark\texit_code\tseconds\n" >"$results/status.tsv"

run() {  # run NAME LIMIT SCRIPT [ARGS...]: one benchmark in its own process under its own timeout
    local name="$1" limit="$2" script="$3"
    shift 3
    if [ ! -f "bench/$script" ]; then
        printf "%s\tmissing\t0\n" "$name" >>"$results/status.tsv"
        echo "== $name: bench/$script does not exist"
        return
    fi
    echo "== $name (limit ${limit}s)"
    local t0=$SECONDS
    # shellcheck disable=SC2086  # SUITE_ARGS is a list of words
    timeout --kill-after=10 "$limit" "$python" "bench/$script" --out "$results" "$@" ${SUITE_ARGS:-} \
        >"$results/$name.log" 2>&1
    local rc=$?
    printf "%s\t%s\t%s\n" "$name" "$rc" "$((SECONDS - t0))" >>"$results/status.tsv"
    echo "   exit $rc after $((SECONDS - t0))s; log $results/$name.log"
    tail -n 3 "$results/$name.log"
}

extra() {  # like run, only while the suite's total stays under its budget
    if [ $((SECONDS - started + $2)) -le "$suite_seconds" ]; then run "$@"; else
        printf "%s\tskipped\t0\n" "$1" >>"$results/status.tsv"; fi
}

run pgd_training 220 pgd_training.py --profile  # wrn-28-10(-silu): the labeler, smoothing and Wang et al. preset networks the plan lacks
run certification 40 certification.py
run scoring 40 scoring.py
run sampling 80 sampling.py
run autoattack 60 autoattack.py
run loader 80 loader.py
extra audit 60 audit.py
extra precision_digits 120 precision_digits.py
extra pgd_training-compile 120 pgd_training.py --compile --archs resnet18
extra pgd_training-cudagraphs 120 pgd_training.py --compile --compile-mode reduce-overhead --archs resnet18
extra certification-fp32 30 certification.py --precision fp32 --out "$results/fp32"
echo "suite finished in $((SECONDS - started))s; results in $results"
cat "$results/status.tsv"
