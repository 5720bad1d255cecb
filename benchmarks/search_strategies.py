"""Batch-size searches head to head: probes used, probe time and exactness, on the same probe.

Contenders: autotune's ``find_max_batch``, Lightning-style doubling then bisection from 2, and
Accelerate-style halving from 128 and from 512. Scenarios: fake memory curves at several budgets
(probe time simulated: a fixed start-up plus a cost per sample), then real probe children on this
machine's CPU (or a GPU with ``--device cuda``).

    python benchmarks/search_strategies.py                 # fakes + real CPU probes, a few minutes
    python benchmarks/search_strategies.py --skip-real     # fakes only, instant
    python benchmarks/search_strategies.py --device cuda   # real scenario on the GPU, card's memory

Real probes within one scenario are cached per batch size, so strategies asking for the same size
share one child. Every strategy's probe count and probe time are still counted as if uncached: the
sum of ``wall_s`` of every probe result it asked for. ``fresh_probes`` says how many it actually ran.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from autotune.errors import ProbeError
from autotune.outputs.results import replace_csv
from autotune.run.probe_client import run_probe
from autotune.tuning.baselines import accelerate_shrink, lightning_binsearch
from autotune.tuning.search import DEFAULT_MAX_BATCH, SearchOutcome, find_max_batch
from autotune.units import parse_size
from probes.catalogue import cut_down
from probes.protocol import ModelSpec, ProbeRequest, ProbeResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/fakes.py: the search tests' probe
from tests.fakes import FakeProbe  # noqa: E402

log = logging.getLogger("benchmarks.search_strategies")

MiB = 1024**2
GiB = 1024**3

ProbeFn = Callable[[int], ProbeResult]
Strategy = Callable[[ProbeFn, int], SearchOutcome]

STRATEGIES: dict[str, Strategy] = {
    "autotune": lambda probe, budget: find_max_batch(probe, budget),
    "lightning_binsearch@2": lambda probe, budget: lightning_binsearch(probe, budget, start=2),
    "accelerate_shrink@128": lambda probe, budget: accelerate_shrink(probe, budget, start=128),
    "accelerate_shrink@512": lambda probe, budget: accelerate_shrink(probe, budget, start=512),
}
EXACT_STRATEGIES = ("autotune", "lightning_binsearch@2")  # certify the largest fitting size
LIGHTNING = "lightning_binsearch@2"

# Fake memory curves (bytes at batch b), the shapes a real peak takes.
CURVES: dict[str, Callable[[int], float]] = {
    "linear": lambda b: 30 * MiB * b,
    "linear_with_offset": lambda b: 1.3 * GiB + 41 * MiB * b,
    "allocator_steps_2mib": lambda b: math.ceil((900 * MiB + 7.3 * MiB * b) / (2 * MiB)) * 2 * MiB,
    "allocator_steps_20mib": lambda b: math.ceil((2.1 * GiB + 11.7 * MiB * b) / (20 * MiB)) * 20 * MiB,
    "convex": lambda b: 500 * MiB + 9 * MiB * b + 0.002 * MiB * b * b,  # attention-like b^2 term
}
FAKE_BUDGETS = (2 * GiB, int(7.5 * GiB), 24 * GiB, 79 * GiB)

# Simulated probe time: a child's start-up (interpreter, model build) plus warm-up and measured
# steps whose cost grows with the batch; an out-of-memory ends during the first step.
SIM_STARTUP_S = 5.0
SIM_STEP_FIXED_S = 0.05
SIM_STEP_PER_SAMPLE_S = 0.004
SIM_STEPS = 4  # 1 warm-up + 3 measured, as the real probes below

# The real CPU scenario: ACT cut down so that one step takes about a second on two cores.
CPU_ACT_OVERRIDES = cut_down("act", "cpu_second")
# SmolVLA cut down the same way (the sizes tests/test_smolvla.py trains).
CPU_SMOLVLA_OVERRIDES = cut_down("smolvla", "tiny")
CPU_IMAGE_SIZE = (64, 96)
# Measured on the development machine (RSS growth of the child): reduced ACT peaks at ~420 MiB, flat
# up to batch ~8, then ~2.7 MiB per sample (b=64: ~556 MiB, b=128: ~730 MiB), a few MiB apart between
# repeats. These budgets put the maximum near 117 and 225.
CPU_BUDGETS = {
    "act": ("700MiB", "1GiB"),
    "smolvla": ("256MiB", "384MiB"),
}  # smolvla: ~183 MiB + ~0.95 MiB/sample

DEFAULT_OUT = Path("benchmarks/results/search_strategies_cpu.csv")


@dataclass
class Row:
    """One strategy on one scenario; a CSV row."""

    scenario: str
    source: str  # "fake" or "real"
    strategy: str
    budget_bytes: int
    probes: int
    probes_vs_lightning: float | None
    probe_wall_s: float  # time the probes took (see wall_kind)
    wall_kind: str  # "simulated", or "measured (summed as if uncached)"
    compute_s: float  # actual elapsed time of this strategy's run in this script
    fresh_probes: int  # probes actually executed (fewer than ``probes`` where the cache served)
    answer: int | None
    true_max: int | None
    exact: bool | None
    certified: bool
    capped: bool
    predicted_max: int | None  # autotune only: its fitted line's max_batch_under(budget)
    prediction_rel_error: float | None  # |predicted_max - true_max| / true_max
    sequence: str  # probed sizes in order: "+" fitted, "x" out of memory
    note: str = ""


COLUMNS = [f.name for f in fields(Row)]


def budget_label(budget_bytes: int) -> str:
    if budget_bytes % GiB == 0 or budget_bytes >= 2 * GiB:
        return f"{budget_bytes / GiB:g}GiB"
    return f"{budget_bytes / MiB:g}MiB"


def sequence_of(results: list[ProbeResult]) -> str:
    return " ".join(f"{r.batch_size}{'+' if r.fits else 'x'}" for r in results)


# --- fakes -------------------------------------------------------------------------------------


TRUE_MAX_UPPER = 1_000_000  # the largest size a true maximum is looked for at


def simulated_probe(curve: Callable[[int], float], budget_bytes: int) -> FakeProbe:
    """The search tests' fake probe, answering from a memory curve, with ``wall_s`` the simulated
    time a real probe would take."""
    return FakeProbe(
        curve,
        budget_bytes,
        step_time=lambda b: SIM_STEP_FIXED_S + SIM_STEP_PER_SAMPLE_S * b,
        steps=SIM_STEPS,
        startup_s=SIM_STARTUP_S,
    )


# --- rows --------------------------------------------------------------------------------------


@dataclass
class Run:
    """One strategy's outcome (or failure) on a scenario, before the truth is known."""

    strategy: str
    outcome: SearchOutcome | None
    asked: list[ProbeResult]
    compute_s: float
    fresh_probes: int
    error: str = ""


