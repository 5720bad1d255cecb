#!/usr/bin/env bash
# gpu-check.sh: the first thing to run on a machine with an NVIDIA GPU. One command, no network,
# from a clean clone, that proves autotune's CUDA path with real runs and writes reference figures
# to commit. It fits one 15-minute loan of the lent H200 (start 1-2 min, this check, a rerun):
# the whole check is held to GPU_CHECK_TOTAL_S (360 s) of command time.
#
#   GPU_CHECK_PLAN=1 bash scripts/gpu-check.sh   # the plan: each step's command and seconds (no GPU,
#                                                # no Python packages needed)
#   bash scripts/gpu-check.sh                    # the check (device tool: carry [".whl"], timeout_s 420)
#   GPU_CHECK_STEPS="tests bench estimate" bash scripts/gpu-check.sh   # the second call (below)
#
# The plan: each step's budget in seconds, and why (expected on an H100/H200; not yet measured: the
# first run's summary.txt gives the real times, and each probe's wall_s is in its batch_probes.csv).
# Every probe is a fresh interpreter: Python, import torch (~2.5 s), the CUDA context with cuBLAS
# and cuDNN (~1 s), the model's build (ACT ~0.5 s; SmolVLA ~3 s: 450M parameters made on the host),
# the cuDNN benchmark's search in the first step (~1 s), then 1 warm-up step (fp16 up to 6, while
# its scaler calibrates) and 3 measured steps (the soak 20), then its exit (torch's teardown: 1.3 to
# 1.8 s on a 2-core CPU, benchmarks/probe_time.py): an ACT probe at 24 GiB ~6 s, SmolVLA ~10 s.
# A run adds its CLI, an environment, a dataset and an estimate probe, a decode probe and its
# plots (~15 s); the search from the estimate (3-4 probes); a probe at half the maximum (the
# memory model's second size); the soak; one worker trial at the chosen batch (16 spawned workers,
# the first batch, the prefetched batches drained: 4 x batch x ~10 ms a sample, 8 steps: 10-20 s);
# and where the step waits on data (likely on an H200: ACT's step outruns 16 cores decoding AV1),
# the diagnosis: 3 decode probes and 1 batch probe (~15 s), and 3 small datasets written once
# (~15 s). The synthetic dataset (12 episodes x 150 frames x 2 cameras, AV1 480x640, ~20 s) is
# written once, by the first run, and shared: every run's results/datasets is a link to one folder.
#
#   setup         15  the carried wheels installed (~4 s), nvidia-smi and versions (~4 s), a bare
#                     probe's fixed cost timed (Python and import torch, then the CUDA context, ~6 s)
#   act-bf16-24g  95  ACT 2x480x640, bf16, 24 GiB (max ~62, autotune estimate): overhead 15, the
#                     dataset 20, search 4 + half + soak at ~6 s a probe (~35), trial ~12, and the
#                     diagnosis ~15 (its 3 small datasets written here, once)
#   act-fp32-24g  70  the same in fp32 (max ~57; its step, 2.5x bf16's, is more likely fed): 15 +
#                     35 + 12, and 8 to spare
#   smolvla-24g   95  SmolVLA at its defaults under 24 GiB, the trainer's variant (fp16 for
#                     lerobot-train 0.6.1, max ~106): overhead 20, search 4 + half + soak at ~10 s a
#                     probe (~60), trial ~15
#   act-card      80  ACT at the card's whole memory (the default budget, the trainer's variant):
#                     fp16 without checkpointing fits ~380 on 139 GiB (autotune estimate: 219 on
#                     80 GiB; ~1,400 with checkpointing, ~790 on 80). --max-batch 256 ends the search
#                     at its first probe (the estimate's ~380 lies above it) and keeps the probes
#                     at ~8 s and the trial's drain to 4 x 256 samples (~10 s; 4 x 380 would take 15,
#                     4 x 1,400 a minute): overhead 15, 3 probes ~25, trial ~20, diagnosis ~15
#   (pack)         5  summary.txt and gpu-check.tar.gz again after each step (~1 s each)
#
# Each step may run until its deadline, the sum of the budgets so far: a step that ends early
# leaves its time to the next; one that reaches its deadline is stopped (autotune records its run
# as failed and keeps its probes' rows), marked "timed out", and the check exits 1; the rest still
# run. Not in the first call, as they do not fit beside the runs: the gpu tests (tests/gpu and the
# gpu test of the synthetic batches: ~10 probe children, ~60 s, and the promise test: a real
# search, throughput point and soak of the cut-down ACT at 2 GiB, then 50 uncapped steps in a fresh
# process, ~80 s: 150 s), the search benchmark on CUDA (at a 2 GiB budget, its strategies' union of
# probes, 100 s) and the estimate's accuracy on CUDA (act at 96x128, 6 probes, 90 s): run them as
# the second call, GPU_CHECK_STEPS="tests bench estimate" (355 s with its set-up). GPU_CHECK_STEPS also reruns any steps alone; GPU_CHECK_RUN_FLAGS adds
# flags to every run.
#
# Evidence, after every step: results/reference/<gpu-name>/ holds environment.txt, summary.txt (each
# step's status, figures read from the profile it wrote or, failing that, its probe rows, and its
# time), logs/<step>.log, and each run's own results folder <step>/ (profiles/, batch_probes.csv,
# worker_trials.csv, runs.csv, plots/; autotune appends each probe's row as the probe ends); and,
# where $OUT is set (the device tool), $OUT/summary.txt and $OUT/gpu-check.tar.gz, packed again
# after each step. Unpack that in the repository's root (tar xzf gpu-check.tar.gz) and commit it,
# with the figures from summary.txt.
#
# Python: $PYTHON, else .venv/bin/python, else python3. On a machine without optuna or PyAV (the lent
# GPU machines), bring their wheels in .whl/: `bash scripts/gpu-wheels.sh` builds that folder on a
# machine with the package index. The wheels the GPU's Python lacks are installed into a temporary
# folder with pip --no-index; without them the check says so in one line (also in $OUT/summary.txt)
# and exits 2.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
PLAN_ONLY=${GPU_CHECK_PLAN:-0}
STEPS=${GPU_CHECK_STEPS:-setup act-bf16-24g act-fp32-24g smolvla-24g act-card}
TOTAL=${GPU_CHECK_TOTAL_S:-360}
PACK_S=5      # left at the end for the last packing
GRACE_S=5     # after SIGINT, a step has this long to record its run before it is killed
PROBE_TIMEOUT=${GPU_CHECK_PROBE_TIMEOUT_S:-120}
case " $STEPS " in *" setup "*) ;; *) STEPS="setup $STEPS" ;; esac # every call needs its set-up
# shellcheck disable=SC2206
RUN=(--trials 1 --throughput-points 1 --probe-timeout "$PROBE_TIMEOUT" ${GPU_CHECK_RUN_FLAGS:-})

