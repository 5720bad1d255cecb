"""The batch searches on measured memory curves, at every budget along them.

A real-probe scenario in ``search_strategies.py`` tests one budget per half hour of CPU. This script
measures a policy's peak memory once at a ladder of batch sizes (real probe children, the same
cut-down models and request as that benchmark), stores the curve, and then replays it: the searches
run against the measured curve, interpolated linearly between measured sizes, at a dense sweep of
budgets. That shows how autotune and Lightning-style doubling-then-bisecting fare across the
curve's whole shape (a flat start, a bend) rather than at two points.

Real probes also repeat only to within a measured noise: the same size in fresh children peaks a
fraction of a MiB apart. ``--measure-noise`` measures that spread (a few sizes, several fresh
children each), and the replay is repeated with that noise, and twice it, added to the curve: a
fixed Gaussian error per batch size and seed, the same for both searches. Peaks repeat less well
on a loaded machine (issue 16: 2% of the budget apart), so the replay also adds errors of 0.5%, 1%
and 2% of each budget. ``autotune run`` starts its search from the estimate counted on the meta
device (``autotune estimate``): the replay runs that search too (``estimate_probes``), from the
estimate of the curve's own model, counted by an estimate child once per policy (seconds).

    python benchmarks/search_replay.py                         # replay the committed curves, seconds
    python benchmarks/search_replay.py --measure act           # re-measure ACT's curve first (~12 min CPU)
    python benchmarks/search_replay.py --measure smolvla       # SmolVLA's (~2 min CPU)
    python benchmarks/search_replay.py --measure-noise act --measure-noise smolvla  # ~7 min CPU

Probes are counted, not timed: replayed probes take no time.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import random
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from autotune import estimate as E
from autotune.errors import ProbeError
from autotune.estimate.terms import default_terms
from autotune.outputs.results import replace_csv
from autotune.run.probe_client import run_probe
from autotune.tuning.memory_fit import MemoryFit
from autotune.tuning.search import SearchOutcome, find_max_batch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark, imported as a module
from search_strategies import (  # noqa: E402
    LIGHTNING,
    TRUE_MAX_UPPER,
    CachedRealProbe,
    ProbeFn,
    real_spec,
    run_strategy,
    simulated_probe,
)

log = logging.getLogger("benchmarks.search_replay")

MiB = 1024**2
RESULTS = Path(__file__).resolve().parent / "results"
CURVE_CSV = RESULTS / "memory_curves_cpu.csv"
NOISE_CSV = RESULTS / "memory_noise_cpu.csv"
DEFAULT_OUT = RESULTS / "search_replay_cpu.csv"
LADDER = {
    "act": (
        1,
        2,
        4,
        8,
        16,
        32,
        48,
        64,
        80,
        96,
        104,
        112,
        120,
        128,
        144,
        160,
        176,
        192,
        208,
        216,
        224,
        232,
        240,
        256,
    ),
    "smolvla": (1, 2, 4, 8, 16, 24, 32, 48, 64, 72, 80, 88, 96, 112, 128, 160, 192, 224, 256),
}
# Sizes whose repeat spread is measured, in fresh children each, and how often.
NOISE_SIZES = (64, 192)
NOISE_REPEATS = 6
NOISE_FACTORS = (1, 2)  # replay with the measured noise, and with twice it
NOISE_SEEDS = 8  # noisy replays per budget and noise level
NOISE_BUDGET_SHARES = (0.005, 0.01, 0.02)  # errors as a share of each budget, up to 2% (issue 16)
BUDGETS_PER_CURVE = 120  # evenly spaced from just above the peak at batch 1 to the largest peak
MIN_BOUND_MAX = 64  # the half-the-probes bound is counted where the maximum is at least this


@dataclass
class Row:
    """One budget on one measured curve; a CSV row."""

    policy: str
    noise_mib: float  # standard deviation of the error added to every replayed peak (0: none)
    seed: int
    budget_bytes: int
    true_max: int  # the largest size before the first (noisy) peak over the budget
    autotune_probes: int
    lightning_probes: int
    autotune_exact: bool
    lightning_exact: bool
    within_half: bool  # 2 * autotune_probes <= lightning_probes
    autotune_sequence: str
    noise_budget_share: float = 0.0  # the error's standard deviation as a share of the budget
    estimate_probes: int = 0  # autotune started from its estimate, as autotune run does (0: not run)
    estimate_exact: bool = False
    estimate_within_half: bool = False  # 2 * estimate_probes <= lightning_probes
    estimate_sequence: str = ""


COLUMNS = [f.name for f in fields(Row)]


def measure(policy: str, sizes: tuple[int, ...]) -> list[tuple[int, int]]:
    """Peak memory of real probe children at each size, with no budget in the way."""
    probe = CachedRealProbe(real_spec(policy, "cpu"), "cpu", "fp32", 64 * 1024 * MiB, timeout_s=900)
    points = []
    for size in sizes:
        result = probe(size)
        if not result.fits:
            raise SystemExit(f"{policy} at batch {size}: {result.status} ({result.message})")
        points.append((size, result.peak_reserved_bytes))
    return points


def measure_noise(policy: str, sizes: tuple[int, ...], repeats: int) -> list[tuple[int, int, int]]:
    """``(batch_size, repeat, peak)``: the same probe in fresh children, ``repeats`` times per size."""
    probe = CachedRealProbe(real_spec(policy, "cpu"), "cpu", "fp32", 64 * 1024 * MiB, timeout_s=900)
    found = []
    for size in sizes:
        for repeat in range(repeats):
            result = probe.fresh(size)
            if not result.fits:
                raise SystemExit(f"{policy} at batch {size}: {result.status} ({result.message})")
            found.append((size, repeat, result.peak_reserved_bytes))
    return found


def read_curves(path: Path) -> dict[str, list[tuple[int, int]]]:
    curves: dict[str, list[tuple[int, int]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            curves.setdefault(row["policy"], []).append(
                (int(row["batch_size"]), int(row["peak_reserved_bytes"]))
            )
    return {policy: sorted(points) for policy, points in curves.items()}


def interpolated(points: list[tuple[int, int]]) -> Callable[[int], float]:
    """Peak at any batch: linear between measured sizes, the last segment's slope beyond them."""

    def curve(batch: int) -> float:
        for (b0, p0), (b1, p1) in zip(points, points[1:], strict=False):
            if batch <= b1:
                return p0 + (p1 - p0) * (batch - b0) / (b1 - b0)
        (b0, p0), (b1, p1) = points[-2], points[-1]
        return p1 + (p1 - p0) * (batch - b1) / (b1 - b0)

    return curve