def run_strategy(name: str, probe: ProbeFn, budget_bytes: int, fresh: Callable[[], int]) -> Run:
    asked: list[ProbeResult] = []

    def recorded(batch_size: int) -> ProbeResult:
        result = probe(batch_size)
        asked.append(result)
        return result

    fresh_before = fresh()
    t0 = time.perf_counter()
    try:
        outcome: SearchOutcome | None = STRATEGIES[name](recorded, budget_bytes)
        error = ""
    except ProbeError as exc:  # e.g. a measured curve that is not monotonic: report, go on
        outcome, error = None, str(exc)
    return Run(name, outcome, asked, time.perf_counter() - t0, fresh() - fresh_before, error)


def rows_for(
    scenario: str, source: str, budget_bytes: int, runs: list[Run], truth: int | None, wall_kind: str
) -> list[Row]:
    """Rows for one scenario; ``truth`` is the true maximum (None: unknown)."""
    lightning = next((len(r.asked) for r in runs if r.strategy == LIGHTNING), 0)
    rows = []
    for run in runs:
        out = run.outcome
        answer = out.max_batch if out is not None else None
        # The searches look in [1, DEFAULT_MAX_BATCH]: at best they can find the capped truth.
        reachable = min(truth, DEFAULT_MAX_BATCH) if truth is not None else None
        predicted = rel_error = None
        if out is not None and out.fit is not None:
            predicted = out.fit.max_batch_under(budget_bytes)
            if truth:
                rel_error = abs(predicted - truth) / truth
        notes = [run.error] if run.error else []
        if truth is not None and truth > DEFAULT_MAX_BATCH:
            notes.append(f"true max above the search cap {DEFAULT_MAX_BATCH}")
        rows.append(
            Row(
                scenario=scenario,
                source=source,
                strategy=run.strategy,
                budget_bytes=budget_bytes,
                probes=len(run.asked),
                probes_vs_lightning=round(len(run.asked) / lightning, 3) if lightning else None,
                probe_wall_s=round(sum(r.wall_s for r in run.asked), 3),
                wall_kind=wall_kind,
                compute_s=round(run.compute_s, 6),
                fresh_probes=run.fresh_probes,
                answer=answer,
                true_max=truth,
                exact=(answer == reachable) if answer is not None and reachable is not None else None,
                certified=bool(out and out.certified),
                capped=bool(out and out.capped),
                predicted_max=predicted,
                prediction_rel_error=round(rel_error, 5) if rel_error is not None else None,
                sequence=sequence_of(run.asked),
                note="; ".join(notes),
            )
        )
    return rows


