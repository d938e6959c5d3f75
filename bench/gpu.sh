#!/usr/bin/env bash
# GPU checks in one go: the CUDA tests, then the training, TISM and ISM benchmarks on the GPU.
# Everything is written to one log (default gpu-<date>.log in the current folder).
#
#   bash bench/gpu.sh [LOG]          # from the repository root; PYTHON=... picks the interpreter
#
# Needs a CUDA build of torch==2.13.0 with the project's requirements installed. Takes a few
# minutes on a recent GPU: each benchmark runs with its short defaults.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
LOG=${1:-gpu-$(date +%Y%m%d-%H%M%S).log}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
status=0
run() {   # run one step, log its output, remember a failure but go on with the next
    echo "== $*" | tee -a "$LOG"
    "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "== FAILED ($rc): $*" | tee -a "$LOG"; status=1; }
}
: >"$LOG"
run nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
run "$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; \
print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"
[ "$status" -eq 0 ] || { echo "no usable GPU: stopping" | tee -a "$LOG"; exit 1; }
run "$PY" -m pytest -q -p no:cacheprovider -k cuda tests/
run "$PY" bench/train_throughput.py --device cuda --steps 10
run "$PY" bench/tism_vs_ism.py --device cuda
if [ -f bench/ism_fast.py ] && grep -q -- "--device" bench/ism_fast.py; then
    run "$PY" bench/ism_fast.py --device cuda
fi
echo "== log: $LOG (status $status)"
exit "$status"
