"""autotune's measurements against the real lerobot-train's, at the recommended batch and at the maximum.

For each scenario it tunes with ``autotune run`` (the trainer's variant only), then runs the printed
command in the real lerobot-train (through ``autotune.trainer.verify.run_trainer``, as ``autotune verify``
does) at the recommended batch, a second time there (lerobot-train's own run-to-run spread), and at
the certified maximum. Compared per batch: peak memory (CPU: resident-set growth over start-up),
``updt_s``, ``data_s`` (with the preprocessing and device copy, as in LeRobot 0.4 to 0.6.1),
samples/s and the parameter count; and whether lerobot-train stays within the budget and within
the line the headroom promised.

    python benchmarks/trainer_agreement.py --lerobot .lerobot            # ~40 min on 2 CPU cores
    python benchmarks/trainer_agreement.py --lerobot .lerobot --quick    # the cut-down ACT only

Writes ``benchmarks/results/trainer_agreement_cpu.csv`` (``--out``) and prints one line per row.
Run it on an idle machine: the speeds are only comparable when nothing else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from autotune.outputs.results import replace_csv
from autotune.trainer.verify import run_trainer
from autotune.trainer.versions import find_trainer
from autotune.units import format_bytes, parse_size
from probes.catalogue import cut_down, set_pairs

ROOT = Path(__file__).resolve().parents[1]
STEPS = 8  # lerobot-train steps per run (the first, which starts the workers, is set apart)
SCENARIOS: dict[str, dict[str, Any]] = {
    # The case: a cut-down ACT, 2 cameras at 96x128, a 1 GiB budget.
    "act_cut_down@1GiB": {
        "budget": "1GiB",
        "overrides": set_pairs(cut_down("act", "quick")),
    },
    # ACT at LeRobot's defaults (ResNet-18, 51.6M parameters), cameras at 96x128, a 2 GiB budget.
    "act_default@2GiB": {"budget": "2GiB", "overrides": []},
}
COLUMNS = [
    "scenario",
    "batch",  # recommended, recommended_again or max
    "batch_size",
    "budget_bytes",
    "promised_bytes",
    "autotune_peak_bytes",
    "lerobot_peak_bytes",
    "peak_ratio",
    "within_budget",
    "within_promise",
    "autotune_updt_s",
    "lerobot_updt_s",
    "autotune_data_s",
    "lerobot_data_s",
    "autotune_samples_per_s",
    "lerobot_samples_per_s",
    "samples_ratio",
    "trainable_params",
    "learnable_params",
    "lerobot_workers_pss_bytes",
    "autotune_loader_pss_bytes",
    "lerobot_version",
    "load_1min",
]


def tune(scenario: dict[str, Any], results: Path, lerobot: str) -> dict[str, Any]:
    sets = [part for o in scenario["overrides"] for part in ("--set", o)]
    cmd = [
        sys.executable, "-m", "autotune", "run", "--policy", "act", "--device", "cpu", "--image-size", "96x128",
        "--memory-limit", scenario["budget"], "--trials", "3", "--trainer-only", "--lerobot", lerobot,
        "--results", str(results), *sets,
    ]  # fmt: skip
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads((results / "profiles" / "act.json").read_text())


def at_batch(profile: dict[str, Any], batch: int) -> dict[str, Any]:
    """The profile with its command set to ``batch``."""
    args = [
        a if not a.startswith("--batch_size=") else f"--batch_size={batch}"
        for a in profile["lerobot_train_args"]
    ]
    return {**profile, "lerobot_train_args": args, "batch_size": batch}


def row(
    name: str, which: str, profile: dict[str, Any], results: Path, run: Any, lerobot_version: str
) -> dict:
    budget = profile["conditions"]["memory_limit_bytes"]
    promised = (1 - profile["conditions"]["headroom"]) * budget
    batch = profile["batch_size"]
    probes = pd.read_csv(results / "batch_probes.csv")
    at = probes[(probes.batch_size == batch) & (probes.status == "ok")]
    ours_peak = int(at.peak_reserved_bytes.max()) if len(at) else None
    ours_updt = float(at.step_time_s.iloc[-1]) if len(at) else None
    recommended = which.startswith("recommended")
    ours_data = profile["data_s"] if recommended else None
    ours_samples = profile["samples_per_s"] if recommended else (batch / ours_updt if ours_updt else None)
    theirs = batch / (run.updt_s + run.data_s) if run.updt_s is not None and run.data_s is not None else None
    return {
        "scenario": name,
        "batch": which,
        "batch_size": batch,
        "budget_bytes": budget,
        "promised_bytes": int(promised),
        "autotune_peak_bytes": ours_peak,
        "lerobot_peak_bytes": run.peak_bytes,
        "peak_ratio": round(run.peak_bytes / ours_peak, 4) if ours_peak else None,
        "within_budget": run.exit_code == 0 and run.peak_bytes <= budget,
        "within_promise": run.exit_code == 0 and run.peak_bytes <= promised,
        "autotune_updt_s": ours_updt,
        "lerobot_updt_s": run.updt_s,
        "autotune_data_s": ours_data,
        "lerobot_data_s": run.data_s,
        "autotune_samples_per_s": round(ours_samples, 4) if ours_samples else None,
        "lerobot_samples_per_s": round(theirs, 4) if theirs else None,
        "samples_ratio": round(theirs / ours_samples, 4) if theirs and ours_samples else None,
        "trainable_params": profile.get("trainable_params"),
        "learnable_params": run.learnable_params,
        "lerobot_workers_pss_bytes": run.workers_pss_bytes,
        "autotune_loader_pss_bytes": None,
        "lerobot_version": lerobot_version,
        "load_1min": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lerobot", required=True, help="the lerobot-train, its Python or its environment")
    parser.add_argument("--quick", action="store_true", help="the cut-down ACT only")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "trainer_agreement_cpu.csv"
    )
    args = parser.parse_args(argv)
    trainer = find_trainer(args.lerobot)
    rows = []
    names = list(SCENARIOS)[:1] if args.quick else list(SCENARIOS)
    for name in names:
        parse_size(SCENARIOS[name]["budget"])
        with tempfile.TemporaryDirectory(prefix="trainer-agreement-") as tmp:
            results = Path(tmp) / "results"
            profile = tune(SCENARIOS[name], results, args.lerobot)
            trials = pd.read_csv(results / "worker_trials.csv")
            chosen = trials[(trials.num_workers == profile["num_workers"]) & (trials.status == "ok")]
            for which, batch in (
                ("recommended", profile["batch_size"]),
                ("recommended_again", profile["batch_size"]),
                ("max", profile["max_batch_size"]),
            ):
                target = at_batch(profile, batch)
                run = run_trainer(trainer, target, STEPS, timeout_s=3600)
                r = row(name, which, target, results, run, trainer.version)
                if which.startswith("recommended") and len(chosen):
                    r["autotune_loader_pss_bytes"] = int(chosen.loader_rss_bytes.iloc[-1])
                rows.append(r)
                print(
                    f"{name} {which} batch {batch}: peak {format_bytes(r['lerobot_peak_bytes'])} in lerobot-train "
                    f"against {format_bytes(r['autotune_peak_bytes'] or 0)} in autotune's probe "
                    f"(budget {format_bytes(r['budget_bytes'])}, within the promise: {r['within_promise']}); "
                    f"samples/s {r['lerobot_samples_per_s']} against {r['autotune_samples_per_s']}; "
                    f"parameters {r['learnable_params']} against {r['trainable_params']}",
                    flush=True,
                )
    replace_csv(args.out, COLUMNS, rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