def fake_rows(curves: dict[str, Callable[[int], float]] = CURVES, budgets=FAKE_BUDGETS) -> list[Row]:
    rows: list[Row] = []
    for curve_name, curve in curves.items():
        for budget in budgets:
            probe = simulated_probe(curve, budget)
            runs = [run_strategy(name, probe, budget, fresh=lambda: 0) for name in STRATEGIES]
            for run in runs:
                run.fresh_probes = len(run.asked)
            truth = probe.true_max(TRUE_MAX_UPPER)
            rows += rows_for(f"{curve_name}@{budget_label(budget)}", "fake", budget, runs, truth, "simulated")
    return rows


# --- real probes -------------------------------------------------------------------------------


@dataclass
class CachedRealProbe:
    """Runs real probe children, one per batch size per scenario; later asks reuse the result."""

    spec: ModelSpec
    device: str
    precision: str
    budget_bytes: int
    timeout_s: float
    cache: dict[int, ProbeResult] = field(default_factory=dict)
    runs: int = 0  # children actually started

    def request(self, batch_size: int) -> ProbeRequest:
        return ProbeRequest(
            kind="batch",
            model=self.spec,
            device=self.device,
            precision=self.precision,
            batch_size=batch_size,
            memory_limit_bytes=self.budget_bytes,
            warmup_steps=1,
            measure_steps=3,
        )

    def fresh(self, batch_size: int) -> ProbeResult:
        self.runs += 1
        result = run_probe(self.request(batch_size), timeout_s=self.timeout_s)
        log.info(
            "  probe batch %d: %s, peak %.1f MiB, %.1f s",
            batch_size,
            result.status,
            result.peak_reserved_bytes / MiB,
            result.wall_s,
        )
        return result

    def __call__(self, batch_size: int) -> ProbeResult:
        if batch_size not in self.cache:
            self.cache[batch_size] = self.fresh(batch_size)
        return self.cache[batch_size]


