"""autotune's rebuilt models against LeRobot's own code, probe for probe, in the same environment.

Run with the Python of a LeRobot environment that has autotune installed (`bash scripts/setup.sh
--test` makes `.lerobot/`); each batch probe runs in a fresh child, once with the rebuilt model on
synthetic tensors of the data's shapes and once through the LeRobot backend (LeRobot's policy,
pre-processor, optimizer and ``update_policy``, on real samples of the synthetic dataset), at the
same batch, precision and torch. Compared: the parameter counts (which must be equal), the peak
memory (CPU: resident-set growth; the LeRobot backend's baseline is taken after its imports, so it
also holds the dataset, as ``lerobot-train``'s does) and the step time.

    .lerobot/bin/python benchmarks/backend_agreement.py          # ~3 min on 2 CPU cores

Writes ``benchmarks/results/backend_agreement_cpu.csv`` (``--out``) and prints one line per row.
Run it on an idle machine: step times are only comparable when nothing else runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autotune.outputs.results import replace_csv  # noqa: E402
from autotune.run.datasets import read_dataset  # noqa: E402
from autotune.run.probe_client import run_probe  # noqa: E402
from autotune.units import format_bytes  # noqa: E402
from probes import catalogue  # noqa: E402
from probes.protocol import ModelSpec, ProbeRequest, SyntheticRequest  # noqa: E402

SMALL_ACT = catalogue.cut_down("act", "quick")
SCENARIOS = {
    # name: (policy, overrides, image size, batch sizes)
    "act_cut_down_48x64": ("act", SMALL_ACT, (48, 64), (8, 32)),
    "act_default_96x128": ("act", {}, (96, 128), (4, 8)),
}
COLUMNS = [
    "scenario",
    "batch_size",
    "rebuilt_params",
    "lerobot_params",
    "params_equal",
    "rebuilt_peak_bytes",
    "lerobot_peak_bytes",
    "peak_ratio",  # lerobot / rebuilt
    "rebuilt_step_s",
    "lerobot_step_s",
    "step_ratio",  # lerobot / rebuilt
    "torch_version",
    "lerobot_version",
]
BUDGET = 8 * 1024**3  # measured, not enforced: far above what these sizes need


def probe(spec: ModelSpec, batch_size: int, root: str) -> dict:
    request = ProbeRequest(
        kind="batch", model=spec, device="cpu", precision="fp32", batch_size=batch_size,
        memory_limit_bytes=BUDGET, warmup_steps=1, measure_steps=3,
        dataset_root=root if spec.backend == "lerobot" else None,
    )  # fmt: skip
    result = run_probe(request, 900)
    if not result.fits:
        raise SystemExit(f"{spec.backend} probe at batch {batch_size} failed: {result.message}")
    return {"params": result.trainable_params, "peak": result.peak_reserved_bytes, "step": result.step_time_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "backend_agreement_cpu.csv"
    )
    args = parser.parse_args(argv)
    if not catalogue.lerobot_importable():
        print(
            "LeRobot cannot be imported here: run this with a LeRobot environment's Python", file=sys.stderr
        )
        return 2
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="backend-agreement-") as tmp:
        for name, (policy, overrides, size, batches) in SCENARIOS.items():
            synthetic = SyntheticRequest(
                root=str(Path(tmp) / f"data-{size[0]}x{size[1]}"), cameras=2, image_size=size, fps=30,
                episodes=6, episode_length=100, state_dim=6, action_dim=6,
            )  # fmt: skip
            root = read_dataset(None, synthetic, 900).root
            for batch in batches:
                common = {"policy": policy, "cameras": 2, "image_size": size, "state_dim": 6, "action_dim": 6}
                rebuilt = probe(
                    ModelSpec(**common, gradient_checkpointing=False, overrides=overrides), batch, root
                )
                lerobot = probe(
                    ModelSpec(**common, gradient_checkpointing=False, overrides=overrides, backend="lerobot"),
                    batch,
                    root,
                )
                row = {
                    "scenario": name,
                    "batch_size": batch,
                    "rebuilt_params": rebuilt["params"],
                    "lerobot_params": lerobot["params"],
                    "params_equal": rebuilt["params"] == lerobot["params"],
                    "rebuilt_peak_bytes": rebuilt["peak"],
                    "lerobot_peak_bytes": lerobot["peak"],
                    "peak_ratio": round(lerobot["peak"] / rebuilt["peak"], 4),
                    "rebuilt_step_s": round(rebuilt["step"], 4),
                    "lerobot_step_s": round(lerobot["step"], 4),
                    "step_ratio": round(lerobot["step"] / rebuilt["step"], 4),
                    "torch_version": torch.__version__,
                    "lerobot_version": catalogue.lerobot_installed_version(),
                }
                rows.append(row)
                print(
                    f"{name} batch {batch}: params {rebuilt['params']:,} vs {lerobot['params']:,}; peak "
                    f"{format_bytes(rebuilt['peak'])} rebuilt vs {format_bytes(lerobot['peak'])} lerobot "
                    f"({row['peak_ratio']:.2f}x); step {rebuilt['step']:.3f} s vs {lerobot['step']:.3f} s "
                    f"({row['step_ratio']:.2f}x)"
                )
    replace_csv(args.out, COLUMNS, rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
