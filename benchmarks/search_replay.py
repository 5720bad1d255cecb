"""The batch searches on measured memory curves, at every budget along them.

A real-probe scenario in ``search_strategies.py`` tests one budget per half hour of CPU. This script
measures a policy's peak memory once at a ladder of batch sizes (real probe children, the same
cut-down models and request as that benchmark), stores the curve, and then replays it: the searches
run against the measured curve, interpolated linearly between measured sizes, at a dense sweep of
budgets. That shows how autotune and Lightning-style doubling-then-bisecting fare across the
curve's whole shape (a flat start, a bend) rather than at two points.

    python benchmarks/search_replay.py                   # replay the committed curves, a second
    python benchmarks/search_replay.py --measure act     # re-measure ACT's curve first (~6 min CPU)
    python benchmarks/search_replay.py --measure smolvla # SmolVLA's (~2 min CPU)

Probes are counted, not timed: replayed probes take no time.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from autotune.results import replace_csv

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark, imported as a module
from search_strategies import (  # noqa: E402
    LIGHTNING,
    CachedRealProbe,
    SimulatedProbe,
    real_spec,
    run_strategy,
    true_max,
)

log = logging.getLogger("benchmarks.search_replay")

MiB = 1024**2
RESULTS = Path(__file__).resolve().parent / "results"
CURVE_CSV = RESULTS / "memory_curves_cpu.csv"
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
BUDGETS_PER_CURVE = 120  # evenly spaced from just above the peak at batch 1 to the largest peak
MIN_BOUND_MAX = 64  # the half-the-probes bound is counted where the maximum is at least this


@dataclass
class Row:
    """One budget on one measured curve; a CSV row."""

    policy: str
    budget_bytes: int
    true_max: int
    autotune_probes: int
    lightning_probes: int
    autotune_exact: bool
    lightning_exact: bool
    within_half: bool  # 2 * autotune_probes <= lightning_probes
    autotune_sequence: str


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


def replay(policy: str, points: list[tuple[int, int]], budgets: int = BUDGETS_PER_CURVE) -> list[Row]:
    curve = interpolated(points)
    low, high = points[0][1], points[-1][1]
    rows = []
    for i in range(1, budgets + 1):
        budget = int(low + (high - low) * i / budgets)
        truth = true_max(curve, budget)
        probe = SimulatedProbe(curve, budget)
        ours, theirs = (
            run_strategy(name, probe, budget, fresh=lambda: 0) for name in ("autotune", LIGHTNING)
        )
        rows.append(
            Row(
                policy=policy,
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
            )
        )
    return rows


def summary(policy: str, rows: list[Row]) -> str:
    large = [r for r in rows if r.true_max >= MIN_BOUND_MAX]
    ours = sum(r.autotune_probes for r in rows)
    theirs = sum(r.lightning_probes for r in rows)
    return (
        f"{policy}: {len(rows)} budgets (max {min(r.true_max for r in rows)}..{max(r.true_max for r in rows)}); "
        f"autotune exact in {sum(r.autotune_exact for r in rows)}/{len(rows)}; "
        f"<= half Lightning's probes in {sum(r.within_half for r in large)}/{len(large)} budgets with max >= "
        f"{MIN_BOUND_MAX} and {sum(r.within_half for r in rows)}/{len(rows)} overall; "
        f"probes {ours} vs {theirs} ({ours / theirs:.2f}); "
        f"most probes {max(r.autotune_probes for r in rows)} vs Lightning's {max(r.lightning_probes for r in rows)}"
    )


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
        "--curves", type=Path, default=CURVE_CSV, help=f"measured curves (default {CURVE_CSV})"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"CSV to write (default {DEFAULT_OUT})")
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
    rows: list[Row] = []
    for policy, points in sorted(curves.items()):
        policy_rows = replay(policy, points)
        rows += policy_rows
        print(summary(policy, policy_rows))
    replace_csv(args.out, COLUMNS, (asdict(r) for r in rows))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
