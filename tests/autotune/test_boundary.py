"""The tuner talks to probes only through the protocol and the catalogue, and never loads torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {"probes.protocol", "probes.catalogue"}


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names] if node.module == "probes" else []
            found.update(names or [node.module])
    return found


def test_the_tuner_imports_only_the_protocol_and_the_catalogue_from_probes() -> None:
    reaching = {
        str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path) if m.split(".")[0] == "probes")
        for path in sorted((ROOT / "autotune").rglob("*.py"))
    }
    offending = {f: [m for m in mods if m not in ALLOWED] for f, mods in reaching.items()}
    assert not any(offending.values()), offending
    assert any(reaching.values())  # the check looks at real imports


def test_importing_every_tuner_module_loads_neither_torch_nor_model_code() -> None:
    modules = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for path in (ROOT / "autotune").rglob("*.py")
        if path.name != "__main__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'probes.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = eval(out.stdout)  # a printed list of module names
    assert not [m for m in loaded if m == "torch" or m.startswith("torch.")], loaded
    model_code = [
        m
        for m in loaded
        if m.startswith("probes.")
        and not m.startswith(("probes.protocol", "probes.catalogue", "probes.policies"))
    ]
    assert not model_code, loaded
    assert not [m for m in loaded if m.endswith((".model", ".layers"))], loaded
