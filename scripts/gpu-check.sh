#!/usr/bin/env bash
# gpu-check.sh: the first thing to run on a machine with an NVIDIA GPU. One command, no network,
# from a clean clone, in under 10 minutes (each step has its own time limit, below), that proves
# autotune's whole CUDA path and writes reference figures to commit:
#
#   1. the `gpu` tests (tests/gpu): every CUDA and NVML call autotune makes, for real;
#   2. autotune run --policy act      at the defaults (the card's free memory as the budget, the
#   3. autotune run --policy smolvla  precision and checkpointing autotune picks, 2 cameras 480x640),
#      with the worker study cut to $GPU_CHECK_TRIALS trial(s) and $GPU_CHECK_POINTS throughput
#      point(s) to stay within the time (pass more with GPU_CHECK_RUN_FLAGS, e.g. "--trials 8");
#   4. benchmarks/search_strategies.py --device cuda: the searches head to head on real ACT probes
#      at a $GPU_CHECK_BENCH_BUDGET budget;
#   5. benchmarks/estimate_accuracy.py --device cuda --only act-default: the meta-device estimate
#      against the allocator's allocated and reserved peaks (only if time is left: otherwise run
#      GPU_CHECK_STEPS=estimate in a second call).
#
# It writes results/reference/<gpu-name>/ (profiles/, the CSVs, plots/, gpu-tests.txt,
# environment.txt, summary.txt: each step's status and time, gpu-check.log) and
# benchmarks/results/search_strategies_cuda.csv (and estimate_accuracy_cuda.csv); where $OUT is set (the device tool), also
# $OUT/gpu-check.tar.gz holding all of it. Unpack that in the repository's root
# (tar xzf gpu-check.tar.gz) and commit it, with the figures from summary.txt.
#
# Limits (seconds): tests 100, ACT 180, SmolVLA 180, benchmark 75, estimate 90 (what is left of the
# whole), and 560 for the whole check (GPU_CHECK_TESTS_S, GPU_CHECK_ACT_S, GPU_CHECK_SMOLVLA_S,
# GPU_CHECK_BENCH_S, GPU_CHECK_ESTIMATE_S, GPU_CHECK_TOTAL_S).
# Estimated on an H100, not yet measured: tests ~1.5 min, each run ~3 min, benchmark ~1 min. A
# step that reaches its limit is stopped (autotune records its run as failed, its probes' rows
# kept) and marked "timed out" in summary.txt, and the script exits 1; the rest still run.
# GPU_CHECK_STEPS="smolvla bench" runs only those steps, e.g. in a second call with more time.
#
# Python: $PYTHON, else .venv/bin/python, else python3. On a machine with torch, pandas, pyarrow,
# matplotlib, tqdm, nvidia-ml-py and pytest but without optuna or PyAV (the lent GPU machines:
# Python 3.12, torch 2.11), bring their wheels in .whl/ (gitignored). Build that folder on a
# machine with network, in the repository's root:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl \
#     optuna==5.0.0 alembic==1.20.1 SQLAlchemy==2.1.9 Mako==1.4.3 colorlog==6.12.0 av==18.1.0
#
# (41 MiB; PyAV's wheel carries FFmpeg with SVT-AV1.) This script installs them into a temporary
# folder with pip --no-index when optuna or av is missing. With the device tool: run
# `bash scripts/gpu-check.sh` with carry [".whl"] and timeout_s 600.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
TRIALS=${GPU_CHECK_TRIALS:-1}
POINTS=${GPU_CHECK_POINTS:-1}
PROBE_TIMEOUT=${GPU_CHECK_PROBE_TIMEOUT_S:-180}
BENCH_BUDGET=${GPU_CHECK_BENCH_BUDGET:-2GiB}
STEPS=${GPU_CHECK_STEPS:-tests act smolvla bench estimate}
TOTAL=${GPU_CHECK_TOTAL_S:-560}  # the whole check, within a 600 s device call
WORK=$(mktemp -d "${TMPDIR:-/tmp}/autotune-gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT  # the synthetic dataset, the study's database, the wheels' install
LOG="$WORK/gpu-check.log"
started=$(date +%s)

say() { echo "[gpu-check] $*" | tee -a "$LOG" >&2; }

# What is missing, from the carried wheels.
if ! "$PYTHON" -c 'import optuna, av' 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    say "installing $(ls .whl/*.whl | wc -l) carried wheel(s) from .whl/"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$WORK/site" .whl/*.whl || { say "could not install the wheels in .whl/"; exit 2; }
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
  else
    say "optuna or av is missing and there is no .whl/ folder: see this script's header"; exit 2
  fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PYTHON" -c 'import autotune.cli, optuna, av, pynvml, torch, matplotlib, pyarrow, pytest' \
  || { say "a package autotune needs does not import (see above)"; exit 2; }

GPU=$("$PYTHON" - <<'PY'
import re
from autotune.fingerprint import gpu_info
gpu = gpu_info(0)
print(re.sub(r"[^a-z0-9]+", "-", gpu.name.lower()).strip("-") if gpu and gpu.name else "")
PY
)
if [ -z "$GPU" ]; then say "NVML sees no GPU: nothing to check here"; exit 2; fi
DEST="results/reference/$GPU"
mkdir -p "$DEST"
: >"$DEST/summary.txt"
say "GPU $GPU; writing $DEST and benchmarks/results/search_strategies_cuda.csv"
{
  nvidia-smi 2>&1 || true
  "$PYTHON" -c 'import torch, optuna, av, sys; print("python", sys.version.split()[0]); print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version()); print("archs", torch.cuda.get_arch_list()); print("optuna", optuna.__version__, "av", av.__version__)'
} >"$DEST/environment.txt" 2>&1

failed=0
step() {  # step NAME LIMIT_S COMMAND...: run it under its limit, record status and time
  local name=$1 limit=$2 t0 rc status left
  shift 2
  case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
  left=$((started + TOTAL - 15 - $(date +%s)))  # what the whole check has left, less packing up
  if [ "$left" -lt 30 ]; then
    echo "$name: skipped (the check's $TOTAL s were used up)" | tee -a "$DEST/summary.txt" "$LOG" >&2
    failed=1
    return 0
  fi
  [ "$limit" -le "$left" ] || limit=$left
  say "step $name (limit ${limit} s): $*"
  t0=$(date +%s)
  timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee "$WORK/$name.log"
  rc=${PIPESTATUS[0]}
  cat "$WORK/$name.log" >>"$LOG"
  case $rc in 0) status=ok ;; 124 | 137) status="timed out" ;; *) status="failed (exit $rc)" ;; esac
  [ "$rc" = 0 ] || failed=1
  echo "$name: $status after $(($(date +%s) - t0)) s" | tee -a "$DEST/summary.txt" "$LOG" >&2
}

