#!/usr/bin/env bash
# The accelerator check of issue 18, one script (under 8 minutes on one H100):
#
#   benchmarks/device_check.sh [OUT]            # full run, on the GPU machine
#   DEVICE_CHECK_TINY=1 benchmarks/device_check.sh OUT   # a few steps, on any machine
#
# Sections, in order of priority; each runs only while the time budget
# (DEVICE_CHECK_BUDGET_S, default 420 s) is not spent, and each failure is recorded
# and the next section runs:
#   1. mtl_jax step time (benchmarks.step_time) on W1, W2, W3 for METHODS, parameter mode;
#   2. the same methods in LibMTL (benchmarks.libmtl_step_time, on cuda when torch sees
#      a GPU), when third_party/LibMTL exists (benchmarks/get_libmtl.sh puts it there);
#   3. the training loop: benchmarks.loop_overhead on multi_mnist for equal and mgda
#      (train_wall_s, first step, bare step median, overhead ratio);
#   4. S = 8 seeds vmapped vs sequential (benchmarks.vmapped_seeds) on W1, equal and mgda;
#   5. mtl_jax step time in rep_grad mode for the Gramian methods.
# Then benchmarks.device_report writes OUT/device_check.json and OUT/device_check.md.
set -u
OUT=${1:-${OUT:-device_check_out}}
PYTHON=${PYTHON:-python3}
BUDGET=${DEVICE_CHECK_BUDGET_S:-420}
METHODS=${METHODS:-equal,mgda,nash_mtl,pcgrad,cagrad,famo,upgrad}
REP_METHODS=${REP_METHODS:-mgda,nash_mtl,pcgrad,cagrad,upgrad}
LIBMTL_METHODS=${LIBMTL_METHODS:-EW,MGDA,Nash_MTL,PCGrad,CAGrad,FAMO,UPGrad}
WORKLOADS=${WORKLOADS:-W1 W2 W3}
STEPS=10 WARMUP=3 TRAIN_STEPS=4000 SEEDS=8 LOOP_CONFIG=multi_mnist LOOP_ARGS=()
if [[ -n "${DEVICE_CHECK_TINY:-}" ]]; then
  STEPS=1 WARMUP=1 TRAIN_STEPS=6 SEEDS=2 LOOP_CONFIG=test
  METHODS=equal,mgda REP_METHODS=mgda LIBMTL_METHODS=MGDA WORKLOADS=W1
  # The tiny run trains on the data the caller names (the tests' generated MultiMNIST).
  [[ -n "${DEVICE_CHECK_DATA_DIR:-}" ]] && LOOP_ARGS=(--override "dataset.data_dir=$DEVICE_CHECK_DATA_DIR")
fi
mkdir -p "$OUT"
LOG="$OUT/device_check.log"
: >"$LOG"
START=$SECONDS

section() {  # section NAME COMMAND...: runs COMMAND unless the budget is spent
  local name=$1
  shift
  if ((SECONDS - START > BUDGET)); then
    echo "$name: skipped (time budget of ${BUDGET}s spent)" | tee -a "$LOG"
    return
  fi
  local began=$SECONDS
  if "$@" >>"$LOG" 2>&1; then
    echo "$name: done in $((SECONDS - began))s" | tee -a "$LOG"
  else
    echo "$name: FAILED (exit $?) after $((SECONDS - began))s, see $LOG" | tee -a "$LOG"
  fi
}

"$PYTHON" -c "import jax; print('jax', jax.__version__, jax.devices())" >>"$LOG" 2>&1
for w in $WORKLOADS; do
  section "mtl_jax $w" "$PYTHON" -m benchmarks.step_time --workload "$w" --method all \
    --methods "$METHODS" --steps "$STEPS" --warmup "$WARMUP" --threads 0 \
    --json "$OUT/mtl_jax_$w.json"
done
if [[ -d third_party/LibMTL ]]; then
  TORCH_DEVICE=$("$PYTHON" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')" 2>>"$LOG")
  if [[ -n "$TORCH_DEVICE" ]]; then
    for w in $WORKLOADS; do
      section "LibMTL $w ($TORCH_DEVICE)" "$PYTHON" -m benchmarks.libmtl_step_time --workload "$w" \
        --method all --methods "$LIBMTL_METHODS" --steps "$STEPS" --warmup "$WARMUP" \
        --device "$TORCH_DEVICE" --threads 0 --json "$OUT/libmtl_$w.json"
    done
  else
    echo "LibMTL: skipped (torch not importable)" | tee -a "$LOG"
  fi
else
  echo "LibMTL: skipped (no third_party/LibMTL; run benchmarks/get_libmtl.sh)" | tee -a "$LOG"
fi
for m in equal mgda; do
  section "loop $m" "$PYTHON" -m benchmarks.loop_overhead --config "$LOOP_CONFIG" --method "$m" \
    --steps "$TRAIN_STEPS" --reference-steps $((STEPS * 5)) "${LOOP_ARGS[@]}" \
    --json "$OUT/loop_$m.json"
done
for m in equal mgda; do
  section "vmapped seeds $m" "$PYTHON" -m benchmarks.vmapped_seeds --workload W1 --method "$m" \
    --seeds "$SEEDS" --batch-size 128 --steps "$STEPS" --warmup "$WARMUP" \
    --json "$OUT/vmapped_$m.json"
done
for w in $WORKLOADS; do
  section "mtl_jax $w rep_grad" "$PYTHON" -m benchmarks.step_time --workload "$w" --method all \
    --methods "$REP_METHODS" --rep-grad --steps "$STEPS" --warmup "$WARMUP" --threads 0 \
    --json "$OUT/mtl_jax_${w}_rep_grad.json"
done
"$PYTHON" -m benchmarks.device_report "$OUT" | tee -a "$LOG"
echo "total: $((SECONDS - START))s" | tee -a "$LOG"
