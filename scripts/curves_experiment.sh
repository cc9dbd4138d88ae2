#!/usr/bin/env bash
# The learning-curve experiment of docs/results.md, as run on one GPU machine
# (16 CPU cores for the data and the metrics):
#   1. the probe (shapes, seed 0, 10,000 steps, arch compact): QLAE at decay
#      time constant tau/T = 0.05, QLAE without weight decay, AE at tau/T = 5;
#   2. the choice of backbone by the probe's rule: compact if the strongly
#      decayed QLAE's final PSNR is within 1 dB of the undecayed one's, else small;
#   3. the grid on that backbone: sprites and shapes, seeds 0 1 2, QLAE at
#      tau/T = 0.05, QLAE at the paper's wd 0.1, QLAE at wd 0, AE at tau/T = 5.
# The compact grid starts beside the probe (the likelier choice, so no core
# idles); if the probe chooses small, it is stopped and moved to
# results/probes/compact-grid (its finished runs are kept, not rerun).
# Resumable: run it again and finished runs are skipped.
# Env: STEPS (10000), EVAL_EVERY (2000), EVAL_SAMPLES (10000), LQ (default "python3 -m latentquant"), JOBS (16), DEVICE (cuda),
# BUDGET (seconds for the whole script, default 3600), PACK (a .tgz to refresh
# every 30 s with the results, no checkpoints), SPARE (paper-arch throughput
# probe: seconds to give it if the grid finishes early, default 0).
set -u
LQ=${LQ:-python3 -m latentquant}
JOBS=${JOBS:-16}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-3600}
SPARE=${SPARE:-0}
START=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
export STEPS=${STEPS:-10000}  # STEPS, EVAL_EVERY, EVAL_SAMPLES: smaller only for a smoke test
COMMON=(--steps "$STEPS" --threads 1 -- --batch-size 64 --eval-every "${EVAL_EVERY:-2000}"
        --eval-samples "${EVAL_SAMPLES:-10000}" --precision fp32 --device "$DEVICE")
PROBE_MODELS=(qlae+weight-decay-timescale=0.05 qlae+weight-decay=0 ae+weight-decay-timescale=5)
GRID_MODELS=(qlae+weight-decay-timescale=0.05 qlae qlae+weight-decay=0 ae+weight-decay-timescale=5)

pack() {
  [ -n "${PACK:-}" ] || return 0
  tar czf "$PACK.tmp" --exclude=checkpoints --exclude=tensorboard results/probes results/curves results/gpu \
    2>/dev/null; mv -f "$PACK.tmp" "$PACK"
}
if [ -n "${PACK:-}" ]; then (while sleep 30; do pack; done) & PACKER=$!; fi
mkdir -p results/probes results/curves results/gpu

setsid timeout "$(left)" $LQ sweep --datasets shapes --models "${PROBE_MODELS[@]}" --seeds 0 --arch compact \
  --out results/probes/compact --jobs 3 "${COMMON[@]}" > results/probes/compact.log 2>&1 &
PROBE=$!
setsid timeout "$(left)" $LQ sweep --datasets sprites shapes --models "${GRID_MODELS[@]}" --seeds 0 1 2 \
  --arch compact --out results/curves/compact --jobs $((JOBS - 3)) "${COMMON[@]}" > results/curves/compact.log 2>&1 &
GRID=$!
wait $PROBE
ARCH=$(python3 - <<'PY'
import json, os
read = lambda m: json.load(open(f"results/probes/compact/shapes/{m}/seed0/eval.json"))
decayed, free = read("qlae+weight-decay-timescale=0.05"), read("qlae+weight-decay=0")
assert decayed["step"] == free["step"] == int(os.environ["STEPS"]), "probe unfinished"
print("compact" if decayed["psnr"] >= free["psnr"] - 1.0 else "small")
PY
) || { echo "probe failed: see results/probes/compact.log"; kill -- -$GRID; pack; exit 1; }
echo "probe chose arch: $ARCH" | tee results/probes/choice.txt
if [ "$ARCH" = small ]; then
  # stop the speculative compact grid; its runs checkpoint on SIGTERM, so wait until
  # every process of its group is gone, then keep what it made beside the probe
  kill -- -"$GRID" 2>/dev/null; wait $GRID
  while pgrep -g "$GRID" > /dev/null; do sleep 1; done
  mv results/curves/compact results/probes/compact-grid
  setsid timeout "$(left)" $LQ sweep --datasets sprites shapes --models "${GRID_MODELS[@]}" --seeds 0 1 2 \
    --arch small --out results/curves/small --jobs "$JOBS" "${COMMON[@]}" > results/curves/small.log 2>&1 &
  GRID=$!
fi
wait $GRID
echo "grid exit $? after $(( $(date +%s) - START )) s"
if [ "$SPARE" -gt 0 ] && [ "$(left)" -gt $((SPARE + 20)) ]; then  # the paper's protocol, its first seconds
  timeout "$SPARE" $LQ train --dataset shapes --model qlae --arch paper --steps 200000 --eval-every 1000 \
    --log-every 50 --device "$DEVICE" --threads 4 --out results/gpu/paper-shapes-qlae > results/gpu/paper.log 2>&1
fi
[ -n "${PACK:-}" ] && kill "$PACKER" 2>/dev/null
pack