def with_noise(curve: Callable[[int], float], sigma_bytes: float, key: str) -> Callable[[int], float]:
    """``curve`` plus a Gaussian error of ``sigma_bytes`` per batch size, fixed by ``key``: asking
    for a size twice gives the same answer, as the benchmark's cached probe does."""
    if sigma_bytes <= 0:
        return curve
    errors: dict[int, float] = {}

    def peak(batch: int) -> float:
        if batch not in errors:
            errors[batch] = random.Random(f"{key}-{batch}").gauss(0.0, sigma_bytes)
        return curve(batch) + errors[batch]

    return peak


def replay(
    policy: str,
    points: list[tuple[int, int]],
    budgets: int = BUDGETS_PER_CURVE,
    noise_bytes: float = 0.0,
    seed: int = 0,
    noise_share: float = 0.0,
    estimate: Callable[[int], MemoryFit] | None = None,
) -> list[Row]:
    curve = interpolated(points)
    low, high = points[0][1], points[-1][1]
    rows = []
    for i in range(1, budgets + 1):
        budget = int(low + (high - low) * i / budgets)
        sigma = noise_bytes or noise_share * budget
        peak = with_noise(curve, sigma, f"{policy}-{seed}-{i}")
        probe = simulated_probe(peak, budget)
        truth = probe.true_max(TRUE_MAX_UPPER)
        ours, theirs = (
            run_strategy(name, probe, budget, fresh=lambda: 0) for name in ("autotune", LIGHTNING)
        )
        started = estimated(probe, budget, estimate(budget)) if estimate is not None else None
        rows.append(
            Row(
                policy=policy,
                noise_mib=round(noise_bytes / MiB, 3),
                seed=seed,
                budget_bytes=budget,
                true_max=truth,
                autotune_probes=len(ours.asked),
                lightning_probes=len(theirs.asked),
                autotune_exact=ours.outcome is not None
                and ours.outcome.max_batch == truth
                and ours.outcome.certified,
                lightning_exact=theirs.outcome is not None and theirs.outcome.max_batch == truth,
                within_half=2 * len(ours.asked) <= len(theirs.asked),
                autotune_sequence=" ".join(str(r.batch_size) for r in ours.asked),
                noise_budget_share=noise_share,
                estimate_probes=len(started.probes) if started else 0,
                estimate_exact=bool(started and started.max_batch == truth and started.certified),
                estimate_within_half=bool(started and 2 * len(started.probes) <= len(theirs.asked)),
                estimate_sequence=" ".join(str(r.batch_size) for r in started.probes) if started else "",
            )
        )
    return rows


