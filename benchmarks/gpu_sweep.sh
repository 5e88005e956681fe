#!/bin/bash
# Session-7 GPU run (docs/model.md): `ceusflow train --compile` against eager at paper scale, and a
# sweep of training variants of the cpu profile (benchmarks/sweep.py: 5-fold CV inside the training
# patients, then the validation patients), on the simulated 419-patient cohort of the CPU runs
# (same simulator seed and options and same project secret -> same pseudonyms; the split is the
# CPU study's split.csv). Every step is bounded by a deadline; what finished is left in $OUT.
#
# Run from the repository root on the GPU machine:
#   OUT=/tmp/out SECRET=path/.ceusflow-secret SPLIT=path/split.csv WHEELS=.whl bash benchmarks/gpu_sweep.sh
# Optional: BUDGET_S (540), N (419), ROWS/COLS (192/256), WORKERS (nproc), JOBS (4), VARIANTS, SEEDS (3).
set -u
REPO=$PWD
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
T0=$(date +%s); BUDGET_S=${BUDGET_S:-540}
N=${N:-419}; ROWS=${ROWS:-192}; COLS=${COLS:-256}; WORKERS=${WORKERS:-$(nproc)}; JOBS=${JOBS:-4}
VARIANTS=${VARIANTS:-cpu,cpu-wd1,cpu-narrow,cpu-aug}; SEEDS=${SEEDS:-3}; DEVICE=${DEVICE:-cuda}
LOG=$OUT/log.txt
left() { echo $((T0 + BUDGET_S - $(date +%s))); }
say() { echo "[$(($(date +%s) - T0)) s] $*" | tee -a "$LOG"; }
export PYTHONUNBUFFERED=1
SECRET=$(realpath "$SECRET"); SPLIT=$(realpath "$SPLIT")   # the script changes directory below
SITE=$REPO/.gpu/site; W=$REPO/.gpu/study   # inside the repository (ignored)
if [ -n "${WHEELS:-}" ] && ! PYTHONPATH=$SITE python3 -c "import zarr, dask, pydicom" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
    >>"$LOG" 2>&1 || { say "wheel install failed"; exit 1; }
fi
export PYTHONPATH=$SITE:$REPO
python3 -c "import ceusflow, torch, zarr, pydicom, dask; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" 2>&1 | tee -a "$LOG"
CLI="python3 $REPO/cli.py"
mkdir -p "$W/stores"; cd "$W"
if [ ! -f stores/h-roi.zarr/zarr.json ]; then
  cp "$SECRET" stores/.ceusflow-secret && chmod 600 stores/.ceusflow-secret
  say "1. simulate, convert, preprocess"
  [ -f cohort/clinical.csv ] || timeout $(($(left) - 60)) $CLI simulate cohort -n "$N" --fps 2 --rows "$ROWS" --cols "$COLS" \
    --seed 419 --workers "$WORKERS" >sim.log 2>&1
  say "simulated"
  timeout $(($(left) - 60)) $CLI convert cohort --store stores/h.zarr --workers "$WORKERS" >convert.log 2>&1
  say "converted ($?)"
  timeout $(($(left) - 60)) $CLI preprocess stores/h.zarr --out stores/h-roi.zarr --workers "$WORKERS" >pre.log 2>&1
  say "preprocessed ($?)"
  tail -n 4 convert.log pre.log >>"$LOG"
fi
cp "$SPLIT" split.csv
say "2. train R-RFA at paper scale: eager, then --compile"
for flag in "" "--compile"; do
  s=$(date +%s)
  timeout $(($(left) - 30)) $CLI train stores/h-roi.zarr --treatment RFA --out "models/R-RFA$flag" --profile paper \
    --device "$DEVICE" --train-patients split.csv $flag ${TRAIN_EXTRA:-} >"train$flag.log" 2>&1
  say "train$flag exit $? in $(($(date +%s) - s)) s: $(grep -a 'Best epoch' "train$flag.log" | tail -n 1)"
done
say "3. sweep"
timeout $(($(left) - 10)) python3 "$REPO/benchmarks/sweep.py" stores/h-roi.zarr split.csv "$OUT/sweep.csv" \
  --variants "$VARIANTS" --folds 5 --seeds "$SEEDS" --device "$DEVICE" --jobs "$JOBS" --deadline-s $(($(left) - 40)) \
  >"$OUT/sweep.log" 2>&1
tail -n 3 "$OUT/sweep.log" | tee -a "$LOG"
cp train*.log "$OUT/" 2>/dev/null
say "done"
