#!/usr/bin/env bash
# The scale checks that need a CUDA GPU (CI has none), run by hand from the repository root:
#
#     bash tests/scripts/gpu_checks.sh OUT_DIR
#
# 1. fp16 (GradScaler) and bf16 training on the GPU: losses finite, the attack's delta within eps in fp32 pixels.
# 2. The Trainer launched with FSDP2 through accelerate on 1 GPU: the attack goes through the sharded wrapper.
# 3. benchmarks/memory.py --device cuda: PGD-10 vs PGD-1 peak memory of a training step, ViT-S/16 and ResNet-18.
# Prints one JSON summary line per check; the full logs and results are left in OUT_DIR.
set -u
OUT=${1:-/tmp/hf_advft_gpu_checks}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
T=tests/scripts/train_tiny.py
C="--n-train 512 --n-eval 64 --batch 64 --epochs 2 --adv-steps 5 --cuda"
$PY -c "import torch, transformers, accelerate; print(dict(torch=torch.__version__, transformers=transformers.__version__,
accelerate=accelerate.__version__, gpu=torch.cuda.get_device_name()))"

summary() {  # summary NAME: one line from the run's result JSON (non-zero when a loss is not finite)
  $PY tests/scripts/run_summary.py "$1" "$OUT/$1/r_rank0.json"
}

for precision in fp32 bf16 fp16; do
  flag=""; [ "$precision" != fp32 ] && flag="--$precision"
  $PY $T $C $flag --output-dir "$OUT/$precision" --result "$OUT/$precision/r" > "$OUT/$precision.log" 2>&1 \
    && summary "$precision" || { echo "$precision FAILED"; tail -20 "$OUT/$precision.log"; }
done

$PY -m accelerate.commands.launch --use_fsdp --fsdp_version 2 --num_processes 1 --num_machines 1 --mixed_precision no \
  --dynamo_backend no --fsdp_auto_wrap_policy NO_WRAP --fsdp_state_dict_type FULL_STATE_DICT \
  $T $C --output-dir "$OUT/fsdp2" --result "$OUT/fsdp2/r" > "$OUT/fsdp2.log" 2>&1 \
  && summary fsdp2 || { echo "fsdp2 FAILED"; tail -30 "$OUT/fsdp2.log"; }

$PY benchmarks/memory.py --device cuda --image-size 224 --batch 64 --vit-width 384 --vit-depth 12 \
  --json "$OUT/memory_cuda.json" 2>&1 | grep -v "^USDT\|^ERROR:\|UserWarning"