started=$(date +%s)
deadline=$started
failed=0
if [ "$PLAN_ONLY" = 1 ]; then
  GPU="<gpu>"
  WORK="<tmp>"
  planned=0
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/autotune-gpu-check.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT # the wheels' install and the shared synthetic datasets
fi
DEST="results/reference/${GPU:-}"
LOG=/dev/null

say() { echo "[gpu-check] $*" | tee -a "$LOG" >&2; }

fail_early() { # one line, on stderr and in $OUT/summary.txt, then exit 2
  say "$1"
  if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then echo "gpu-check: $1" >>"$OUT/summary.txt"; fi
  exit 2
}

pack() { # the evidence so far, into $OUT (each step's results folder, the logs, the summary)
  [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ] || return 0
  local bench=()
  for csv in benchmarks/results/search_strategies_cuda.csv benchmarks/results/estimate_accuracy_cuda.csv; do
    [ -e "$csv" ] && bench+=("$csv")
  done
  tar czf "$OUT/gpu-check.tar.gz.partial" --exclude='*/datasets' --exclude='*/studies' \
    --exclude='.autotune-*.lock' --exclude='.write-test-*' "$DEST" ${bench[@]+"${bench[@]}"} 2>>"$LOG" &&
    mv "$OUT/gpu-check.tar.gz.partial" "$OUT/gpu-check.tar.gz"
  cp "$DEST/summary.txt" "$OUT/summary.txt"
}