def estimated(probe: ProbeFn, budget: int, estimate: MemoryFit) -> SearchOutcome | None:
    """autotune's search started from ``estimate``, as autotune run starts it; None if it failed."""
    try:
        return find_max_batch(probe, budget, estimate=estimate)
    except ProbeError:  # a noisy curve that is not monotonic: counted as not exact
        return None


def estimate_for(policy: str) -> Callable[[int], MemoryFit]:
    """The search's starting line at each budget, as autotune run draws it from the estimate of the
    curve's own model: counted on the meta device for the CPU (an estimate child, seconds), with the
    CPU runtime's term on top."""
    spec = real_spec(policy, "cpu")
    result = run_probe(E.estimate_request(spec, "cpu", "fp32"), timeout_s=600)
    est = E.from_result(result, spec)
    terms = default_terms(est)
    log.info(
        "%s: estimate %.1f MiB + %.3f MiB per sample, %.1f MiB on top, counted in %.1f s",
        policy,
        est.fixed_bytes / MiB,
        est.per_sample_bytes / MiB,
        terms.inside() / MiB,
        est.wall_s,
    )
    return lambda budget: E.search_prior(est, terms, budget)


def summary(rows: list[Row]) -> str:
    """One line for one policy at one noise level."""
    policy, noise_mib = rows[0].policy, rows[0].noise_mib
    share = rows[0].noise_budget_share
    large = [r for r in rows if r.true_max >= MIN_BOUND_MAX]
    ours = sum(r.autotune_probes for r in rows)
    theirs = sum(r.lightning_probes for r in rows)
    noise = f"noise {noise_mib:.3f} MiB, {len({r.seed for r in rows})} seeds" if noise_mib else "no noise"
    if share:
        noise = f"noise {100 * share:g}% of the budget, {len({r.seed for r in rows})} seeds"
    started = ""
    if any(r.estimate_probes for r in rows):
        mine = sum(r.estimate_probes for r in rows)
        started = (
            f"; from its estimate: exact in {sum(r.estimate_exact for r in rows)}/{len(rows)}, <= half "
            f"Lightning's probes in {sum(r.estimate_within_half for r in large)}/{len(large)} budgets with "
            f"max >= {MIN_BOUND_MAX}, probes {mine} vs {theirs} ({mine / theirs:.2f}), most "
            f"{max(r.estimate_probes for r in rows)}"
        )
    return (
        f"{policy} ({noise}): {len(rows)} budgets (max {min(r.true_max for r in rows)}.."
        f"{max(r.true_max for r in rows)}); autotune exact in {sum(r.autotune_exact for r in rows)}/"
        f"{len(rows)}; <= half Lightning's probes in {sum(r.within_half for r in large)}/{len(large)} "
        f"budgets with max >= {MIN_BOUND_MAX} and {sum(r.within_half for r in rows)}/{len(rows)} "
        f"overall; probes {ours} vs {theirs} ({ours / theirs:.2f}); most probes "
        f"{max(r.autotune_probes for r in rows)} vs Lightning's {max(r.lightning_probes for r in rows)}"
        + started
    )


