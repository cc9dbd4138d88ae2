#!/usr/bin/env bash
# A grid of runs trained stacked on one GPU, so that a short lease gets through it
# (docs/training.md, "Stacked runs"):
#
#   scripts/gpu_grid.sh OUT [--stack K] [--device D] [--checkpoint-seconds S] [--commit] \
#       --datasets ... --models ... --seeds ... --steps N [-- TRAIN FLAGS...]
#
# runs `latentquant sweep --out OUT --stack K --checkpoint-seconds S` (default K 8,
# S 60, device cuda, one stack process at a time): runs that can share a stack
# train K at a time as one model; every member is checkpointed at least every S
# seconds, so a lease that ends mid-run loses at most S seconds of each stack's
# work. Run the same command again on the next lease: finished runs are skipped,
# the others resume from their last checkpoint (the sweep's done/resume rules,
# per member).
#
# --commit: afterwards, `git add` + `git commit` the files of the runs that
# FINISHED (config.yaml, metrics.jsonl, evals.jsonl, eval.json, report.md,
# figures/; never checkpoints or logs), and nothing of a run still in progress,
# so the repository never holds a half-done run. OUT must lie inside the repository.
#
# Env: PYTHON (default .venv/bin/python if present, else python3).
set -euo pipefail

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; esac
OUT=$1; shift
STACK=8 DEVICE=cuda SECONDS_=60 COMMIT=0
SWEEP=() TRAIN=()
while [ $# -gt 0 ]; do
  case "$1" in
    --stack) STACK=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --checkpoint-seconds) SECONDS_=$2; shift 2 ;;
    --commit) COMMIT=1; shift ;;
    --) shift; TRAIN=("$@"); break ;;
    *) SWEEP+=("$1"); shift ;;
  esac
done
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

echo "# $(date -u '+%Y-%m-%d %H:%M:%S UTC') gpu_grid: stacks of $STACK on $DEVICE, checkpoint every ${SECONDS_}s"
code=0
"$PYTHON" -m latentquant sweep --out "$OUT" --stack "$STACK" --jobs 1 --checkpoint-seconds "$SECONDS_" \
  "${SWEEP[@]}" -- --device "$DEVICE" "${TRAIN[@]}" || code=$?

if [ "$COMMIT" = 1 ]; then
  # the finished runs' result files, listed by the run directory's own rule (RunDir.status)
  mapfile -t FILES < <("$PYTHON" - "$OUT" <<'EOF'
import sys
from pathlib import Path

from latentquant.train.rundir import RunDir

KEEP = ("config.yaml", "metrics.jsonl", "evals.jsonl", "eval.json", "report.md")
for config in sorted(Path(sys.argv[1]).rglob("config.yaml")):
    run = RunDir(config.parent)
    if run.status() != "finished":
        continue
    for name in KEEP:
        if (run.path / name).is_file():
            print(run.path / name)
    for figure in sorted((run.path / "figures").glob("*")):
        print(figure)
EOF
  )
  if [ ${#FILES[@]} -gt 0 ]; then
    git add -- "${FILES[@]}"
    if ! git diff --cached --quiet -- "${FILES[@]}"; then
      git commit -q -m "gpu_grid: finished runs under $OUT ($(date -u '+%Y-%m-%d %H:%M UTC'))" -- "${FILES[@]}"
      echo "# committed ${#FILES[@]} file(s) of finished runs"
    fi
  fi
fi
exit "$code"
