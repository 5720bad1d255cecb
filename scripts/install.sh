# Sourced by setup.sh and setup-lerobot.sh: `install_into PYTHON ARGS...` installs into PYTHON's
# environment what `PYTHON -m pip install ARGS...` would, with uv where it can be had (the same
# packages from the same indexes, about five times faster: torch and its CUDA libraries are
# several GB a venv), else with pip.
#
# uv reads none of pip's settings, so it is given the ones pip is configured with (pip.conf and
# PIP_* variables: index, extra indexes, find-links, constraints), and picks the best version
# across them as pip does. uv itself is installed with pip into .uv/ (no environment of yours
# gains a package); AUTOTUNE_INSTALLER=pip skips it.

UV=""
case "${AUTOTUNE_INSTALLER:-uv}" in
  uv | pip) ;;
  *) echo "[setup] error: AUTOTUNE_INSTALLER=${AUTOTUNE_INSTALLER} is not uv or pip" >&2; exit 2 ;;
esac

# Prints, one NAME=VALUE a line, the UV_* variables that give uv the indexes, links and
# constraints pip is configured with. They reach uv in its environment, never on its command line,
# where a token in an index URL would show in the process list.
uv_env_from_pip() {
  "${PYTHON:-python3}" - <<'PY'
import ast, subprocess, sys

listed = subprocess.run(
    [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
).stdout
names = {"index-url": ("UV_INDEX_URL", " "), "extra-index-url": ("UV_EXTRA_INDEX_URL", " "),
         "find-links": ("UV_FIND_LINKS", ","), "constraint": ("UV_CONSTRAINT", " ")}
values: dict[str, list[str]] = {}
for line in listed.splitlines():
    key, _, value = line.partition("=")
    name = key.rsplit(".", 1)[-1]
    if name not in names or not value:
        continue
    try:
        value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        continue
    items = values.setdefault(name, [])
    items.extend(item for item in value.split() if item not in items)
for name, items in values.items():
    variable, separator = names[name]
    print(f"{variable}={items[-1] if name == 'index-url' else separator.join(items)}")
PY
}

# Installs uv into .uv/ once (a second call, or a uv already there, costs nothing).
ensure_uv() {
  [ -n "$UV" ] && return 0
  [ "${AUTOTUNE_INSTALLER:-uv}" = pip ] && return 1  # checked when this file was sourced
  if [ ! -x .uv/bin/uv ]; then
    "${PYTHON:-python3}" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target .uv uv \
      2> >(grep -v '^WARNING: Location' >&2) >/dev/null || { rm -rf .uv; return 1; }
  fi
  [ -x .uv/bin/uv ] && UV="$PWD/.uv/bin/uv"
}

# Drops the installed shared libraries from the page cache. uv writes them in large pages of the
# page cache; until those are evicted, every process that maps torch's libraries shows about
# 115 MiB more resident memory (measured: 789 MiB against 673 MiB after importing torch and
# torchvision), and on the CPU the probes measure resident memory. Read back on demand, as pip's
# files are, they map as they will in a later training.
settle_page_cache() {
  "$1" - <<'PY'
import os, sysconfig
from pathlib import Path

for path in Path(sysconfig.get_paths()["purelib"]).rglob("*.so*"):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        continue
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass  # not a plain file: nothing cached to drop
    finally:
        os.close(fd)
PY
}

install_into() {
  local python="$1"
  shift
  if ensure_uv; then
    # --compile-bytecode: as pip does. Where Python may not write bytecode (PYTHONDONTWRITEBYTECODE,
    # as on CI, or python -B), every process would otherwise compile torch from source at start.
    if (
      while IFS= read -r setting; do export "${setting?}"; done < <(uv_env_from_pip)
      "$UV" pip install --quiet --compile-bytecode --python "$python" \
        --index-strategy unsafe-best-match "$@"
    ); then
      settle_page_cache "$python"
      return 0
    fi
    echo "[setup] uv could not install this (its lines above); installing with pip instead" >&2
  fi
  "$python" -m pip install --quiet --disable-pip-version-check "$@" \
    2> >(grep -v '^WARNING: Location' >&2)
}