def read_noise(path: Path) -> dict[str, float]:
    """Per policy, the repeat noise in bytes: the pooled standard deviation over the sizes."""
    by_size: dict[tuple[str, int], list[int]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            by_size.setdefault((row["policy"], int(row["batch_size"])), []).append(
                int(row["peak_reserved_bytes"])
            )
    variances: dict[str, list[float]] = {}
    for (policy, _), peaks in by_size.items():
        if len(peaks) >= 2:
            variances.setdefault(policy, []).append(statistics.variance(peaks))
    return {policy: math.sqrt(statistics.fmean(v)) for policy, v in variances.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--measure",
        choices=sorted(LADDER),
        action="append",
        default=[],
        help="re-measure this policy's curve with real CPU probes before replaying",
    )
    parser.add_argument(
        "--measure-noise",
        choices=sorted(LADDER),
        action="append",
        default=[],
        help=f"re-measure this policy's repeat noise ({NOISE_REPEATS} fresh children at each of "
        f"{', '.join(map(str, NOISE_SIZES))}) before replaying",
    )
    parser.add_argument(
        "--curves", type=Path, default=CURVE_CSV, help=f"measured curves (default {CURVE_CSV})"
    )
    parser.add_argument(
        "--noise", type=Path, default=NOISE_CSV, help=f"measured repeat noise (default {NOISE_CSV})"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"CSV to write (default {DEFAULT_OUT})")
    parser.add_argument(
        "--seeds",
        type=int,
        default=NOISE_SEEDS,
        help=f"noisy replays per budget and noise level (default {NOISE_SEEDS})",
    )
    parser.add_argument(
        "--no-estimate", action="store_true", help="skip the search started from the estimate (no child)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    curves = read_curves(args.curves) if args.curves.exists() else {}
    if args.measure:
        for policy in args.measure:
            log.info("measuring %s at %s", policy, LADDER[policy])
            curves[policy] = measure(policy, LADDER[policy])
        replace_csv(
            args.curves,
            ["policy", "batch_size", "peak_reserved_bytes"],
            (
                {"policy": p, "batch_size": b, "peak_reserved_bytes": peak}
                for p, points in sorted(curves.items())
                for b, peak in points
            ),
        )
        print(f"wrote {args.curves}")
    if not curves:
        raise SystemExit(f"{args.curves}: no measured curves; run with --measure act first")
    if args.measure_noise:
        kept = []
        if args.noise.exists():
            with args.noise.open(newline="") as f:
                kept = [r for r in csv.DictReader(f) if r["policy"] not in args.measure_noise]
        for policy in args.measure_noise:
            log.info("measuring %s's repeat noise at %s, %d times each", policy, NOISE_SIZES, NOISE_REPEATS)
            kept += [
                {"policy": policy, "batch_size": b, "repeat": i, "peak_reserved_bytes": peak}
                for b, i, peak in measure_noise(policy, NOISE_SIZES, NOISE_REPEATS)
            ]
        replace_csv(args.noise, ["policy", "batch_size", "repeat", "peak_reserved_bytes"], kept)
        print(f"wrote {args.noise}")
    noise = read_noise(args.noise) if args.noise.exists() else {}
    rows: list[Row] = []
    for policy, points in sorted(curves.items()):
        levels = [(0.0, 0.0, 1)]  # (error in bytes, error as a share of the budget, seeds)
        if policy in noise:
            levels += [(factor * noise[policy], 0.0, args.seeds) for factor in NOISE_FACTORS]
        else:
            log.warning("%s: no repeat noise measured in %s; replaying without noise", policy, args.noise)
        prior = None if args.no_estimate else estimate_for(policy)
        levels += [(0.0, share, args.seeds) for share in NOISE_BUDGET_SHARES]
        for noise_bytes, share, seeds in levels:
            level_rows = [
                row
                for seed in range(seeds)
                for row in replay(
                    policy, points, noise_bytes=noise_bytes, seed=seed, noise_share=share, estimate=prior
                )
            ]
            rows += level_rows
            print(summary(level_rows))
    replace_csv(args.out, COLUMNS, (asdict(r) for r in rows))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
