"""The regression alarm: a run's figures against the history of the same conditions.

Each run (a tune, or the nightly check of an up-to-date profile) is compared, metric by metric
(max batch, samples/s, data_s, updt_s), with the median of the last runs under the same conditions
in ``runs.csv``. What counts as a change is set by measured spread, not a fixed percentage: the
run-to-run spread of those earlier runs, or this run's own step spread where that is larger; so
the speeds are judged from the third earlier run on (one run's step spread alone understates how
much runs differ: measured on a busy 2-core CPU, a check 20% below the tune it followed, with a
step spread of 4%), the maximum from the first, where one size is noise. A change beyond three
times the noise is a regression (or an improvement), named with the
fingerprint fields that changed since the last run. Alerts go to stdout, ``alerts.csv`` and the
exit status (:data:`EXIT_REGRESSION`).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXIT_REGRESSION = 4
HISTORY = 5  # earlier runs the reference is the median of
NOISE_FACTOR = 3.0
MIN_HISTORY_FOR_SPREAD = 3
HIGHER_IS_BETTER = {"max_batch_size": True, "samples_per_s": True, "data_s": False, "updt_s": False}
# The columns of runs.csv that say under which conditions a row was measured.
CONDITION_COLUMNS = (
    "policy", "device", "precision", "grad_checkpointing", "cameras", "image_h", "image_w",
    "memory_limit_bytes", "dataset",
)  # fmt: skip
# Fingerprint columns of runs.csv, and how a change of each is named.
FINGERPRINT_NAMES = {
    "gpu_uuid": "GPU",
    "driver_version": "driver",
    "cuda_driver_version": "CUDA",
    "torch_version": "torch",
    "cpu_model": "CPU",
    "cpu_cores": "cores",
    "lerobot_version": "LeRobot",
}


@dataclass
class Alert:
    kind: str  # regression or improvement
    metric: str
    before: float
    after: float
    change: float  # relative
    noise: float  # relative: the spread it was judged against
    changed: str  # the fingerprint fields that changed, "driver 580.65 -> 590.12"

    @property
    def text(self) -> str:
        label = "samples/s" if self.metric == "samples_per_s" else self.metric.replace("_size", "")
        where = f"{self.changed}: " if self.changed else ""
        return (
            f"{self.kind}: {where}{label} {_number(self.before)} -> {_number(self.after)} "
            f"({self.change:+.0%}, noise {self.noise:.0%})"
        )


def _number(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def history(runs_csv: Path, row: dict[str, Any]) -> list[dict[str, Any]]:
    """Earlier ``ok`` and ``checked`` rows of runs.csv under the conditions of ``row``, oldest first."""
    if not runs_csv.exists():
        return []
    from autotune.nightly.runs import read_runs  # rows holding what no run writes are left out

    frame, _ = read_runs(runs_csv)
    same = frame[(frame.status.isin(["ok", "checked"])) & (frame.run_id != str(row["run_id"]))]
    for column in CONDITION_COLUMNS:
        if column in same.columns:
            same = same[same[column] == str(row.get(column, ""))]
    return same.to_dict("records")


def spread(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) >= 2 else 0.0


def compare(
    previous: list[dict[str, Any]], current: dict[str, Any], step_noise: dict[str, float]
) -> list[Alert]:
    """Alerts for the metrics of ``current`` that moved beyond the noise against ``previous``.

    ``step_noise``: this run's own spread per metric (absolute), e.g. of its per-step samples/s.
    """
    alerts = []
    last = previous[-1] if previous else {}
    changed = ", ".join(
        f"{name} {last.get(column)} -> {current.get(column)}"
        for column, name in FINGERPRINT_NAMES.items()
        if last
        and str(last.get(column, "")) != str(current.get(column, ""))
        and last.get(column) not in (None, "")
    )
    for metric, higher_is_better in HIGHER_IS_BETTER.items():
        values = [float(r[metric]) for r in previous[-HISTORY:] if r.get(metric) not in (None, "")]
        now = current.get(metric)
        if not values or now in (None, ""):
            continue
        now = float(now)
        reference = statistics.median(values)
        if reference == 0:
            continue
        enough = len(values) >= MIN_HISTORY_FOR_SPREAD
        if metric == "max_batch_size":
            # A certified maximum moves by one size with the CPU's repeat noise, whatever the history.
            noise = max(spread(values) if enough else 0.0, 1.0)
        elif not enough:
            continue  # no run-to-run spread measured yet: a single run's step spread understates it
        else:
            noise = max(spread(values), step_noise.get(metric, 0.0))
        if metric == "data_s" and max(now, reference) < 0.1 * float(current.get("updt_s") or 0):
            continue  # waiting that stays under a tenth of the step changes nothing
        if abs(now - reference) <= NOISE_FACTOR * noise:
            continue
        better = (now > reference) == higher_is_better
        alerts.append(
            Alert(
                kind="improvement" if better else "regression",
                metric=metric,
                before=reference,
                after=now,
                change=(now - reference) / reference,
                noise=noise / reference,
                changed=changed,
            )
        )
    return alerts


def step_noise(batch_size: int, data_times: Sequence[float], step_times: Sequence[float]) -> dict[str, float]:
    """This run's own spread (absolute) of samples/s, data_s and updt_s over its measured steps."""
    per_step = [batch_size / (d + u) for d, u in zip(data_times, step_times, strict=False) if d + u > 0]
    return {"samples_per_s": spread(per_step), "data_s": spread(data_times), "updt_s": spread(step_times)}


def alert_row(alert: Alert) -> dict[str, Any]:
    return {
        "kind": alert.kind,
        "metric": alert.metric,
        "before": round(alert.before, 6),
        "after": round(alert.after, 6),
        "change": round(alert.change, 4),
        "noise": round(alert.noise, 4),
        "changed": alert.changed,
        "message": alert.text,
    }