figures() { # figures <results folder>: one line from the profile(s) the run wrote, else its rows
  "$PYTHON" - "$1" <<'PY' 2>>"$LOG" || true
import csv
import json
import statistics
import sys
from pathlib import Path

folder = Path(sys.argv[1])
parts = []


def rows(name):
    path = folder / name
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


for path in sorted(folder.glob("profiles/*.json")):
    p = json.loads(path.read_text())
    parts.append(
        f"{p['policy']} {p['precision']}, checkpointing {'on' if p['grad_checkpointing'] else 'off'}: "
        f"max batch {p['max_batch_size']} ({'certified' if p['certified'] else 'capped'}), batch "
        f"{p['batch_size']}, {p['samples_per_s']:.1f} samples/s with {p['num_workers']} workers "
        f"(updt_s {p['updt_s']:.3f}, data_s {p['data_s']:.3f}), budget {p['budget_bytes'] / 2**30:.1f} GiB, "
        f"peak {p['peak_reserved_bytes'] / 2**30:.1f} GiB"
    )
    beside = p.get("beside")
    if beside:
        parts.append(
            f"beside {beside['precision']}, checkpointing {'on' if beside['grad_checkpointing'] else 'off'}: "
            f"max batch {beside['max_batch_size']}, batch {beside['batch_size']}, "
            f"{beside['samples_per_s']:.1f} samples/s"
        )
    if p.get("input_bound"):
        parts.append("input-bound")
probes = rows("batch_probes.csv")
if probes:
    ok = [int(r["batch_size"]) for r in probes if r["status"] == "ok"]
    oom = [int(r["batch_size"]) for r in probes if r["status"] == "oom"]
    other = [r for r in probes if r["status"] not in ("ok", "oom")]
    walls = [float(r["wall_s"]) for r in probes if r["wall_s"]]
    soaks = [r for r in probes if r["phase"] == "soak" and r["status"] == "ok"]
    text = f"{len(probes)} probes: largest fitting {max(ok) if ok else 'none'}"
    text += f", smallest out of memory {min(oom)}" if oom else ""
    text += f", {len(other)} {other[-1]['status']}" if other else ""
    if soaks:
        text += f", soak {soaks[-1]['batch_size']} at {float(soaks[-1]['samples_per_s']):.1f} samples/s"
    if walls:
        text += f", probe wall {min(walls):.1f}-{max(walls):.1f} s (median {statistics.median(walls):.1f})"
    parts.append(text)
trials = rows("worker_trials.csv")
if trials:
    t = trials[-1]
    parts.append(
        f"{len(trials)} trial(s): {t['num_workers']} workers {t['status']}, {float(t['samples_per_s'] or 0):.1f} "
        f"samples/s, data_s {float(t['data_s'] or 0):.3f}, {float(t['wall_s'] or 0):.0f} s"
    )
for run in rows("runs.csv"):
    if run["status"] == "failed":
        parts.append(f"run failed: {run['message'][:200]}")
print("; ".join(parts))
PY
}

plan() { # plan NAME SECONDS COMMAND...: print it (the dry run), or run it as the next step
  local name=$1 budget=$2
  shift 2
  case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
  if [ "$PLAN_ONLY" = 1 ]; then
    local text="$*"
    [ "$1" != setup ] || text=$SETUP_TEXT # the set-up is this script's own function: what it runs
    printf '%-13s %4d s: %s\n' "$name" "$budget" "$text"
    planned=$((planned + budget))
    return 0
  fi
  step "$name" "$budget" "$@"
}

