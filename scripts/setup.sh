#!/usr/bin/env bash
# Set-up for autotune: a virtual environment in .venv with autotune and its dependencies
# (with --test, also a real LeRobot release for the tests, in .lerobot/).
# Idempotent: a second run only checks what is installed. Torch comes from constraints.txt:
# a build that runs on the GPU where one is present and on the CPU otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
# --test: also the LeRobot release the tests verify against, in its own environment (.lerobot/),
# and PostgreSQL's driver for the fleet's tests (their server is the distribution's PostgreSQL).
extras="dev"
if [ "${1:-}" = "--test" ]; then
  bash scripts/setup-lerobot.sh
  extras="dev,fleet"
  if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "[setup] installing the distribution's PostgreSQL server (the fleet's tests start one)" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
      echo "[setup] error: the fleet's tests need a PostgreSQL server's initdb; install your distribution's postgresql package" >&2
      exit 2
    fi
  fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version 2>&1)" >&2
  "$PYTHON" -m venv .venv
fi

extra=()
if command -v nvidia-smi >/dev/null 2>&1; then
  driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1 || true)
  echo "[setup] NVIDIA driver ${driver:-unknown}" >&2
  # The pinned torch wheel is built for CUDA 13, which needs driver 580 or newer. For an older
  # driver, point AUTOTUNE_TORCH_INDEX at a PyTorch wheel index for your CUDA version.
  if [ -n "${driver}" ] && [ "${driver%%.*}" -lt 580 ] && [ -z "${AUTOTUNE_TORCH_INDEX:-}" ]; then
    echo "[setup] warning: driver ${driver} is older than CUDA 13 needs (580); torch will not see" \
         "the GPU. Set AUTOTUNE_TORCH_INDEX to a PyTorch wheel index matching your CUDA and re-run." >&2
  fi
fi
if [ -n "${AUTOTUNE_TORCH_INDEX:-}" ]; then
  extra+=(--extra-index-url "$AUTOTUNE_TORCH_INDEX")
fi

echo "[setup] installing autotune and its dependencies into .venv" >&2
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
  -c constraints.txt "${extra[@]}" -e ".[${extras}]" 2> >(grep -v '^WARNING: Location' >&2)
.venv/bin/python - <<'PY'
import sys
import torch, torchvision, av, optuna, pandas, pynvml  # noqa: F401
gpu = "CUDA " + torch.version.cuda if torch.version.cuda else "CPU-only"
print(f"[setup] ready: torch {torch.__version__} ({gpu} build), torchvision {torchvision.__version__}, "
      f"av {av.__version__}, optuna {optuna.__version__}", file=sys.stderr)
PY
