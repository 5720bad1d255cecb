"""The video decoders LeRobot uses, torchcodec and PyAV, on this machine: per codec, per camera count,
per number of DataLoader workers.

Two measurements, each by real probe children over real synthetic LeRobot datasets:

- ``decode``: one process reading samples (every camera's frame at a random timestamp, as a
  DataLoader worker does), with each decoder: milliseconds per sample and per frame, at the
  camera size of the run (``--decode-size``, default 480x640: LeRobot's usual camera);
- ``workers``: the real DataLoader (LeRobot 0.6.1's: spawn, persistent workers, prefetch 4) feeding
  the real training step (a cut-down ACT) at ``--batch``, with each decoder and each number of
  workers in ``--workers``: ``data_s``, ``updt_s`` and samples/s per step, at ``--train-size``.

Datasets: the synthetic one autotune writes (2 cameras, a keyframe every 2 frames) and one of 3
cameras, each encoded with AV1 (libsvtav1, LeRobot's default) and with h264.

    python benchmarks/decoders.py                      # this CPU: about 10 minutes on 2 cores
    python benchmarks/decoders.py --workers 0 2 4 8 --train-size 240x320

Writes ``benchmarks/results/decoders_<device>.csv`` (``--out``) and prints one line per row, then
each dataset's faster decoder per measurement.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from autotune.outputs.results import replace_csv
from autotune.run.probe_client import run_probe
from autotune.units import parse_image_size
from probes.catalogue import cut_down
from probes.dataset.decode import BACKENDS
from probes.protocol import ModelSpec, ProbeRequest
from probes.synthetic import write_synthetic_dataset

log = logging.getLogger("benchmarks.decoders")

SMALL_ACT = cut_down("act", "cpu_second")
CODECS = {"av1": "libsvtav1", "h264": "h264"}
COLUMNS = [
    "measure",  # decode or workers
    "codec",
    "cameras",
    "image_h",
    "image_w",
    "video_backend",
    "num_workers",
    "prefetch_factor",
    "ms_per_sample",
    "ms_per_frame",
    "data_s",
    "updt_s",
    "samples_per_s",
    "data_fraction",
    "status",
    "batch_size",
    "device",
    "cores",
    "load_1min",
]


def dataset(
    folder: Path, codec: str, cameras: int, size: tuple[int, int], episodes: int, length: int
) -> Path:
    h, w = size
    name = f"decoders-{codec}-{cameras}cam-{h}x{w}-{episodes}x{length}"
    return write_synthetic_dataset(
        folder / name, cameras=cameras, image_size=size, fps=30, episodes=episodes,
        episode_length=length, codec=CODECS[codec], gop=2,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--decode-size", type=parse_image_size, default=(480, 640))
    parser.add_argument("--train-size", type=parse_image_size, default=(96, 128))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2, 4])
    parser.add_argument("--samples", type=int, default=24, help="samples per decode measurement")
    parser.add_argument("--measure-steps", type=int, default=5)
    parser.add_argument("--data", type=Path, default=Path("results/datasets"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[bench] %(message)s", stream=sys.stderr)
    device_type = "cuda" if args.device.startswith("cuda") else "cpu"
    out = args.out or Path(f"benchmarks/results/decoders_{device_type}.csv")
    cores = os.cpu_count() or 1
    rows: list[dict[str, object]] = []
    started = time.perf_counter()

    def row(**fields: object) -> None:
        rows.append({"batch_size": args.batch, "device": args.device, "cores": cores,
                     "load_1min": round(os.getloadavg()[0], 2), **fields})  # fmt: skip
        log.info("%s", ", ".join(f"{k}={v}" for k, v in rows[-1].items() if v not in ("", None)))

    for codec in CODECS:
        for cameras in (2, 3):
            # Decoding alone, at the camera size of a real run.
            root = dataset(args.data, codec, cameras, args.decode_size, episodes=4, length=60)
            spec = ModelSpec("act", cameras, args.decode_size, 6, 6, False, SMALL_ACT)
            decode = run_probe(
                ProbeRequest(kind="decode", model=spec, dataset_root=str(root), measure_steps=args.samples),
                900,
            )
            for backend in BACKENDS:
                seconds = decode.decode_s_by_backend.get(backend)
                row(
                    measure="decode", codec=codec, cameras=cameras, image_h=args.decode_size[0],
                    image_w=args.decode_size[1], video_backend=backend,
                    ms_per_sample=round(seconds * 1000, 3) if seconds else "",
                    ms_per_frame=round(seconds * 1000 / cameras, 3) if seconds else "",
                    status="ok" if seconds else decode.backend_errors.get(backend, decode.message),
                )  # fmt: skip
            # The DataLoader into the training step, per decoder and number of workers.
            root = dataset(args.data, codec, cameras, args.train_size, episodes=12, length=150)
            spec = ModelSpec("act", cameras, args.train_size, 6, 6, False, SMALL_ACT)
            for backend in BACKENDS:
                for workers in args.workers:
                    prefetch = 4 if workers > 0 else None  # lerobot-train 0.6.1's default
                    result = run_probe(
                        ProbeRequest(
                            kind="workers", model=spec, device=args.device, batch_size=args.batch,
                            memory_limit_bytes=1 << 62, warmup_steps=1, measure_steps=args.measure_steps,
                            dataset_root=str(root), num_workers=workers, prefetch_factor=prefetch,
                            video_backend=backend,
                        ),
                        900,
                    )  # fmt: skip
                    total = result.data_s + result.updt_s
                    row(
                        measure="workers", codec=codec, cameras=cameras, image_h=args.train_size[0],
                        image_w=args.train_size[1], video_backend=backend, num_workers=workers,
                        prefetch_factor=prefetch or "", ms_per_sample=round(result.decode_s_per_sample * 1000, 3),
                        ms_per_frame=round(result.decode_s_per_sample * 1000 / cameras, 3),
                        data_s=round(result.data_s, 4), updt_s=round(result.updt_s, 4),
                        samples_per_s=round(result.samples_per_s, 3),
                        data_fraction=round(result.data_s / total, 4) if total > 0 else "",
                        status=result.status if result.fits else f"{result.status}: {result.message}",
                    )  # fmt: skip
    replace_csv(out, COLUMNS, rows)
    log.info("%d rows in %.0f s: %s", len(rows), time.perf_counter() - started, out)
    for codec in CODECS:
        for cameras in (2, 3):
            mine = [r for r in rows if r["codec"] == codec and r["cameras"] == cameras]
            decode = {r["video_backend"]: r["ms_per_frame"] for r in mine if r["measure"] == "decode"}
            fed = {
                b: max((r["samples_per_s"] for r in mine if r["measure"] == "workers" and r["video_backend"] == b),
                       default=0.0)
                for b in BACKENDS
            }  # fmt: skip
            print(
                f"{codec} x {cameras} cameras: ms per frame at {args.decode_size[0]}x{args.decode_size[1]} "
                + ", ".join(f"{b} {v}" for b, v in decode.items())
                + f"; best samples/s at {args.train_size[0]}x{args.train_size[1]} "
                + ", ".join(f"{b} {v}" for b, v in fed.items())
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
