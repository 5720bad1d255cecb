"""Where a batch probe's time goes: interpreter, imports, build, batch, warm-up, measured steps, soak.

Each point is a fresh interpreter, as a probe child is, that runs a batch probe's own code
(``probes.training.build``, ``timed_steps``) and times each phase: the interpreter's start (the
parent's spawn to the script's first line), ``import torch, torchvision``, the probes' imports, the
model's build with its optimizer, drawing the synthetic batch, the warm-up, the measured steps, and
one soak step's redraw (``vary_padding``). ``wall_s`` is the parent's spawn to the child's exit.

Two recipes: ``before`` is the batch as probes made it before issue 21 (every tensor drawn on the
host with ``torch.randint`` and, in the soak, the whole batch drawn again at every step); ``after``
is today's (drawn on the probe's device and handed over as the DataLoader hands it, pinned on
CUDA; the soak draws only new episode boundaries). On the CPU both draw on the host, so the batch
costs the same; the soak's redraw is what differs. The ``draw`` points build no model: they draw
ACT's batch of two 480x640 cameras at the sizes a GPU search reaches (256, 1,024) and redraw it
as the soak would.

    python benchmarks/probe_time.py                 # the CPU points, benchmarks/results/probe_time_cpu.csv
    python benchmarks/probe_time.py --device cuda   # on a GPU: probe_time_cuda.csv
"""

from __future__ import annotations

import time

CHILD_STARTED = time.time()  # before any import of the child: when the interpreter reached this line

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from dataclasses import asdict, dataclass, fields  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SOAK_REDRAWS = 3
# name: policy, camera size, cut-down set (probes/catalogue.py CUT_DOWN; None: the full model),
# batch sizes, whether a model is built and trained. ACT cut down as the CLI tests cut it (the
# ResNet-18 backbone stays), SmolVLA as its quick look.
POINTS: dict[str, tuple[str, tuple[int, int], str | None, tuple[int, ...], bool]] = {
    "act-small": ("act", (96, 128), "tests", (8, 64), True),
    "smolvla-small": ("smolvla", (96, 128), "quick", (2, 8), True),
    "act-full": ("act", (480, 640), None, (2,), True),
    "act-draw": ("act", (480, 640), None, (256, 1024), False),
}
RECIPES = ("before", "after")


@dataclass
class Row:
    point: str
    policy: str
    device: str
    recipe: str  # before (host batch, whole soak redraw) or after (device batch, padding redraw)
    image_h: int
    image_w: int
    overrides: str
    batch_size: int
    interpreter_s: float  # spawn to the script's first line
    import_torch_s: float  # import torch, torchvision
    import_probes_s: float  # the probes' modules
    build_s: float  # the model on the device and its training step (optimizer)
    batch_s: float  # drawing the synthetic batch (and, on CUDA after, pinning it)
    warmup_s: float
    warmup_steps: int
    measured_s: float
    measure_steps: int
    step_time_s: float  # the measured steps' median, as the probe reports it
    soak_redraw_s: float  # one soak step's redraw, the mean of SOAK_REDRAWS
    probe_s: float  # imports to the end: everything the child did
    wall_s: float  # spawn to exit, as the parent saw it
    teardown_s: float  # what the wall time holds beyond the interpreter's start and the phases: exit
    peak_rss_mib: float  # the child's VmHWM
    load_1m: float  # the machine's 1-minute load average when the point started