def real_spec(policy: str, device: str) -> ModelSpec:
    if device == "cpu":
        overrides = CPU_ACT_OVERRIDES if policy == "act" else CPU_SMOLVLA_OVERRIDES
        return ModelSpec(
            policy, 2, CPU_IMAGE_SIZE, 6, 6, gradient_checkpointing=True, overrides=dict(overrides)
        )
    return ModelSpec(policy, 2, (480, 640), 6, 6, gradient_checkpointing=True)  # LeRobot defaults


def default_real_budgets(policy: str, device: str) -> list[int]:
    if device == "cpu":
        return [parse_size(s) for s in CPU_BUDGETS[policy]]
    from autotune.machine.fingerprint import gpu_info

    index = int(device.split(":")[1]) if ":" in device else 0
    gpu = gpu_info(index)
    if gpu is None:
        raise SystemExit(f"device {device}: no NVIDIA GPU found")
    return [gpu.memory_free_bytes]  # the card's memory, as autotune's default budget


def real_rows(
    policy: str, device: str, budgets: list[int], timeout_s: float, recheck: bool
) -> tuple[list[Row], list[str]]:
    precision = "fp32" if device == "cpu" else "bf16"
    spec = real_spec(policy, device)
    rows: list[Row] = []
    checks: list[str] = []
    for budget in budgets:
        scenario = f"real_{device.split(':')[0]}_{policy}@{budget_label(budget)}"
        log.info("%s: %s, %s, budget %s", scenario, spec, precision, budget_label(budget))
        probe = CachedRealProbe(spec, device, precision, budget, timeout_s)
        runs = []
        for name in STRATEGIES:
            log.info(" %s", name)
            runs.append(run_strategy(name, probe, budget, fresh=lambda p=probe: p.runs))
        answers = {
            r.outcome.max_batch
            for r in runs
            if r.strategy in EXACT_STRATEGIES and r.outcome is not None and r.outcome.certified
        }
        certified = sum(
            r.strategy in EXACT_STRATEGIES and bool(r.outcome and r.outcome.certified) for r in runs
        )
        truth = answers.pop() if len(answers) == 1 and certified == len(EXACT_STRATEGIES) else None
        scenario_rows = rows_for(scenario, "real", budget, runs, truth, "measured (summed as if uncached)")
        if truth is None:
            for row in scenario_rows:
                row.note = "; ".join(filter(None, [row.note, "exact strategies disagree or did not certify"]))
        rows += scenario_rows
        if recheck and truth:
            # Is the boundary reproducible? Re-run truth and truth + 1 in fresh children.
            again = [probe.fresh(b) for b in (truth, truth + 1)]
            cached = [probe(b) for b in (truth, truth + 1)]
            agree = [a.status == c.status for a, c in zip(again, cached, strict=True)]
            checks.append(
                f"recheck {scenario}: "
                + ", ".join(
                    f"batch {a.batch_size} {a.status} {a.peak_reserved_bytes / MiB:.1f} MiB "
                    f"(searched: {c.status} {c.peak_reserved_bytes / MiB:.1f} MiB)"
                    for a, c in zip(again, cached, strict=True)
                )
                + (" -> boundary reproduced" if all(agree) else " -> boundary NOT reproduced")
            )
    return rows, checks


# --- output ------------------------------------------------------------------------------------


def describe(row: Row) -> str:
    ratio = f"{row.probes_vs_lightning:.2f}x lightning" if row.probes_vs_lightning is not None else "-"
    wall = "simulated" if row.wall_kind == "simulated" else "measured"
    answer = "error" if row.answer is None else str(row.answer)
    exact = {True: "exact", False: "NOT exact", None: "exact ?"}[row.exact]
    compute = f"{row.compute_s:7.1f} s" if row.compute_s >= 1 else f"{1000 * row.compute_s:6.2f} ms"
    pred = ""
    if row.predicted_max is not None:
        err = f"{100 * row.prediction_rel_error:.1f}%" if row.prediction_rel_error is not None else "-"
        pred = f"  predicted {row.predicted_max} (err {err})"
    return (
        f"{row.scenario:<30} {row.strategy:<22} probes {row.probes:>3} ({ratio})  "
        f"probe time {row.probe_wall_s:8.1f} s {wall}  compute {compute}  "
        f"answer {answer:>5} true {row.true_max if row.true_max is not None else '?':>5} {exact}{pred}"
    )


