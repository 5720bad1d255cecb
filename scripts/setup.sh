#!/usr/bin/env bash
# Set-up for autotune: a virtual environment in .venv with autotune and its dependencies
# (with --test, also a real LeRobot release for the tests, in .lerobot/).
# Idempotent: a second run only checks what is installed. Torch comes from constraints.txt:
# a build that runs on the GPU where one is present and on the CPU otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
# --test: also the LeRobot release the tests verify against, in its own environment (.lerobot/),
# and PostgreSQL's driver for the fleet's tests (their server is the distribution's PostgreSQL).
test=0
extras="dev,video"
if [ "${1:-}" = "--test" ]; then
  test=1
  extras="dev,video,fleet"
fi
# shellcheck source=scripts/install.sh
source scripts/install.sh  # checks AUTOTUNE_INSTALLER before anything is installed

# FFmpeg's shared libraries: torchcodec, the decoder lerobot-train prefers, loads only with them
# (without them LeRobot falls back to PyAV, and autotune measures what the trainer will use).
FFMPEG_LIBS="libavcodec libavformat libavutil libswscale libswresample libavdevice libavfilter"
missing_ffmpeg() {
  local lib ldconfig found
  ldconfig="$(command -v ldconfig || echo /sbin/ldconfig)"  # /sbin is not on every user's PATH
  found="$("$ldconfig" -p 2>/dev/null || true)"  # read whole: grep -q on a pipe trips pipefail
  for lib in $FFMPEG_LIBS; do
    grep -q "${lib}\.so\.[0-9]" <<<"$found" || echo "$lib"
  done
}
# The distribution's package for each library (Debian 12: libavcodec59, ..., libavfilter8).
ffmpeg_packages() {
  local lib
  for lib in $FFMPEG_LIBS; do
    apt-cache pkgnames "$lib" 2>/dev/null | grep -E "^${lib}[0-9]+\$" | sort -V | tail -n1
  done
}
need_postgres=0
if [ "$test" = 1 ] && ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need_postgres=1
fi
missing="$(missing_ffmpeg | tr '\n' ' ')"
if [ "$need_postgres" = 1 ] || [ -n "${missing// /}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    packages=()
    [ "$need_postgres" = 1 ] && packages+=(postgresql)
    apt-get update -qq
    [ -n "${missing// /}" ] && mapfile -t -O "${#packages[@]}" packages < <(ffmpeg_packages)
    echo "[setup] installing the distribution's ${packages[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
  elif [ "$need_postgres" = 1 ]; then
    echo "[setup] error: the fleet's tests need a PostgreSQL server's initdb; install your distribution's postgresql package" >&2
    exit 2
  elif [ "$test" = 1 ]; then
    echo "[setup] error: the tests decode with torchcodec, which needs FFmpeg's shared libraries (${missing% }); install them (Debian 12: libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8)" >&2
    exit 2
  else
    echo "[setup] note: FFmpeg's shared libraries are missing (${missing% }): torchcodec cannot load, so lerobot-train and autotune decode with PyAV; install them (Debian 12: libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8) and re-run" >&2
  fi
fi

# LeRobot's environment installs beside autotune's (two installs at once: most of the time is
# unpacking wheels); its result is waited for before the end.
ensure_uv || true  # once, before the two installs below use it
lerobot_pid=""
if [ "$test" = 1 ]; then
  bash scripts/setup-lerobot.sh &
  lerobot_pid=$!
  trap '[ -n "$lerobot_pid" ] && kill "$lerobot_pid" 2>/dev/null || true' EXIT
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
  # The pinned torch wheel is built for CUDA 13, which needs driver 580.65 or newer (as LeRobot
  # 0.7's CUDA 13 builds do). For an older driver, point AUTOTUNE_TORCH_INDEX at a PyTorch wheel
  # index for your CUDA version.
  if [ -n "${driver}" ] && [ "$(printf '%s\n' 580.65 "$driver" | sort -V | head -n1)" != 580.65 ] \
     && [ -z "${AUTOTUNE_TORCH_INDEX:-}" ]; then
    echo "[setup] warning: driver ${driver} is older than CUDA 13 needs (580.65); torch will not see" \
         "the GPU. Set AUTOTUNE_TORCH_INDEX to a PyTorch wheel index matching your CUDA and re-run." >&2
  fi
fi
if [ -n "${AUTOTUNE_TORCH_INDEX:-}" ]; then
  extra+=(--extra-index-url "$AUTOTUNE_TORCH_INDEX")
fi

echo "[setup] installing autotune and its dependencies into .venv" >&2
install_into .venv/bin/python -c constraints.txt "${extra[@]}" -e ".[${extras}]"
.venv/bin/python - <<'PY'
import sys
import torch, torchvision, av, optuna, pandas, pynvml  # noqa: F401
gpu = "CUDA " + torch.version.cuda if torch.version.cuda else "CPU-only"
try:
    import torchcodec
    codec = f"torchcodec {torchcodec.__version__}"
except (ImportError, OSError, RuntimeError):
    codec = "torchcodec cannot load (PyAV decodes)"
print(f"[setup] ready: torch {torch.__version__} ({gpu} build), torchvision {torchvision.__version__}, "
      f"av {av.__version__}, {codec}, optuna {optuna.__version__}", file=sys.stderr)
PY
if [ -n "$lerobot_pid" ]; then
  if ! wait "$lerobot_pid"; then
    lerobot_pid=""
    echo "[setup] error: LeRobot's environment (.lerobot) was not set up; see its lines above" >&2
    exit 1
  fi
  lerobot_pid=""
fi