step() { # step NAME SECONDS COMMAND...: run it until its deadline; record status, figures and time
  local name=$1 budget=$2 t0 rc status limit end
  shift 2
  deadline=$((deadline + budget))
  end=$((started + TOTAL - PACK_S))
  [ "$deadline" -le "$end" ] || deadline=$end
  limit=$((deadline - $(date +%s) - GRACE_S))
  if [ "$limit" -lt 10 ] && ! declare -F "$1" >/dev/null; then # the set-up always runs
    echo "$name: skipped (the check's $TOTAL s were used up)" | tee -a "$DEST/summary.txt" "$LOG" >&2
    failed=1
    pack
    return 0
  fi
  say "step $name (until +$((deadline - started)) s, limit ${limit} s): $*"
  case " $* " in *" $DEST/$name "*) fresh_results "$name" ;; esac
  t0=$(date +%s)
  if declare -F "$1" >/dev/null; then # the set-up, a function of this script: short, not stopped
    "$@" 2>&1 | tee "$DEST/logs/$name.log" >&2
  else
    timeout --signal=INT --kill-after="$GRACE_S" "$limit" "$@" 2>&1 | tee "$DEST/logs/$name.log" >&2
  fi
  rc=${PIPESTATUS[0]}
  cat "$DEST/logs/$name.log" >>"$LOG"
  if [ "$name" = setup ] && [ "$rc" != 0 ]; then
    pack
    fail_early "the set-up failed (exit $rc): the wheels of .whl/ did not install, or torch does not reach the GPU, or a package autotune needs does not import (see $DEST/logs/setup.log)"
  fi
  case $rc in 0) status=ok ;; 124 | 137) status="timed out" ;; *) status="failed (exit $rc)" ;; esac
  [ "$rc" = 0 ] || failed=1
  local line="$name: $status after $(($(date +%s) - t0)) s"
  local found=""
  if [ -d "$DEST/$name" ]; then
    found=$(figures "$DEST/$name")
  elif [ "$name" != setup ]; then # the tests' and the benchmarks' closing line
    found=$(grep -E '(passed|failed|error|summary:|worst)' "$DEST/logs/$name.log" | tail -1)
  fi
  [ -z "$found" ] || line="$line; $found"
  echo "$line" | tee -a "$DEST/summary.txt" "$LOG" >&2
  pack
}

fresh_results() { # fresh_results NAME: a run's own results folder, its datasets shared with the others
  rm -rf "${DEST:?}/$1"
  mkdir -p "$DEST/$1" "$WORK/datasets"
  ln -s "$WORK/datasets" "$DEST/$1/datasets"
}

wheels() { # the carried wheels this Python lacks (or has at another version)
  "$PYTHON" - .whl/*.whl <<'PY'
import sys
from importlib import metadata
from pathlib import Path

for wheel in sys.argv[1:]:
    name, version = Path(wheel).name.split("-")[:2]
    try:
        if metadata.version(name) == version:
            continue
    except metadata.PackageNotFoundError:
        pass
    print(wheel)
PY
}

SETUP_TEXT="$PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
--target $WORK/site <the wheels of .whl/ that $PYTHON lacks>; nvidia-smi; $PYTHON -c 'import torch, \
torchvision; torch.ones(1, device=\"cuda\")'; $PYTHON -c 'import autotune.cli, optuna, av, pynvml, \
matplotlib, pyarrow'"
setup() { # the wheels, the environment, a bare probe's fixed cost, and what autotune imports
  if ! "$PYTHON" -c 'import optuna, av' 2>/dev/null; then
    local missing
    mapfile -t missing < <(wheels)
    say "installing ${#missing[@]} carried wheel(s) from .whl/: ${missing[*]##*/}"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$WORK/site" "${missing[@]}" || return 2
  fi
  {
    nvidia-smi 2>&1 || true
    "$PYTHON" -c 'import torch, optuna, av, sys; print("python", sys.version.split()[0]); print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version()); print("archs", torch.cuda.get_arch_list()); print("optuna", optuna.__version__, "av", av.__version__)'
    echo "PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-}"
  } >"$DEST/environment.txt" 2>&1
  local t0 t1 t2
  t0=$(date +%s%N)
  "$PYTHON" -c 'import torch, torchvision' || return 1
  t1=$(date +%s%N)
  "$PYTHON" -c 'import torch, torchvision; torch.ones(1, device="cuda").sum().item(); torch.backends.cudnn.version()' || return 1
  t2=$(date +%s%N)
  echo "setup: a bare probe's fixed cost: Python with import torch, torchvision $(seconds "$t0" "$t1") s; with the CUDA context $(seconds "$t1" "$t2") s" |
    tee -a "$DEST/summary.txt" >&2
  "$PYTHON" -c 'import autotune.cli, optuna, av, pynvml, torch, matplotlib, pyarrow' || return 3
}

