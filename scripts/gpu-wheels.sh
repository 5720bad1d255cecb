#!/usr/bin/env bash
# gpu-wheels.sh: build .whl/, the wheels scripts/gpu-check.sh installs on a GPU machine that cannot
# reach a package index (the lent H200: Python 3.12, manylinux x86_64, torch 2.11, pandas,
# nvidia-ml-py, matplotlib, pyarrow, pytest, but no optuna and no PyAV). Run it once, in the
# repository's root, on a machine that reaches the index:
#
#   bash scripts/gpu-wheels.sh        # then: the device tool's run with carry [".whl"]
#
# It downloads, for CPython 3.12 on manylinux x86_64 and binary wheels only, the packages below at
# the versions scripts/setup.sh installs (the versions the tests run with here), checks that every
# requirement of every wheel is either one of them or a package the GPU image already holds, and
# prints what it made. .whl/ is gitignored; it travels with the working tree (64 MiB in all), so it
# holds only what the image lacks: about 40 MiB, most of it PyAV's wheel (FFmpeg with SVT-AV1).
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=${GPU_WHEELS_DIR:-.whl}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# The pins: what autotune needs and the GPU image lacks (optuna and its database layer; PyAV).
PINS=(optuna==5.1.0 alembic==1.20.1 SQLAlchemy==2.1.9 Mako==1.4.3 colorlog==6.12.0 av==18.1.0)
# What the GPU image holds already (its package list): the wheels' requirements may name these.
IMAGE_HAS="numpy packaging pyyaml tqdm typing-extensions markupsafe"

"$PYTHON" -m pip --version >/dev/null 2>&1 || { echo "gpu-wheels: $PYTHON has no pip; pass PYTHON=..." >&2; exit 2; }
rm -rf "$DEST.partial"
mkdir -p "$DEST.partial"
echo "gpu-wheels: downloading ${PINS[*]} for CPython 3.12, manylinux x86_64" >&2
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  --platform any -d "$DEST.partial" "${PINS[@]}" \
  || { echo "gpu-wheels: pip download failed (is the package index reachable?); $DEST is unchanged" >&2; rm -rf "$DEST.partial"; exit 2; }

# Every pin once, every requirement met, and the versions the tests here ran with.
"$PYTHON" - "$DEST.partial" "$IMAGE_HAS" "${PINS[@]}" <<'PY' || { rm -rf "$DEST.partial"; exit 2; }
import re
import sys
import zipfile
from importlib import metadata
from pathlib import Path

try:
    from packaging.markers import Marker
    from packaging.requirements import Requirement
except ImportError:  # pip vendors it
    from pip._vendor.packaging.markers import Marker
    from pip._vendor.packaging.requirements import Requirement

folder, image_has, pins = Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3:]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


pinned = {norm(p.split("==")[0]): p.split("==")[1] for p in pins}
target = {"python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
          "platform_python_implementation": "CPython", "sys_platform": "linux", "os_name": "posix",
          "platform_system": "Linux", "platform_machine": "x86_64", "extra": ""}
wheels = sorted(folder.glob("*.whl"))
found: dict[str, str] = {}
problems = []
for wheel in wheels:
    name, version = wheel.name.split("-")[:2]
    found[norm(name)] = version
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is not None and not Marker(str(req.marker)).evaluate(target):
            continue  # an extra, or another platform
        if norm(req.name) not in pinned and norm(req.name) not in image_has:
            problems.append(f"{wheel.name} needs {req} (neither pinned here nor on the GPU image)")
missing = sorted(set(pinned) - set(found))
if missing:
    problems.append("no wheel for " + ", ".join(missing))
if problems:
    print("gpu-wheels: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1)
for name, version in sorted(pinned.items()):
    try:
        here = metadata.version(name)
    except metadata.PackageNotFoundError:
        continue
    if here != version:
        print(f"gpu-wheels: note: this Python has {name} {here}, the wheels are {version}", file=sys.stderr)
total = sum(w.stat().st_size for w in wheels)
for wheel in wheels:
    print(f"{wheel.stat().st_size / 2**20:6.1f} MiB  {wheel.name}")
print(f"{total / 2**20:6.1f} MiB  in {len(wheels)} wheels")
PY
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
echo "gpu-wheels: wrote $DEST/; carry it to the GPU machine and run bash scripts/gpu-check.sh" >&2
