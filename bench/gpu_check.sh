#!/usr/bin/env bash
# The GPU check of kdcore, one script for a machine with one CUDA GPU (under 8 minutes there): the
# environment, the `gpu`-marked tests, the KD-step throughput bench (batched vs per-seed loop, augmentation
# on/off, fp32/bf16, contiguous/channels-last), and two epochs of the CIFAR-100 recipe
# (bench/reproduce_cifar100.py) on a synthetic CIFAR-100-format folder. It prints every figure; its exit
# status is non-zero when any part failed (every part runs regardless).
#
#   bash bench/gpu_check.sh                        # on the GPU machine, from the project root
#   DEVICE=cpu TINY=1 bash bench/gpu_check.sh      # every line exercised on CPU at tiny sizes (minutes)
#
# Settings (environment): DEVICE (cuda), TINY (0; 1: smoke sizes), PYTHON (python), OUT (a temporary
# folder for the synthetic data and the figures), SYNTH_TRAIN / SYNTH_TEST (images in the synthetic folder:
# 5000 / 1000, 2 per class / 1 per class with TINY=1), SEEDS (0,10,1234; 0,10 with TINY=1), LIMIT (seconds
# per part: 150, 300 with TINY=1).
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
TINY=${TINY:-0}
OUT=${OUT:-$(mktemp -d -t kdtune-gpu-check-XXXXXX)}
if [ "$TINY" = 1 ]; then
    SYNTH_TRAIN=${SYNTH_TRAIN:-200}; SYNTH_TEST=${SYNTH_TEST:-100}; SEEDS=${SEEDS:-0,10}
else
    SYNTH_TRAIN=${SYNTH_TRAIN:-5000}; SYNTH_TEST=${SYNTH_TEST:-1000}; SEEDS=${SEEDS:-0,10,1234}
fi
# Each part has a cap, so the whole stays under 8 minutes on a GPU (3 x 150 s); CPU runs get more.
if [ "$TINY" = 1 ]; then LIMIT=${LIMIT:-300}; else LIMIT=${LIMIT:-150}; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
failed=()
part() {  # part NAME SECONDS COMMAND...: run one part under a time limit, note a failure, go on
    local name=$1 limit=$2; shift 2
    echo; echo "=== $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout "$limit" "$@"
    local rc=$?
    echo "=== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" = 0 ] || failed+=("$name (exit $rc)")
}

echo "=== environment (DEVICE=$DEVICE TINY=$TINY OUT=$OUT)"
"$PYTHON" - "$DEVICE" <<'EOF'
import sys
import torch
device = torch.device(sys.argv[1])
print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, cuda available {torch.cuda.is_available()}")
if device.type == "cuda":
    print(f"device {torch.cuda.get_device_name(device)}, capability {torch.cuda.get_device_capability(device)}, "
          f"cuDNN {torch.backends.cudnn.version()}, bf16 supported {torch.cuda.is_bf16_supported()}, "
          f"TF32 for cuDNN convolutions {torch.backends.cudnn.allow_tf32}")
else:
    print(f"device {device}, {torch.get_num_threads()} thread(s)")
EOF

# 1. The gpu-marked tests (they skip without CUDA, which a CPU run shows); -s prints their timings.
part "gpu tests" "$LIMIT" "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu -rA -s tests/

# 2. Images per second of a KD step, every combination; on CPU the default sizes take minutes, so TINY
#    runs the smoke test.
if [ "$TINY" = 1 ]; then
    part "throughput bench" "$LIMIT" "$PYTHON" bench/image_throughput.py --device "$DEVICE" --smoke-test \
        --layouts contiguous,channels_last
else
    part "throughput bench" "$LIMIT" "$PYTHON" bench/image_throughput.py --device "$DEVICE" --seeds 5 --steps 20 \
        --layouts contiguous,channels_last
fi

# 3. Two epochs of the CIFAR-100 recipe (teacher trained first, then vanilla, KD and SimKD students) on a
#    synthetic folder in the CIFAR-100 python format (kdcore.sources.load_cifar: pickles `train` and
#    `test`, b"data" (n, 3072) uint8 channel-major, b"fine_labels"); random pixels, so only that it runs
#    and what it costs mean anything, not the accuracies.
"$PYTHON" - "$OUT/cifar-100-python" "$SYNTH_TRAIN" "$SYNTH_TEST" <<'EOF'
import pickle
import sys
from pathlib import Path

import numpy as np

folder, n_train, n_test = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
folder.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
for name, n in (("train", n_train), ("test", n_test)):
    batch = {b"data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8),
             b"fine_labels": [i % 100 for i in range(n)], b"coarse_labels": [i % 20 for i in range(n)]}
    (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
print(f"synthetic CIFAR-100 folder {folder}: {n_train} training and {n_test} test images of 100 classes")
EOF
if [ -f bench/reproduce_cifar100.py ]; then
    part "CIFAR-100 recipe, 2 epochs" "$LIMIT" "$PYTHON" bench/reproduce_cifar100.py --data "$OUT/cifar-100-python" \
        --epochs 2 --device "$DEVICE" --seeds "$SEEDS" --out "$OUT/recipe.json"
else
    echo; echo "=== CIFAR-100 recipe: bench/reproduce_cifar100.py is not in this checkout"
    failed+=("CIFAR-100 recipe (bench/reproduce_cifar100.py missing)")
fi

echo
if [ ${#failed[@]} = 0 ]; then
    echo "=== gpu check: every part passed (files in $OUT)"
else
    echo "=== gpu check: ${#failed[@]} part(s) failed: ${failed[*]}"
    exit 1
fi
