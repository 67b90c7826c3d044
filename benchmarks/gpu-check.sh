#!/usr/bin/env bash
# The GPU check: one prepared script, at most 8 minutes on one GPU (each part has a time limit). Run it whenever a GPU machine is lent to a
# session and quote its output. Without a GPU it runs its CPU-only parts (the CUDA tests skip, the
# benchmarks run small on the CPU, torchrun uses gloo), so it can be checked anywhere.
#
#   bash benchmarks/gpu-check.sh            # PYTHON=path/to/python to use another interpreter
#
# Prints: the tests marked `cuda`; the defence benchmark (ratios to j0, images per second) with AMP off and
# on, and the WCAT methods' agreement with exact; the attack benchmark (seconds, images per second); a
# one-process torchrun (NCCL on a GPU) training and evaluation. Exit code 1 if any part failed.
set -uo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-.venv/bin/python}
if [ ! -x "$python" ]; then
    echo "== installing lipcli into .venv"
    python3 -m venv .venv && .venv/bin/pip install -q -e ".[test]" || exit 1
    python=.venv/bin/python
fi
bin=$(dirname "$python")
work=$(mktemp -d)
failed=()
section() { printf '\n== %s (%s)\n' "$1" "$(date +%H:%M:%S)"; }
check() {  # check NAME SECONDS COMMAND...: run with a time limit, remember a failure
    local name=$1 limit=$2
    shift 2
    timeout "$limit" "$@"
    local rc=$?
    [ "$rc" -eq 0 ] || { echo "!! $name failed (exit code $rc)"; failed+=("$name"); }
}

section environment
"$python" - <<'EOF'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}")
if not torch.cuda.is_available():
    print("no CUDA device: CPU-only parts")
EOF
if "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    device=cuda rounds=20 bench_arch=resnet34 agreement=20 limit=450 slower=1
    attacks=min-norm,deepfool,deepfool-torchattacks
else  # a few images and longer limits: this is only to show that every part runs
    device=cpu rounds=2 bench_arch=small-cnn agreement=0 limit=50 slower=4 attacks=min-norm,deepfool
fi
limit() { echo $(($1 * slower)); }

section "tests marked cuda"
timeout "$(limit 120)" "$python" -m pytest -m cuda -q -p no:cacheprovider -o addopts=-rs
rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 5 ] || { echo "!! cuda tests failed (exit code $rc)"; failed+=("cuda tests"); }

section "defence benchmark on $device, AMP off"
check "defence benchmark" "$(limit 100)" "$python" benchmarks/bench_defences.py --device "$device" --arch "$bench_arch" \
    --rounds "$rounds" --agreement-batches "$agreement"
if [ "$device" = cuda ]; then
    section "defence benchmark on cuda, AMP on (bfloat16 autocast)"
    check "defence benchmark, AMP" 50 "$python" benchmarks/bench_defences.py --device cuda --arch "$bench_arch" \
        --rounds "$rounds" --agreement-batches 0 --set training.amp=true
fi

section "torchrun, one process ($([ "$device" = cuda ] && echo NCCL || echo gloo)): training and evaluation"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
check "torchrun training" "$(limit 60)" "$python" -m torch.distributed.run --standalone --nproc_per_node=1 -m lipcli train \
    --dataset digits --epochs 5 --defence j2-lip --set 'defence.options.wcat.method="worst"' \
    --out "$work/run" --quiet --json
[ -f "$work/run/metrics.jsonl" ] && "$python" - "$work/run/metrics.jsonl" <<'EOF'
import json, sys
for row in map(json.loads, open(sys.argv[1])):
    print(f"epoch {row['epoch']}: {row['images_per_second']:.0f} images/s, val error {row['val_error']:.4f}, "
          f"test error {row['test_error']:.4f}, penalty {row['penalty']:.4g}")
EOF
check "torchrun curve" "$(limit 40)" "$python" -m torch.distributed.run --standalone --nproc_per_node=1 -m lipcli curve \
    "$work/run/best.pt" --norm l2 --limit "$limit" --out "$work/curve" --quiet --json

section "attack benchmark on $device (the torchrun model, digits)"
"$python" -c 'import foolbox' 2>/dev/null && attacks=ddn,$attacks
check "attack benchmark" "$(limit 90)" "$python" benchmarks/bench_attacks.py "$work/run/best.pt" --device "$device" \
    --limit "$limit" --only "$attacks"

rm -rf "$work"
section done
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
echo "every part passed"
