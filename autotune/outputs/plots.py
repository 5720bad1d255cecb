"""PNG plots in the results folder: memory and throughput against batch size; the worker study."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

GiB = 1024**3


def _pyplot() -> Any:
    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass
class RunCharts:
    """What a run's two plots draw, as plain rows (see :func:`draw_run`)."""

    folder: Path
    stem: str  # <policy>-<run id>
    title: str
    probes: list[dict[str, Any]]  # batch_size, status, peak_reserved_bytes, samples_per_s
    budget_bytes: int
    headroom: float
    max_batch: int
    batch_size: int
    fit: tuple[float, float] | None  # the memory model: fixed and per-sample bytes
    trials: list[dict[str, Any]]  # num_workers, prefetch_factor, samples_per_s, data_s, updt_s, status
    chosen_workers: int


def draw_run(charts: RunCharts) -> dict[str, str]:
    """Both plots of a run, written beside its profile; their paths as the profile records them."""
    batch_png = plot_batch(
        charts.folder / f"{charts.stem}-batch.png",
        title=charts.title,
        probes=charts.probes,
        budget_bytes=charts.budget_bytes,
        headroom=charts.headroom,
        max_batch=charts.max_batch,
        batch_size=charts.batch_size,
        fit=charts.fit,
    )
    workers_png = plot_workers(
        charts.folder / f"{charts.stem}-workers.png",
        title=f"{charts.title}, batch {charts.batch_size}",
        trials=charts.trials,
        chosen=charts.chosen_workers,
    )
    return {"batch": str(batch_png), "workers": str(workers_png)}


def plot_batch(
    path: Path,
    *,
    title: str,
    probes: list[dict[str, Any]],
    budget_bytes: int,
    headroom: float,
    max_batch: int,
    batch_size: int,
    fit: tuple[float, float] | None,
) -> Path:
    """Peak memory (left) and samples/s (right) against batch size, with the budget, the
    certified maximum and the recommendation marked. ``probes``: dicts with batch_size, status,
    peak_reserved_bytes, samples_per_s."""
    plt = _pyplot()
    fig, mem_ax = plt.subplots(figsize=(8, 4.8))
    ok = [p for p in probes if p["status"] == "ok"]
    _memory(mem_ax, probes, budget_bytes, headroom, max_batch, fit)
    _marks(mem_ax, budget_bytes, max_batch, batch_size)
    speed_ax = mem_ax.twinx()
    timed = sorted((p for p in ok if p.get("samples_per_s")), key=lambda p: p["batch_size"])
    speed_ax.plot(
        [p["batch_size"] for p in timed],
        [p["samples_per_s"] for p in timed],
        color="tab:purple",
        marker="o",
        markersize=3,
        alpha=0.7,
        label="samples/s",
    )
    speed_ax.set_ylabel("samples/s")
    lines = mem_ax.get_legend_handles_labels()
    more = speed_ax.get_legend_handles_labels()
    mem_ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper left")
    mem_ax.set_title(title, fontsize=9)
    return _save(plt, fig, path)


def _memory(
    mem_ax: Any,
    probes: list[dict[str, Any]],
    budget_bytes: int,
    headroom: float,
    max_batch: int,
    fit: tuple[float, float] | None,
) -> None:
    """The probes' peaks (out of memory drawn at the budget), the memory model, the budget lines."""
    ok = [p for p in probes if p["status"] == "ok"]
    oom = [p for p in probes if p["status"] == "oom"]
    mem_ax.scatter(
        [p["batch_size"] for p in ok],
        [p["peak_reserved_bytes"] / GiB for p in ok],
        color="tab:blue",
        label="probe fits (peak reserved)",
        zorder=3,
    )
    if oom:
        mem_ax.scatter(
            [p["batch_size"] for p in oom],
            [budget_bytes / GiB] * len(oom),
            marker="x",
            color="tab:red",
            label="out of memory",
            zorder=3,
        )
    top = max([p["batch_size"] for p in probes] + [max_batch + 1])
    if fit is not None:
        fixed, per_sample = fit
        mem_ax.plot(
            [0, top],
            [fixed / GiB, (fixed + per_sample * top) / GiB],
            color="tab:blue",
            alpha=0.4,
            linestyle=":",
            label="memory model",
        )
    mem_ax.axhline(budget_bytes / GiB, color="tab:red", linewidth=1, label="budget")
    mem_ax.axhline(
        (1 - headroom) * budget_bytes / GiB,
        color="tab:orange",
        linewidth=1,
        linestyle="--",
        label=f"budget less {headroom:.0%} headroom",
    )
    mem_ax.set_xlabel("batch size")
    mem_ax.set_ylabel("peak memory (GiB)")


def _marks(mem_ax: Any, budget_bytes: int, max_batch: int, batch_size: int) -> None:
    """The certified maximum and the recommended batch."""
    mem_ax.axvline(max_batch, color="tab:red", linestyle=":", linewidth=1)
    mem_ax.axvline(batch_size, color="tab:green", linestyle="-", linewidth=1.5)
    mem_ax.annotate(
        f"max {max_batch}",
        (max_batch, budget_bytes / GiB),
        textcoords="offset points",
        xytext=(4, -12),
        color="tab:red",
        fontsize=8,
    )
    mem_ax.annotate(
        f"recommended {batch_size}",
        (batch_size, 0),
        xycoords=("data", "axes fraction"),
        textcoords="offset points",
        xytext=(4, 6),
        color="tab:green",
        fontsize=8,
    )


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_workers(path: Path, *, title: str, trials: list[dict[str, Any]], chosen: int) -> Path:
    """samples/s (top), data_s and updt_s (bottom) against num_workers, one series per
    prefetch_factor. ``trials``: dicts with num_workers, prefetch_factor, samples_per_s, data_s,
    updt_s, status."""
    plt = _pyplot()
    fig, (speed_ax, time_ax) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    ok = [t for t in trials if t["status"] == "ok"]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, prefetch in enumerate(sorted({t["prefetch_factor"] or 0 for t in ok})):
        series = sorted(
            (t for t in ok if (t["prefetch_factor"] or 0) == prefetch), key=lambda t: t["num_workers"]
        )
        label = f"prefetch {prefetch}" if prefetch else "no workers"
        xs = [t["num_workers"] for t in series]
        color = colors[i % len(colors)]
        speed_ax.plot(xs, [t["samples_per_s"] for t in series], marker="o", color=color, label=label)
        for key, marker, linestyle in (("data_s", "o", "--"), ("updt_s", "s", ":")):
            time_ax.plot(
                xs,
                [t[key] for t in series],
                marker=marker,
                linestyle=linestyle,
                color=color,
                label=f"{key}, {label}",
            )
    time_ax.xaxis.get_major_locator().set_params(integer=True)
    speed_ax.axvline(chosen, color="black", linestyle="--", linewidth=1, label=f"chosen: {chosen}")
    speed_ax.set_ylabel("samples/s")
    time_ax.set_ylabel("seconds per step")
    time_ax.set_xlabel("num_workers")
    speed_ax.legend(fontsize=7)
    time_ax.legend(fontsize=7)
    speed_ax.set_title(title, fontsize=9)
    return _save(plt, fig, path)