RUN_FLAGS=(--results "$WORK/results" --trials "$TRIALS" --throughput-points "$POINTS"
  --probe-timeout "$PROBE_TIMEOUT")
# shellcheck disable=SC2206
RUN_FLAGS+=(${GPU_CHECK_RUN_FLAGS:-})
step tests "${GPU_CHECK_TESTS_S:-100}" "$PYTHON" -m pytest -q -rs -m gpu tests/gpu -p no:cacheprovider
[ -e "$WORK/tests.log" ] && cp "$WORK/tests.log" "$DEST/gpu-tests.txt"
step act "${GPU_CHECK_ACT_S:-180}" "$PYTHON" -m autotune run --policy act "${RUN_FLAGS[@]}"
step smolvla "${GPU_CHECK_SMOLVLA_S:-180}" "$PYTHON" -m autotune run --policy smolvla "${RUN_FLAGS[@]}"
step bench "${GPU_CHECK_BENCH_S:-75}" "$PYTHON" benchmarks/search_strategies.py --device cuda \
  --policy act --budgets "$BENCH_BUDGET" --quick --probe-timeout "$PROBE_TIMEOUT" \
  --out benchmarks/results/search_strategies_cuda.csv
step estimate "${GPU_CHECK_ESTIMATE_S:-90}" "$PYTHON" benchmarks/estimate_accuracy.py --device cuda \
  --only act-default --probe-timeout "$PROBE_TIMEOUT" --out benchmarks/results/estimate_accuracy_cuda.csv

# What a run wrote, less the synthetic dataset and the study's database.
for item in profiles plots batch_probes.csv worker_trials.csv runs.csv; do
  [ -e "$WORK/results/$item" ] && cp -r "$WORK/results/$item" "$DEST/"
done
echo "total: $(($(date +%s) - started)) s" | tee -a "$DEST/summary.txt" >&2
cp "$LOG" "$DEST/gpu-check.log"
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  bench=()
  for csv in benchmarks/results/search_strategies_cuda.csv benchmarks/results/estimate_accuracy_cuda.csv; do
    [ -e "$csv" ] && bench+=("$csv")
  done
  tar czf "$OUT/gpu-check.tar.gz" "$DEST" ${bench[@]+"${bench[@]}"}
  cp "$DEST/summary.txt" "$OUT/summary.txt"
  say "wrote $OUT/gpu-check.tar.gz: unpack it in the repository's root and commit it"
fi
exit $failed