def summary(rows: list[Row]) -> str:
    scenarios = list(dict.fromkeys(r.scenario for r in rows))
    ours = {r.scenario: r for r in rows if r.strategy == "autotune"}
    theirs = {r.scenario: r for r in rows if r.strategy == LIGHTNING}
    exact = [s for s in scenarios if ours[s].exact]
    half = [s for s in exact if 2 * ours[s].probes <= theirs[s].probes]
    over = [f"{s} ({ours[s].probes} vs {theirs[s].probes})" for s in exact if s not in half]
    errors = [
        (r.prediction_rel_error, r.scenario) for r in ours.values() if r.prediction_rel_error is not None
    ]
    worst = max(errors) if errors else None
    not_exact = [s for s in scenarios if not ours[s].exact]
    return (
        f"summary: autotune exact in {len(exact)}/{len(scenarios)} scenarios"
        + (f" (not: {', '.join(not_exact)})" if not_exact else "")
        + f"; <= half Lightning's probes in {len(half)}/{len(exact)} exact scenarios"
        + (f" (more in: {', '.join(over)})" if over else "")
        + (f"; max prediction error {100 * worst[0]:.1f}% ({worst[1]})" if worst else "")
        + f"; total probes autotune {sum(r.probes for r in ours.values())}"
        + f" vs lightning {sum(r.probes for r in theirs.values())}"
    )


def write_csv(rows: list[Row], path: Path) -> None:
    replace_csv(path, COLUMNS, (asdict(row) for row in rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"CSV to write (default {DEFAULT_OUT})")
    parser.add_argument("--skip-real", action="store_true", help="fake curves only")
    parser.add_argument(
        "--quick", action="store_true", help="real scenario at the first budget only, no recheck"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N for the real scenario")
    parser.add_argument(
        "--policy",
        default="act",
        help="policies for the real scenario, comma-separated: act, smolvla (default act)",
    )
    parser.add_argument(
        "--budgets", help="real-scenario budgets, comma-separated (e.g. 700MiB,1GiB); default per device"
    )
    parser.add_argument(
        "--probe-timeout", type=float, default=None, help="seconds per probe (300 CPU, 900 GPU)"
    )
    args = parser.parse_args(argv)
    policies = [p.strip() for p in args.policy.split(",") if p.strip()]
    unknown = sorted(set(policies) - set(CPU_BUDGETS))
    if unknown or not policies:
        parser.error(f"--policy: unknown {', '.join(unknown) or 'empty list'}; use act, smolvla")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    rows = fake_rows()
    for row in rows:
        print(describe(row), flush=True)
    write_csv(rows, args.out)
    checks: list[str] = []
    if not args.skip_real:
        timeout_s = args.probe_timeout or (300.0 if args.device == "cpu" else 900.0)
        for policy in policies:
            budgets = (
                [parse_size(s) for s in args.budgets.split(",")]
                if args.budgets
                else default_real_budgets(policy, args.device)
            )
            if args.quick:
                budgets = budgets[:1]
            real, policy_checks = real_rows(policy, args.device, budgets, timeout_s, recheck=not args.quick)
            for row in real:
                print(describe(row), flush=True)
            rows += real
            checks += policy_checks
            write_csv(rows, args.out)  # each policy's rows land as soon as they are measured
        print(
            "real probes: cached per batch size within a scenario; probes and probe time per strategy "
            "are counted as if uncached (sum of wall_s of every result asked for)"
        )
        for line in checks:
            print(line)
        write_csv(rows, args.out)
    print(summary(rows))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