seconds() { # seconds T0_NS T1_NS: the time between, to a tenth of a second
  local ms=$((($2 - $1) / 1000000))
  printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100))
}

# The plan. Every command runs in the repository's root; each run writes its own results folder.
steps() {
  plan setup 15 setup
  plan act-bf16-24g 95 "$PYTHON" -m autotune run --policy act --precision bf16 --trainer-only \
    --memory-limit 24GiB "${RUN[@]}" --results "$DEST/act-bf16-24g"
  plan act-fp32-24g 70 "$PYTHON" -m autotune run --policy act --precision fp32 --trainer-only \
    --memory-limit 24GiB "${RUN[@]}" --results "$DEST/act-fp32-24g"
  plan smolvla-24g 95 "$PYTHON" -m autotune run --policy smolvla --trainer-only \
    --memory-limit 24GiB "${RUN[@]}" --results "$DEST/smolvla-24g"
  plan act-card 80 "$PYTHON" -m autotune run --policy act --trainer-only --max-batch 256 \
    "${RUN[@]}" --results "$DEST/act-card"
  plan tests 150 "$PYTHON" -m pytest -q -rs -m gpu tests/gpu tests/probes/test_synthetic_batch.py \
    -p no:cacheprovider
  plan bench 100 "$PYTHON" benchmarks/search_strategies.py --device cuda --policy act --budgets 2GiB \
    --quick --probe-timeout "$PROBE_TIMEOUT" --out benchmarks/results/search_strategies_cuda.csv
  plan estimate 90 "$PYTHON" benchmarks/estimate_accuracy.py --device cuda --only act-default \
    --probe-timeout "$PROBE_TIMEOUT" --out benchmarks/results/estimate_accuracy_cuda.csv
}

if [ "$PLAN_ONLY" = 1 ]; then
  steps
  echo "plan: $planned s in total (held to $TOTAL s)"
  exit 0
fi

# What the check needs before its first step: the wheels, a GPU, a place for the evidence.
if ! "$PYTHON" -c 'import optuna, av' 2>/dev/null && ! compgen -G ".whl/*.whl" >/dev/null; then
  fail_early "optuna or av is missing in $PYTHON and there is no .whl/ folder: run bash scripts/gpu-wheels.sh on a machine with the package index and carry .whl"
fi
export PYTHONPATH="$WORK/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
GPU=$("$PYTHON" - 2>/dev/null <<'PY'
import re
import pynvml
pynvml.nvmlInit()
name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
name = name.decode() if isinstance(name, bytes) else name
print(re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"))
PY
)
[ -n "$GPU" ] || fail_early "NVML sees no GPU (nvidia-ml-py in $PYTHON, a driver, a visible device): nothing to check here"
DEST="results/reference/$GPU"
mkdir -p "$DEST/logs"
LOG="$DEST/gpu-check.log"
touch "$DEST/summary.txt"
first=$(($(wc -l <"$DEST/summary.txt") + 1)) # this call's lines start here
echo "check of $(date -u +%FT%TZ): steps $STEPS, held to $TOTAL s" | tee -a "$DEST/summary.txt" "$LOG" >&2
say "GPU $GPU; writing $DEST"

steps

echo "total: $(($(date +%s) - started)) s" | tee -a "$DEST/summary.txt" "$LOG" >&2
find "$DEST" -maxdepth 2 -name datasets -type l -delete # links into the temporary folder
pack
[ -n "${OUT:-}" ] && say "wrote $OUT/gpu-check.tar.gz: unpack it in the repository's root and commit it"
tail -n +"$first" "$DEST/summary.txt" # the result, on stdout
exit $failed
