#!/usr/bin/env bash
# A real LeRobot release in its own environment, .lerobot/ (its pins differ from autotune's: it
# brings its own torch), with autotune installed into it as a LeRobot user installs it: for the
# tests that run autotune's command in the real lerobot-train and measure with LeRobot's own code.
# Idempotent: a second run only checks. LEROBOT_VERSION picks another release.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="${LEROBOT_VERSION:-0.6.1}"
DEST=.lerobot
EXTRAS="training,diffusion"  # diffusion: the second policy the tests tune through LeRobot's own code
# shellcheck source=scripts/install.sh
source scripts/install.sh
version_of() { "$DEST/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true; }

if [ ! -x "$DEST/bin/lerobot-train" ] || [ "$(version_of lerobot)" != "$VERSION" ]; then
  # LeRobot 0.5 and newer need Python 3.12 or newer.
  PY=""
  for candidate in python3.12 python3.13 "${HOME}"/.pyenv/versions/3.12*/bin/python "${HOME}"/.pyenv/versions/3.13*/bin/python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      PY="$candidate"; break
    fi
  done
  if [ -z "$PY" ]; then
    echo "[setup] error: lerobot $VERSION needs Python 3.12 or newer; install one (e.g. pyenv install 3.12)" >&2
    exit 2
  fi
  echo "[setup] installing lerobot[$EXTRAS]==$VERSION into $DEST with $("$PY" --version) (about 6 GB with its CUDA libraries, once)" >&2
  rm -rf "$DEST"
  "$PY" -m venv "$DEST"
  install_into "$DEST/bin/python" "lerobot[$EXTRAS]==$VERSION"
fi
TORCH="$(version_of torch)"
if ! (cd / && "$OLDPWD/$DEST/bin/python" -c 'import autotune, diffusers') >/dev/null 2>&1; then
  # autotune into the LeRobot environment, the way the README tells LeRobot users: its torch and
  # its pins must stay as they are (checked below).
  echo "[setup] installing autotune into $DEST" >&2
  install_into "$DEST/bin/python" "lerobot[$EXTRAS]==$VERSION" -e .
fi
if [ "$(version_of torch)" != "$TORCH" ]; then
  echo "[setup] error: installing autotune changed LeRobot's torch ($TORCH -> $(version_of torch))" >&2
  exit 1
fi
# LeRobot decodes with torchcodec where it loads (FFmpeg's shared libraries), else with PyAV; the
# tests measure and train with torchcodec, so it must load here.
if ! err=$("$DEST/bin/python" -c 'import torchcodec' 2>&1); then
  echo "[setup] error: LeRobot's torchcodec $(version_of torchcodec) cannot load in $DEST ($(printf '%s' "$err" | grep -m1 -E 'Error|error' || true)); install FFmpeg's shared libraries (Debian 12: libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8)" >&2
  exit 2
fi
echo "[setup] ready: lerobot $(version_of lerobot) with torch $TORCH, torchcodec $(version_of torchcodec) and autotune $(version_of autotune) in $DEST" >&2