def legacy_batch(module: Any, cfg: Any, batch_size: int, generator: Any) -> dict[str, Any]:
    """The synthetic batch as probes drew it before issue 21: every tensor on the host."""
    import torch

    from probes.keys import ACTION, ACTION_IS_PAD, STATE, image_keys

    host = torch.Generator().manual_seed(int(generator.initial_seed()))
    h, w = cfg.image_size
    batch: dict[str, Any] = {
        k: torch.randint(0, 256, (batch_size, 3, h, w), dtype=torch.uint8, generator=host)
        for k in image_keys(cfg.cameras)
    }
    batch[STATE] = torch.randn(batch_size, cfg.state_dim, generator=host)
    batch[ACTION] = torch.randn(batch_size, cfg.chunk_size, cfg.action_dim, generator=host)
    if module.__name__.endswith("act.model"):
        frame = torch.randint(0, 4 * cfg.chunk_size, (batch_size, 1), generator=host)
        batch[ACTION_IS_PAD] = frame + torch.arange(cfg.chunk_size) >= 4 * cfg.chunk_size
    else:
        batch[ACTION_IS_PAD] = torch.zeros(batch_size, cfg.chunk_size, dtype=torch.bool)
        batch["task"] = ["pick up the cube and place it in the bin"] * batch_size
    return batch


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def overrides_of(point: str) -> dict[str, Any]:
    """The point's ``Config`` overrides. The catalogue is imported here, not at the top: a child
    times the probes' imports itself."""
    from probes import catalogue

    policy, _, cut, _, _ = POINTS[point]
    return catalogue.cut_down(policy, cut) if cut else {}


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One point in this fresh interpreter: each phase timed as a probe runs it."""
    t: dict[str, Any] = {"interpreter_s": CHILD_STARTED - spec["spawned"]}
    t0 = time.perf_counter()
    import torch
    import torchvision  # noqa: F401

    t["import_torch_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    from probes import catalogue, training
    from probes.device import resolve_device, synchronize
    from probes.policies.tensors import redraw_padding
    from probes.protocol import ModelSpec, ProbeRequest
    from probes.train_step import prepare_batch, warm_up

    t["import_probes_s"] = time.perf_counter() - t1
    policy, image_size, _, _, trains = POINTS[spec["point"]]
    overrides = overrides_of(spec["point"])
    model = ModelSpec(policy, 2, tuple(image_size), 6, 6, False, dict(overrides))
    request = ProbeRequest(
        kind="batch", model=model, device=spec["device"], precision="fp32", batch_size=spec["batch_size"],
        memory_limit_bytes=64 * 1024**3, warmup_steps=1, measure_steps=3, vary_padding=True,
    )  # fmt: skip
    t2 = time.perf_counter()
    if trains:
        trainer = training.build(request, None, enforce=False)
        device, module, cfg = trainer.device, trainer.model_module, trainer.cfg
    else:
        device = resolve_device(spec["device"])
        module, cfg = catalogue.model_module(policy), catalogue.build_config(model)
    synchronize(device)
    t["build_s"] = time.perf_counter() - t2 if trains else 0.0
    before = spec["recipe"] == "before"
    generator = torch.Generator(device=device).manual_seed(0)

    def draw() -> dict[str, Any]:
        if before:
            return legacy_batch(module, cfg, request.batch_size, generator)
        return training.loader_batch(module.synthetic_batch(cfg, request.batch_size, generator), device)

    t3 = time.perf_counter()
    batch = draw()
    synchronize(device)
    t["batch_s"] = time.perf_counter() - t3
    redraws = []
    for _ in range(SOAK_REDRAWS):
        t4 = time.perf_counter()
        batch = draw() if before else redraw_padding(batch, generator)
        synchronize(device)
        redraws.append(time.perf_counter() - t4)
    t["soak_redraw_s"] = sum(redraws) / len(redraws)
    t.update(warmup_s=0.0, warmup_steps=0, measured_s=0.0, measure_steps=0, step_time_s=0.0)
    if trains:
        phases: dict[str, float] = {}

        def timed_warm_up(step: Any, run_step: Any, min_steps: int) -> int:
            t5 = time.perf_counter()
            taken = warm_up(step, run_step, min_steps)
            phases["warmup_s"] = time.perf_counter() - t5
            phases["measured_from"] = time.perf_counter()
            return taken

        fields_ = training.timed_steps(
            request,
            device,
            trainer.meter,
            trainer.step,
            lambda _: prepare_batch(batch, device),
            timed_warm_up,
        )
        t.update(
            warmup_s=phases["warmup_s"],
            warmup_steps=fields_["warmup_steps"],
            measured_s=time.perf_counter() - phases["measured_from"],
            measure_steps=fields_["steps"],
            step_time_s=fields_["step_time_s"],
        )
    t["probe_s"] = time.perf_counter() - t0
    t["peak_rss_mib"] = peak_rss_mib()
    return t


def run_point(point: str, batch_size: int, recipe: str, device: str) -> Row:
    from probes.catalogue import set_pairs

    policy, image_size, _, _, _ = POINTS[point]
    label = " ".join(set_pairs(overrides_of(point)))
    load = os.getloadavg()[0]
    spawned = time.time()
    t0 = time.perf_counter()
    spec = {"point": point, "batch_size": batch_size, "recipe": recipe, "device": device, "spawned": spawned}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{point} batch {batch_size} {recipe}: {done.stderr[-2000:]}")
    t = json.loads(done.stdout.strip().splitlines()[-1])
    t = {k: round(v, 6) if isinstance(v, float) else v for k, v in t.items()}
    teardown = round(wall - t["interpreter_s"] - t["probe_s"], 6)
    wall = round(wall, 6)
    return Row(
        point, policy, device, recipe, *image_size, label, batch_size, wall_s=wall, teardown_s=teardown,
        load_1m=load, **t,
    )  # fmt: skip


def describe(r: Row) -> str:
    return (
        f"{r.point:13s} batch {r.batch_size:5d} {r.recipe:6s}: interpreter {r.interpreter_s:.2f} s, "
        f"torch {r.import_torch_s:.2f} s, probes {r.import_probes_s:.2f} s, build {r.build_s:.2f} s, "
        f"batch {r.batch_s:.3f} s, warm-up {r.warmup_s:.2f} s ({r.warmup_steps}), measured "
        f"{r.measured_s:.2f} s ({r.measure_steps} x {r.step_time_s:.3f} s), soak redraw "
        f"{r.soak_redraw_s:.4f} s/step, exit {r.teardown_s:.2f} s; {r.wall_s:.1f} s in all, "
        f"peak {r.peak_rss_mib:.0f} MiB (load {r.load_1m:.1f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--only", action="append", choices=sorted(POINTS), help="these points only")
    parser.add_argument(
        "--out", type=Path, default=None, help="CSV (default results/probe_time_<device>.csv)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    sys.path.insert(0, str(ROOT))
    from autotune.outputs.results import replace_csv

    out = args.out or RESULTS / f"probe_time_{args.device.split(':')[0]}.csv"
    columns = [f.name for f in fields(Row)]
    rows: list[Row] = []
    for point in args.only or list(POINTS):
        for batch_size in POINTS[point][3]:
            for recipe in RECIPES:
                row = run_point(point, batch_size, recipe, args.device)
                print(describe(row), flush=True)
                rows.append(row)
                replace_csv(out, columns, (asdict(r) for r in rows))  # each row lands as it is measured
    for point in args.only or list(POINTS):
        for batch_size in POINTS[point][3]:
            pair = {r.recipe: r for r in rows if r.point == point and r.batch_size == batch_size}
            if SOAK_REDRAWS and pair["after"].soak_redraw_s > 0:
                ratio = pair["before"].soak_redraw_s / pair["after"].soak_redraw_s
                print(f"{point} batch {batch_size}: a soak step's redraw {ratio:.0f}x cheaper after")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
