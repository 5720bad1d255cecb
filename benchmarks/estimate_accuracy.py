"""The estimate (``autotune estimate``) against measured peaks, per model: per-sample bytes and the maximum.

For each configuration the estimate child counts the training step on the meta device for the
device at hand; then fresh batch probes (real children, real steps, as ``autotune run``'s) measure the
peak at a ladder of sizes. Compared: the per-sample bytes (least-squares lines through the counted
and through the measured peaks, over the same sizes) and the maximum under a budget set between the
two largest measured peaks (the estimate with its terms, against the measured peaks interpolated).

On the CPU the probes measure the growth of the resident set; on CUDA (``--device cuda``, on a GPU)
both the allocator's allocated peak (against the live count) and its reserved peak (against the
count with the terms on top).

    python benchmarks/estimate_accuracy.py                     # every configuration on the CPU
    python benchmarks/estimate_accuracy.py --only act-cut      # one
    python benchmarks/estimate_accuracy.py --device cuda --out benchmarks/results/estimate_accuracy_cuda.csv
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from autotune import estimate as E
from autotune.estimate.terms import default_terms
from autotune.outputs.results import replace_csv
from autotune.run.probe_client import run_probe
from probes.protocol import ModelSpec, ProbeRequest, ProbeResult

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark, imported as a module
from search_strategies import CPU_ACT_OVERRIDES, CPU_IMAGE_SIZE, CPU_SMOLVLA_OVERRIDES  # noqa: E402

log = logging.getLogger("benchmarks.estimate_accuracy")

MiB = 1024**2
RESULTS = Path(__file__).resolve().parent / "results"
UNLIMITED = 64 * 1024 * MiB
# name: policy, camera size, overrides, batch sizes measured (the search benchmark's cut-down models,
# and the defaults at a small camera size; SmolVLA resizes every camera to 512x512 by default, here
# to 128x128, which keeps its SigLIP tower, 16 text layers and expert at their defaults).
CONFIGS: dict[str, tuple[str, tuple[int, int], dict[str, object], tuple[int, ...]]] = {
    "act-cut": ("act", CPU_IMAGE_SIZE, dict(CPU_ACT_OVERRIDES), (16, 64, 128)),
    "smolvla-cut": ("smolvla", CPU_IMAGE_SIZE, dict(CPU_SMOLVLA_OVERRIDES), (16, 64, 128)),
    "act-default": ("act", (96, 128), {}, (4, 12, 24)),
    "smolvla-default": ("smolvla", (96, 128), {"resize_imgs_with_padding": (128, 128)}, (2, 6, 12)),
}


@dataclass
class Row:
    config: str
    policy: str
    device: str
    precision: str
    grad_checkpointing: bool
    batch_sizes: str
    measured_peaks_bytes: str  # the batch probes' peaks (CPU: resident set growth; CUDA: reserved)
    measured_allocated_bytes: str  # CUDA: the allocator's allocated peaks (CPU: as above)
    estimate_live_bytes: str  # the meta-device count at the same sizes
    estimate_fixed_bytes: int
    estimate_per_sample_bytes: int
    overhead_bytes: int  # the terms on top of the count (at the predicted maximum)
    measured_fixed_bytes: int  # least squares through the measured peaks
    measured_per_sample_bytes: int
    per_sample_error: float  # estimate / measured - 1
    allocated_per_sample_bytes: int  # CUDA: least squares through the allocated peaks (CPU: as measured)
    allocated_per_sample_error: float  # the live count's per-sample bytes / allocated - 1
    budget_bytes: int  # between the two largest measured peaks
    measured_max: int  # the largest size under the budget, the measured peaks interpolated
    predicted_max: int  # the estimate's, with its terms
    max_error: float  # predicted / measured - 1
    estimate_wall_s: float
    probes_wall_s: float


COLUMNS = [f.name for f in fields(Row)]


def least_squares(points: list[tuple[int, float]]) -> tuple[float, float]:
    n = len(points)
    mean_b = sum(b for b, _ in points) / n
    mean_p = sum(p for _, p in points) / n
    slope = sum((b - mean_b) * (p - mean_p) for b, p in points) / sum((b - mean_b) ** 2 for b, _ in points)
    return mean_p - slope * mean_b, slope


def interpolated_max(points: list[tuple[int, float]], budget: float) -> int:
    """The largest batch whose peak, linear between measured sizes, stays within ``budget``."""
    best = 0
    for (b1, p1), (b2, p2) in zip(points, points[1:], strict=False):
        for b in range(b1, b2 + 1):
            if p1 + (p2 - p1) * (b - b1) / (b2 - b1) <= budget:
                best = max(best, b)
    return best


def measure(spec: ModelSpec, device: str, precision: str, size: int, timeout_s: float) -> ProbeResult:
    request = ProbeRequest(
        kind="batch",
        model=spec,
        device=device,
        precision=precision,
        batch_size=size,
        memory_limit_bytes=UNLIMITED,
        warmup_steps=1,
        measure_steps=3,
    )
    result = run_probe(request, timeout_s)
    if not result.fits:
        raise SystemExit(f"{spec.policy} at batch {size}: {result.status} ({result.message})")
    log.info("  batch %d: peak %.1f MiB (%.0f s)", size, result.peak_reserved_bytes / MiB, result.wall_s)
    return result


def run_config(name: str, gc: bool, device: str, precision: str, timeout_s: float) -> Row:
    policy, image_size, overrides, ladder = CONFIGS[name]
    spec = ModelSpec(policy, 2, image_size, 6, 6, gradient_checkpointing=gc, overrides=dict(overrides))
    log.info("%s, checkpointing %s, %s %s", name, "on" if gc else "off", device, precision)
    t0 = time.perf_counter()
    request = E.estimate_request(spec, device, precision)
    request.estimate_batch_sizes = sorted({*E.ESTIMATE_BATCH_SIZES, *ladder})
    est = E.from_result(run_probe(request, timeout_s), spec)
    estimate_s = time.perf_counter() - t0
    terms = default_terms(est)
    results = [measure(spec, device, precision, size, timeout_s) for size in ladder]
    peaks = [(r.batch_size, float(r.peak_reserved_bytes)) for r in results]
    fixed, slope = least_squares(peaks)
    _, allocated_slope = least_squares([(r.batch_size, float(r.peak_allocated_bytes)) for r in results])
    counted_slope = least_squares([(b, est.live_at(b)) for b in ladder])[1]
    budget = int((peaks[-2][1] + peaks[-1][1]) / 2)
    truth = interpolated_max(peaks, budget)
    # E.predict_card takes a card's outside terms off; a budget is what is left inside the allocator.
    predicted = E.largest_batch(est, terms, budget)
    counted = dict(est.points)
    return Row(
        config=name,
        policy=policy,
        device=device,
        precision=precision,
        grad_checkpointing=gc,
        batch_sizes=" ".join(str(b) for b in ladder),
        measured_peaks_bytes=" ".join(str(int(p)) for _, p in peaks),
        measured_allocated_bytes=" ".join(str(r.peak_allocated_bytes) for r in results),
        estimate_live_bytes=" ".join(str(counted[b]) for b in ladder),
        estimate_fixed_bytes=int(est.fixed_bytes),
        estimate_per_sample_bytes=int(counted_slope * (1 + terms.fragmentation_share)),
        overhead_bytes=int(E.peak_bytes(est, terms, predicted) - est.live_at(predicted)),
        measured_fixed_bytes=int(fixed),
        measured_per_sample_bytes=int(slope),
        per_sample_error=round(counted_slope * (1 + terms.fragmentation_share) / slope - 1, 4),
        allocated_per_sample_bytes=int(allocated_slope),
        allocated_per_sample_error=round(counted_slope / allocated_slope - 1, 4),
        budget_bytes=budget,
        measured_max=truth,
        predicted_max=predicted,
        max_error=round(predicted / truth - 1, 4) if truth else float("nan"),
        estimate_wall_s=round(estimate_s, 1),
        probes_wall_s=round(sum(r.wall_s for r in results), 1),
    )


def describe(row: Row) -> str:
    return (
        f"{row.config:<16} {row.precision} gc {'on ' if row.grad_checkpointing else 'off'}  per sample: "
        f"estimate {row.estimate_per_sample_bytes / MiB:7.2f} MiB, measured {row.measured_per_sample_bytes / MiB:7.2f} "
        f"MiB ({100 * row.per_sample_error:+.1f}%)  max under {row.budget_bytes / MiB:.0f} MiB: predicted "
        f"{row.predicted_max}, measured {row.measured_max} ({100 * row.max_error:+.1f}%)  "
        f"[estimate {row.estimate_wall_s:.0f} s, probes {row.probes_wall_s:.0f} s]"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--precision", default=None, help="fp32 on the CPU, bf16 on CUDA by default")
    parser.add_argument("--only", action="append", choices=sorted(CONFIGS), help="these configurations only")
    parser.add_argument(
        "--out", type=Path, default=None, help="CSV (default results/estimate_accuracy_<device>.csv)"
    )
    parser.add_argument("--probe-timeout", type=float, default=1800.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    device_type = args.device.split(":")[0]
    precision = args.precision or ("fp32" if device_type == "cpu" else "bf16")
    out = args.out or RESULTS / f"estimate_accuracy_{device_type}.csv"
    rows: list[Row] = []
    for name in args.only or list(CONFIGS):
        for gc in (True, False):
            row = run_config(name, gc, args.device, precision, args.probe_timeout)
            print(describe(row), flush=True)
            rows.append(row)
            replace_csv(out, COLUMNS, (asdict(r) for r in rows))  # each row lands as it is measured
    worst_slope = max(abs(r.per_sample_error) for r in rows)
    worst_max = max(abs(r.max_error) for r in rows)
    print(f"worst per-sample error {100 * worst_slope:.1f}%, worst maximum error {100 * worst_max:.1f}%")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
