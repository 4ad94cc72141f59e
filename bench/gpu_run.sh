#!/usr/bin/env bash
# One prepared GPU run (see shared/GPU.md): the card and versions, then the GPU benchmarks, each under its own
# time limit so that one that overruns still leaves the others' figures. The engine against peft goes first (the
# figure no run has produced yet); the launch-configuration sweep runs only while time is left. Results and the
# log go to $1.
#   bash bench/gpu_run.sh "$OUT" MODEL_DIR     # MODEL_DIR: config.json + tokenizer of SmolLM2-135M-Instruct
set -uo pipefail
out=${1:?results directory}
model_dir=${2:?base model directory (config.json and tokenizer)}
budget_s=${GPU_RUN_BUDGET_S:-500}
mkdir -p "$out"
log="$out/run.log"
export PYTHONPATH=. PYTHONUNBUFFERED=1
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch, triton, transformers, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'triton', triton.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
  started=$SECONDS
  timeout 250 python3 -m bench.gpu_engine --model-dir "$model_dir" --out "$out"; echo "gpu_engine rc=$? after $((SECONDS - started)) s"
  timeout 200 python3 -m bench.gpu_bench --out "$out"; echo "gpu_bench rc=$? after $((SECONDS - started)) s"
  left=$((budget_s - (SECONDS - started)))
  if [ "$left" -gt 70 ]; then
    timeout "$left" python3 -m bench.gpu_sweep --out "$out"; echo "gpu_sweep rc=$? after $((SECONDS - started)) s"
  else
    echo "gpu_sweep skipped: ${left} s left of ${budget_s} s"
  fi
} 2>&1 | grep -v -e "FutureWarning" -e "warnings.warn" | tee "$log"
