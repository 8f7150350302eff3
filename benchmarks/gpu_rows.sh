#!/usr/bin/env bash
# Issue 14's GPU rows, the ones no CPU run can give, as one prepared script for a lent GPU (from the repository root):
#
#     bash benchmarks/gpu_rows.sh OUT_DIR [PART ...]   # PART: throughput eval launch compile (the default: all, so)
#
# throughput  benchmarks/throughput.py --device cuda: ViT-B/16 and ResNet-50 at 224 px, batch 128, PGD-10, fp32 and
#             bf16, AdvTrainer as it ships against the hand loop, the limit and torchattacks (OUT_DIR/throughput.json)
# eval        benchmarks/eval_throughput.py --device cuda (OUT_DIR/eval_throughput_cuda.json)
# launch      `accelerate launch` with recipes/accelerate_configs/single_gpu.yaml and fsdp.yaml (one process) on a
#             tiny model (tests/scripts/train_tiny.py): that both run, one JSON summary line each
# compile     throughput.py's `compile` variant (AdvTrainingArguments(torch_compile=True)) against the uncompiled hand
#             loop (OUT_DIR/throughput_compile.json); last, as compiling two models in two precisions takes minutes
# channels_last  not in the default list: the `channels_last` variant (OUT_DIR/throughput_channels_last.json), for a
#             second call
#
# The throughput runs use --reps 3 --block 1. Each part runs under its own time limit in seconds (THROUGHPUT_S 200,
# EVAL_S 60, LAUNCH_S 60 per config, COMPILE_S 300), cut to what is left of TOTAL_S (520: one 10-minute call with room
# for the start), so a slow part cannot eat the others' time and the script ends in time; a part with under 30 s left
# is skipped, saying so. throughput.py rewrites its JSON after every run, so a part cut by its limit keeps what
# finished. A part that fails prints its log's tail and the next part still runs; the full logs stay in OUT_DIR.
# It needs what `make bench` installs (the test and bench extras, torchattacks with --no-deps). DEVICE=cpu runs the
# same parts in their --quick forms on the CPU: a dry run of this script, not a measurement.
set -u
if [ $# -lt 1 ]; then echo "usage: bash benchmarks/gpu_rows.sh OUT_DIR [PART ...]"; exit 2; fi
OUT=$1
shift
PARTS=${*:-throughput eval launch compile}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
QUICK=""; CUDA_FLAG="--cuda"; REPS="--reps 3 --block 1"
[ "$DEVICE" = cpu ] && { QUICK="--quick"; CUDA_FLAG=""; REPS=""; }
status=0
TOTAL_S=${TOTAL_S:-520}
[ "$DEVICE" = cpu ] && TOTAL_S=${TOTAL_S_CPU:-1500}  # the dry run on 2 CPU cores takes minutes, not seconds
for part in $PARTS; do
  case $part in throughput|eval|launch|compile|channels_last) ;;
  *) echo "unknown part $part: use throughput, eval, launch, compile or channels_last"; exit 2 ;; esac
done

$PY -c "import torch, transformers, accelerate; print(dict(torch=torch.__version__, transformers=transformers.__version__,
accelerate=accelerate.__version__, device=torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'))"

fail() {  # fail NAME LOG: the part failed; show why
  echo "$1 FAILED (log: $2)"; tail -25 "$2"; [ "$status" = 0 ] && status=1
}

budget() {  # budget LIMIT: LIMIT cut to the seconds left of TOTAL_S, at least 1 (`timeout 0` would never stop)
  local left=$((TOTAL_S - SECONDS))
  [ "$left" -lt 1 ] && left=1
  echo $((left < $1 ? left : $1))
}

for part in $PARTS; do
  if [ "$(budget 30)" -lt 30 ]; then echo "$part SKIPPED: under 30 s left of TOTAL_S=$TOTAL_S"; status=1; continue; fi
  case $part in
  throughput|compile|channels_last)
    variant=default; json=throughput; limit=${THROUGHPUT_S:-200}
    [ "$part" = compile ] && { variant=compile; json=throughput_compile; limit=${COMPILE_S:-300}; }
    [ "$part" = channels_last ] && { variant=channels_last; json=throughput_channels_last; limit=${THROUGHPUT_S:-200}; }
    timeout -k 10 "$(budget "$limit")" $PY benchmarks/throughput.py --device "$DEVICE" $QUICK $REPS --variants $variant \
      --output_dir "$OUT/throughput_runs" --json "$OUT/$json.json" > "$OUT/$json.log" 2>&1 \
      && tail -6 "$OUT/$json.log" || fail "$part" "$OUT/$json.log" ;;
  eval)
    timeout -k 10 "$(budget "${EVAL_S:-60}")" $PY benchmarks/eval_throughput.py --device "$DEVICE" $QUICK \
      --json "$OUT/eval_throughput_$DEVICE.json" > "$OUT/eval.log" 2>&1 \
      && tail -8 "$OUT/eval.log" || fail eval "$OUT/eval.log" ;;
  launch)
    for config in single_gpu fsdp; do
      # fsdp.yaml is written for 8 GPUs in bf16: one process here; bf16 told to the Trainer too (the dry run on CPU:
      # no mixed precision, as this CPU has no bf16 instructions).
      launch_args=(); train_args=()
      [ "$config" = fsdp ] && launch_args+=(--num_processes 1)
      if [ "$DEVICE" = cpu ]; then launch_args+=(--mixed_precision no)
      elif [ "$config" = fsdp ]; then train_args+=(--bf16); fi
      timeout -k 10 "$(budget "${LAUNCH_S:-60}")" $PY -m accelerate.commands.launch \
        --config_file "recipes/accelerate_configs/$config.yaml" ${launch_args[@]+"${launch_args[@]}"} \
        tests/scripts/train_tiny.py --n-train 256 --n-eval 64 --batch 64 --epochs 1 --adv-steps 3 \
        $CUDA_FLAG ${train_args[@]+"${train_args[@]}"} --output-dir "$OUT/launch_$config" --result "$OUT/launch_$config/r" \
        > "$OUT/launch_$config.log" 2>&1 \
        && $PY tests/scripts/run_summary.py "accelerate launch $config.yaml" "$OUT/launch_$config/r_rank0.json" \
        || fail "launch $config" "$OUT/launch_$config.log"
    done ;;
  esac
done
exit $status
