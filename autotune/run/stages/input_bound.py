"""Diagnose input boundness: if even the best worker setting leaves the step waiting on data over 10%
of its time, measure what would help (denser keyframes, smaller cameras) and estimate the rest."""

from __future__ import annotations

import logging

from autotune.run.context import RunContext
from autotune.run.datasets import write_variant
from autotune.run.prober import Prober
from autotune.run.stages.variant import VariantOutcome
from autotune.trainer.decoder import FFMPEG_PACKAGES
from autotune.tuning.feed_model import FeedModel, InputBound, Remedy, diagnose, is_input_bound
from autotune.tuning.study import StudyOutcome

log = logging.getLogger(__name__)

MIN_VARIANT_SIDE = 32  # the smaller-camera remedy halves each side, down to this


def diagnose_input(
    ctx: RunContext, prober: Prober, winner: VariantOutcome, workers: StudyOutcome, feed: FeedModel | None
) -> InputBound | None:
    """The input-bound diagnosis with its remedies, or None when the step is fed."""
    best = workers.best.result
    decision = winner.decision
    assert decision is not None
    if feed is None or not is_input_bound(best.data_s, best.updt_s):
        return None
    log.info("input-bound: measuring what would help")
    remedies = measure_remedies(ctx, prober, winner, workers, feed) if ctx.data.encoder else []
    other = decoder_remedy(ctx, prober.decoded.get(str(ctx.data.root), {}), workers, feed)
    return diagnose(
        batch_size=decision.batch_size,
        data_s=best.data_s,
        updt_s=best.updt_s,
        model=feed,
        cameras=ctx.data.cameras,
        remedies=[*remedies, *([other] if other else [])],
        decoder=ctx.decoder.measured if ctx.data.codec else "",
    )


def decoder_remedy(
    ctx: RunContext, costs: dict[str, float], workers: StudyOutcome, feed: FeedModel
) -> Remedy | None:
    """The other video decoder, where the decode probe measured it reading a sample faster: how to
    have the trainer use it, and what the loader model predicts with it."""
    current = ctx.decoder.measured
    other = next((name for name in costs if name != current), None)
    if other is None or current not in costs or costs[other] >= costs[current]:
        return None
    best = workers.best
    if other == "pyav" or ctx.decoder.trainer_default == "torchcodec":
        how = f"--dataset.video_backend={other}"
    else:  # the trainer's torchcodec does not load: it needs FFmpeg's shared libraries
        how = (
            f"FFmpeg's shared libraries installed ({FFMPEG_PACKAGES}) so that the trainer's torchcodec loads"
        )
    model = FeedModel(feed.batch_size, costs[other], best.result.updt_s, feed.cores)
    return Remedy(
        what=f"decode with {other} instead of {current}: {how}",
        measured=True,
        data_s=model.predicted_data_s(best.num_workers),
        updt_s=best.result.updt_s,
        samples_per_s=model.predicted_samples_per_s(best.num_workers),
        detail=f"a sample reads in {costs[other] * 1000:.1f} ms with {other} instead of "
        f"{costs[current] * 1000:.1f} ms with {current} (measured; data_s and samples/s predicted)",
    )


def measure_remedies(
    ctx: RunContext, prober: Prober, winner: VariantOutcome, workers: StudyOutcome, feed: FeedModel
) -> list[Remedy]:
    """Decode (and, for smaller images, train) small synthetic variants of the data, measured.

    Variants are written with the data's codec and shapes; their decode times are scaled by
    how the user's own data compares with our encoding at the same size.
    """
    decision = winner.decision
    assert decision is not None
    data, cfg = ctx.data, ctx.cfg
    best = workers.best
    h, w = data.image_size
    half = (max(MIN_VARIANT_SIDE, h // 4 * 2), max(MIN_VARIANT_SIDE, w // 4 * 2))
    folder = cfg.results / "datasets"

    def decode_s(size: tuple[int, int], gop: int) -> float:
        root = write_variant(data, folder, size, gop, cfg.seed, cfg.probe_timeout_s)
        return prober.decode(winner.variant, root)

    remedies: list[Remedy] = []
    reference = decode_s((h, w), 2)
    if reference <= 0:
        return remedies
    scale = feed.decode_s_per_sample / reference
    dense = decode_s((h, w), 1) * scale
    dense_model = FeedModel(decision.batch_size, dense, best.result.updt_s, feed.cores)
    remedies.append(
        Remedy(
            what="a keyframe every frame instead of every 2",
            measured=True,
            data_s=dense_model.predicted_data_s(best.num_workers),
            updt_s=best.result.updt_s,
            samples_per_s=dense_model.predicted_samples_per_s(best.num_workers),
            detail=f"a sample reads in {dense * 1000:.1f} ms instead of "
            f"{feed.decode_s_per_sample * 1000:.1f} ms (measured)",
        )
    )
    small_decode = decode_s(half, 2) * scale
    small_root = write_variant(data, folder, half, 2, cfg.seed, cfg.probe_timeout_s)  # written just now
    probe = prober.measure(winner.variant, decision.batch_size, half, small_root)
    if probe.fits:
        small = FeedModel(decision.batch_size, small_decode, probe.step_time_s, feed.cores)
        n_workers = min(feed.cores, small.workers_needed)
        remedies.append(
            Remedy(
                what=f"cameras at {half[0]}x{half[1]} instead of {h}x{w}",
                measured=True,
                data_s=small.predicted_data_s(n_workers),
                updt_s=probe.step_time_s,
                samples_per_s=small.predicted_samples_per_s(n_workers),
                detail=f"a sample reads in {small_decode * 1000:.1f} ms and the step takes "
                f"{probe.step_time_s:.3f} s at batch {decision.batch_size} (measured)",
            )
        )
    return remedies
