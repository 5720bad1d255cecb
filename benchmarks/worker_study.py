"""The DataLoader study against the alternatives, on the same machine and dataset.

Contenders, each a setting of ``num_workers`` and ``prefetch_factor`` fed into the real training
step at one batch size:

- ``autotune``: the study as ``autotune run`` runs it (one worker's decode rate and the step's
  time predict the workers needed, tried first; LeRobot's defaults always among the trials; TPE
  for the rest), with ``--trials`` trials;
- ``lerobot_default``: 4 workers, prefetch 4;
- ``rule_of_thumb``: ``min(cores / 2, 2 x batch, 16)`` workers, PyTorch's default prefetch 2;
- ``grid``: every ``num_workers`` in ``0..max(cores, 4)`` with every prefetch in ``1, 2, 4, 8``: the
  best possible, at the cost of every trial.

Every setting is measured once, by a real worker probe (a child process driving the DataLoader
into the training step), and the grid's measurements are what every contender is scored on: the
study's trials are looked up in the grid instead of being run again, and are counted as trials
used. So "within 3% of the grid's best" compares decisions, not two noisy measurements of one
setting.

    python benchmarks/worker_study.py                  # CPU: a cut-down ACT, 2 cameras at 96x128
    python benchmarks/worker_study.py --device cuda --image-size 480x640 --batch 64 --no-small

Writes a CSV (``--out``) and prints one line per contender, then whether the goal holds: the
tuned choice within 3% of the grid's best, with at most 40% of the grid's trials.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from autotune.machine.host import cpu_cores
from autotune.outputs.results import replace_csv
from autotune.run.probe_client import run_probe
from autotune.tuning.feed_model import FeedModel
from autotune.tuning.study import (
    LEROBOT_DEFAULT_PREFETCH,
    LEROBOT_DEFAULT_WORKERS,
    PREFETCH_CHOICES,
    run_study,
)
from autotune.units import parse_image_size
from probes.catalogue import cut_down
from probes.protocol import ModelSpec, ProbeRequest, ProbeResult
from probes.synthetic import write_synthetic_dataset

log = logging.getLogger("benchmarks.worker_study")

SMALL_ACT = cut_down("act", "cpu_second")
COLUMNS = [
    "contender",
    "num_workers",
    "prefetch_factor",
    "samples_per_s",
    "data_s",
    "updt_s",
    "trials_used",
    "grid_trials",
    "vs_grid_best",
    "device",
    "policy",
    "batch_size",
    "image_h",
    "image_w",
    "cameras",
    "cores",
    "load_1min",
]


@dataclass
class Setting:
    workers: int
    prefetch: int | None

    @property
    def key(self) -> tuple[int, int | None]:
        return (self.workers, self.prefetch if self.workers > 0 else None)


def grid_settings(max_workers: int) -> list[Setting]:
    settings = [Setting(0, None)]
    for workers in range(1, max_workers + 1):
        settings += [Setting(workers, p) for p in PREFETCH_CHOICES]
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default=None)
    parser.add_argument("--image-size", type=parse_image_size, default=(96, 128))
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--trials", type=int, default=6, help="the study's trials (default 6)")
    parser.add_argument("--measure-steps", type=int, default=5)
    parser.add_argument("--no-small", action="store_true", help="the full-size ACT, not the cut-down one")
    parser.add_argument(
        "--data", type=Path, default=Path("results/datasets"), help="where the dataset is written"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[bench] %(message)s", stream=sys.stderr)
    device_type = "cuda" if args.device.startswith("cuda") else "cpu"
    precision = args.precision or ("bf16" if device_type == "cuda" else "fp32")
    out = args.out or Path(f"benchmarks/results/worker_study_{device_type}.csv")
    h, w = args.image_size
    root = write_synthetic_dataset(
        args.data / f"synthetic-v3.0-{args.cameras}cam-{h}x{w}-30fps-12x150-s6a6",
        cameras=args.cameras, image_size=(h, w), fps=30, episodes=12, episode_length=150,
    )  # fmt: skip
    spec = ModelSpec("act", args.cameras, (h, w), 6, 6, True, {} if args.no_small else SMALL_ACT)
    cores = cpu_cores()
    max_workers = max(cores, LEROBOT_DEFAULT_WORKERS)

    def request(kind: str, **extra: object) -> ProbeRequest:
        return ProbeRequest(
            kind=kind,  # type: ignore[arg-type]
            model=spec,
            device=args.device,
            precision=precision,
            batch_size=args.batch,
            memory_limit_bytes=1 << 62,
            warmup_steps=1,
            measure_steps=args.measure_steps,
            dataset_root=str(root),
            drain_budget_s=60.0,
            **extra,  # type: ignore[arg-type]
        )

    grid: dict[tuple[int, int | None], ProbeResult] = {}
    started = time.perf_counter()
    for setting in grid_settings(max_workers):
        result = run_probe(
            request("workers", num_workers=setting.workers, prefetch_factor=setting.prefetch), 900
        )
        grid[setting.key] = result
        log.info(
            "grid %s: %s", setting.key,
            f"{result.samples_per_s:.2f} samples/s (data_s {result.data_s:.3f}, updt_s {result.updt_s:.3f})"
            if result.fits else f"{result.status}: {result.message}",
        )  # fmt: skip
    log.info("grid measured in %.0f s", time.perf_counter() - started)

    # autotune's study, as `autotune run` drives it, scored on the grid's measurements.
    decode = run_probe(request("decode"), 300)
    step = run_probe(request("batch"), 600)
    model = FeedModel(args.batch, decode.decode_s_per_sample, step.step_time_s, cores)
    guess = model.first_guess(cores)
    log.info(
        "one worker reads a sample in %.1f ms, the step takes %.3f s: first guess %d worker(s)",
        decode.decode_s_per_sample * 1000, step.step_time_s, guess,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        study = run_study(
            lambda workers, prefetch: grid[(workers, prefetch if workers > 0 else None)],
            storage_path=Path(tmp) / "study.db",
            study_name="bench",
            n_trials=args.trials,
            max_workers=cores,
            first_guesses=[(guess, 2)],
        )
    ok = {k: r for k, r in grid.items() if r.fits}
    best_key = max(ok, key=lambda k: ok[k].samples_per_s)
    best = ok[best_key].samples_per_s
    rule_workers = int(min(cores / 2, 2 * args.batch, 16))
    contenders = [
        ("autotune", (study.best.num_workers, study.best.prefetch_factor), len(study.trials)),
        ("lerobot_default", (LEROBOT_DEFAULT_WORKERS, LEROBOT_DEFAULT_PREFETCH), 1),
        ("rule_of_thumb", (rule_workers, 2 if rule_workers > 0 else None), 1),
        ("grid", best_key, len(grid)),
    ]
    load = os.getloadavg()[0]
    rows = []
    for name, key, used in contenders:
        result = grid[key]
        ratio = result.samples_per_s / best if result.fits else 0.0
        rows.append(
            {
                "contender": name,
                "num_workers": key[0],
                "prefetch_factor": key[1] if key[1] is not None else "",
                "samples_per_s": round(result.samples_per_s, 3),
                "data_s": round(result.data_s, 4),
                "updt_s": round(result.updt_s, 4),
                "trials_used": used,
                "grid_trials": len(grid),
                "vs_grid_best": round(ratio, 4),
                "device": args.device,
                "policy": "act" if args.no_small else "act(cut-down)",
                "batch_size": args.batch,
                "image_h": h,
                "image_w": w,
                "cameras": args.cameras,
                "cores": cores,
                "load_1min": round(load, 2),
            }
        )
        print(
            f"{name:16s} num_workers {key[0]:2d} prefetch {key[1] or '-':>2}  "
            f"{result.samples_per_s:8.2f} samples/s  data_s {result.data_s:.3f} s  updt_s {result.updt_s:.3f} s  "
            f"{ratio:6.1%} of the grid's best  trials {used}/{len(grid)}"
        )
    tuned = rows[0]
    within = tuned["vs_grid_best"] >= 0.97
    cheap = tuned["trials_used"] <= 0.4 * len(grid)
    print(
        f"goal: tuned within 3% of the grid's best: {'yes' if within else 'NO'} ({tuned['vs_grid_best']:.1%}); "
        f"at most 40% of the grid's trials: {'yes' if cheap else 'NO'} ({tuned['trials_used']}/{len(grid)})"
    )
    replace_csv(out, COLUMNS, rows)
    print(f"wrote {out}")
    return 0 if within and cheap else 1


if __name__ == "__main__":
    sys.exit(main())
