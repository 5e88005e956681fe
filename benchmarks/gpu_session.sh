#!/bin/bash
# One GPU-machine session, prepared to fit a short lease (docs/model.md, "GPU run"):
#   1. paper-profile training throughput: Zarr store vs memory vs the model alone (gpu_train.py);
#   2. the study at paper scale on the simulated 419-patient cohort of the CPU runs (same simulator
#      seed and options, same project secret -> same pseudonyms -> same split): simulate, then
#      `ceusflow run --device cuda` (convert, preprocess, split, train R-RFA / R-SR, signatures, report);
#   3. more paper-profile seeds on the same split (profiles.py), while time is left.
# Every step is bounded by a deadline; what finished is packed into $OUT.
#
# Run from the repository root on the GPU machine:
#   OUT=/tmp/out SECRET=path/to/.ceusflow-secret bash benchmarks/gpu_session.sh
# Optional: BUDGET_S (default 540), N (419), ROWS/COLS (192/256), WORKERS (nproc), DEVICE (cuda),
# WHEELS (folder of wheels to install first, for a machine without the dependencies).
set -u
REPO=$PWD
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
T0=$(date +%s); BUDGET_S=${BUDGET_S:-540}
N=${N:-419}; ROWS=${ROWS:-192}; COLS=${COLS:-256}; WORKERS=${WORKERS:-$(nproc)}; DEVICE=${DEVICE:-cuda}
LOG=$OUT/log.txt
left() { echo $((T0 + BUDGET_S - $(date +%s))); }
say() { echo "[$(($(date +%s) - T0)) s] $*" | tee -a "$LOG"; }
export PYTHONUNBUFFERED=1

if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    >>"$LOG" 2>&1 || { say "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$REPO
else
  export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import ceusflow, torch, zarr, pydicom, dask; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" 2>&1 | tee -a "$LOG"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$LOG" 2>&1

say "1. throughput"
if [ "$DEVICE" = cuda ]; then
  timeout 150 python3 "$REPO/benchmarks/gpu_train.py" --variants fp32,bf16,bf16-cl 2>&1 | tee "$OUT/throughput.txt" | tee -a "$LOG"
fi

say "2. study"
W=/tmp/study; mkdir -p $W/stores
cp "$SECRET" $W/stores/.ceusflow-secret && chmod 600 $W/stores/.ceusflow-secret
cd $W
[ -d cohort ] || timeout $(($(left) - 60)) python3 "$REPO/cli.py" simulate cohort -n "$N" --fps 2 --rows "$ROWS" --cols "$COLS" \
  --seed 419 --workers "$WORKERS" >sim.log 2>&1
tail -n 3 sim.log | tee -a "$LOG"
say "simulated"
timeout $(($(left) - 30)) python3 "$REPO/cli.py" run cohort --out results --store stores/h.zarr --workers "$WORKERS" \
  --device "$DEVICE" >run.log 2>run.err
say "run exit $?"
grep -E "^\[[0-9]/7\]" run.log | tee -a "$LOG"; tail -n 5 run.err >>"$LOG"
# per-patient sums of the stored 8-bit ROI intensities: equal sums here and on the CPU run = same inputs
python3 - <<'EOF' >"$OUT/roi_sums.csv" 2>>"$LOG"
import numpy as np, zarr
g = zarr.open_group("stores/h-roi.zarr", mode="r")
print("patient,sum")
for k, p in enumerate(g["patient"][...]):
    print(f"{p},{int(np.asarray(g['intensity'][k], dtype=np.int64).sum())}")
EOF

say "3. more seeds"
if [ "$(left)" -gt 60 ] && [ -f results/split.csv ]; then
  timeout $(($(left) - 15)) python3 "$REPO/benchmarks/profiles.py" stores/h-roi.zarr results/split.csv "$OUT/seeds.csv" \
    --profile paper --device "$DEVICE" --seeds 1,2,3 --deadline-s $(($(left) - 75)) 2>&1 | tail -n 8 | tee -a "$LOG"
fi
tar czf "$OUT/results.tgz" --exclude='*.zarr' --exclude='*.safetensors' results run.log run.err sim.log 2>>"$LOG"
say "done"
