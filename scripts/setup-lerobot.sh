#!/usr/bin/env bash
# A real LeRobot release in its own environment, .lerobot/ (its pins differ from autotune's: it
# brings its own torch), for the tests that run autotune's command in the real lerobot-train.
# Idempotent: a second run only checks the version. LEROBOT_VERSION picks another release.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="${LEROBOT_VERSION:-0.6.1}"
DEST=.lerobot
if [ -x "$DEST/bin/lerobot-train" ] && \
   [ "$("$DEST/bin/python" -c 'import importlib.metadata as m; print(m.version("lerobot"))' 2>/dev/null)" = "$VERSION" ]; then
  echo "[setup] lerobot $VERSION ready in $DEST" >&2
  exit 0
fi
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
echo "[setup] installing lerobot[training]==$VERSION into $DEST with $("$PY" --version) (about 2 GB, 2 minutes)" >&2
rm -rf "$DEST"
"$PY" -m venv "$DEST"
"$DEST/bin/python" -m pip install --quiet --disable-pip-version-check "lerobot[training]==$VERSION" \
  2> >(grep -v '^WARNING: Location' >&2)
"$DEST/bin/python" -c 'import importlib.metadata as m; print("[setup] ready: lerobot", m.version("lerobot"), "with torch", m.version("torch"))' >&2
