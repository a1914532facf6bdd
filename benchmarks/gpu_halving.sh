#!/usr/bin/env bash
# The GPU check of issues 30-32 on a lent machine (benchmarks/gpu_runs.md has the figures):
# the CUDA tests (the original's input map in the hand-written and packed steps), then the whole
# default grid (432 configurations) at the original study's settings (10 000 steps, batch 256,
# history 1000) with successive halving (ETA 3, rungs 1111, 3333, 10000), packed on the GPU.
# Usage: bash benchmarks/gpu_halving.sh OUT_DIR [SWEEP_SECONDS] [DEVICE] [STEPS]
set -uo pipefail
out=${1:?an output folder}; budget=${2:-330}; device=${3:-cuda}; steps=${4:-10000}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 MPLBACKEND=Agg
mkdir -p "$out"
{ nvidia-smi -L 2>/dev/null; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } | tee "$out/machine.txt"
if [ "$device" = cuda ]; then
  timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -5 | tee "$out/test_cuda.txt"
fi
work=$(mktemp -d)
python3 init_experiments.py --config-file "$work/grid.json" --results-dir "$work/r" >/dev/null
start=$(date +%s)
timeout "$budget" python3 training_01_all.py --workers 4 --device "$device" --steps "$steps" --halving 3 \
  --eval-every 0 --config-file "$work/grid.json" --results-dir "$work/r" > "$out/train.log" 2>&1
echo "exit $? after $(( $(date +%s) - start )) s" | tee -a "$out/train.log"
(cd "$work/r" && tar czf "$out/results.tgz" --exclude=checkpoints --exclude=weights --exclude=logs --exclude=claims .)
ls -la "$out"
