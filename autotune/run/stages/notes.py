"""The notes a profile carries beside its numbers: caveats a person should read, and with
``--compare`` what gradient checkpointing costs in speed (against the noise) and buys in memory."""

from __future__ import annotations

from autotune.run.context import RunContext
from autotune.run.stages.variant import VariantOutcome, variant_label, variant_noise
from autotune.tuning.noise import NO_DIFFERENCE, Decision, Verdict, judge, single
from autotune.tuning.study import StudyOutcome
from autotune.units import format_bytes


def run_notes(
    ctx: RunContext,
    winner: VariantOutcome,
    outcomes: list[VariantOutcome],
    workers: StudyOutcome,
    peak_reserved: int,
) -> list[str]:
    """Caveats a person should read beside the numbers."""
    cfg = ctx.cfg
    decision = winner.decision
    assert decision is not None
    batch = decision.batch_size
    notes = []
    if ctx.data.kind == "synthetic":
        notes.append(
            "tuned on autotune's synthetic dataset: point --dataset.repo_id/--dataset.root at "
            "your own data (or tune with --dataset) before training"
        )
    if winner.search.capped:
        notes.append(f"the search stopped at --max-batch {cfg.max_batch} without running out of memory")
    notes.extend(winner.search.notes)  # a kernel's limit, ambiguous out-of-memory taken as one
    budget = winner.search.budget_bytes  # the cap the probes really had
    if peak_reserved > (1 - cfg.headroom) * budget:
        notes.append(
            f"the {cfg.headroom:.0%} headroom cannot be kept: batch {batch} already peaks at "
            f"{format_bytes(peak_reserved)} of the {format_bytes(budget)} budget"
        )
    if decision.lowered_by_soak:
        failed = [s for s in decision.soaks if s.lowered]
        notes.append(
            "the soak lowered the batch: "
            + ", ".join(f"batch {s.batch_size} failed ({s.reason})" for s in failed)
        )
    # Each comparison that could have changed the answer, with its figures and spread.
    for d in (decision.decision, winner.choice):
        if d is not None and d.challenger and (d.pairs or d.chosen != d.default):
            notes.append(d.text)
    undrained = [t for t in workers.trials if t.result.fits and not t.result.drained]
    if undrained:
        notes.append(
            f"{len(undrained)} worker trial(s) stopped before their prefetched batches were used "
            "up; their data_s may be optimistic"
        )
    if len(outcomes) > 1:
        notes.extend(comparison_notes(outcomes, winner.choice))
    return notes


def comparison_notes(outcomes: list[VariantOutcome], choice: Decision | None = None) -> list[str]:
    """What gradient checkpointing costs in speed (with its spread, against the noise) and buys in
    memory, per precision."""
    notes = []
    by_key = {(o.variant.precision, o.variant.grad_checkpointing): o for o in outcomes}
    for precision in dict.fromkeys(o.variant.precision for o in outcomes):
        on, off = by_key.get((precision, True)), by_key.get((precision, False))
        if not on or not off or not on.decision or not off.decision:
            continue
        text = f"{precision}: checkpointing fits batch {on.search.max_batch} against {off.search.max_batch} without"
        if on.model and off.model:
            text += (
                f" ({format_bytes(on.model.per_sample_bytes)} per sample against "
                f"{format_bytes(off.model.per_sample_bytes)})"
            )
        if off.samples_per_s > 0 and on.samples_per_s > 0:
            verdict = checkpointing_verdict(on, off, outcomes, choice)
            text += f", at {verdict.figures()} the samples/s"
            text += "" if verdict.clears else f": {NO_DIFFERENCE}"
        notes.append(text)
    return notes


def checkpointing_verdict(
    on: VariantOutcome, off: VariantOutcome, outcomes: list[VariantOutcome], choice: Decision | None
) -> Verdict:
    """Checkpointing on against off, in samples/s: from the paired runs where the variant choice
    measured these two against each other, else from their single figures, against the noise."""
    pool = [o for o in outcomes if o.decision is not None and not o.variant.beside]
    if choice is not None and choice.pairs:
        names = {variant_label(on): "on", variant_label(off): "off"}
        roles = {"challenger": names.get(choice.challenger), "default": names.get(choice.default)}
        if set(roles.values()) == {"on", "off"}:
            figures = [(roles[m["role"]], m["samples_per_s"]) for m in choice.measurements]
            pairs = []
            for first, second in zip(figures[0::2], figures[1::2], strict=False):  # A B, A B
                rates = dict([first, second])
                if rates.keys() == {"on", "off"}:
                    pairs.append((rates["on"], rates["off"]))
            if pairs:
                return judge(pairs, choice.noise)
    return single(on.samples_per_s, off.samples_per_s, variant_noise(pool or [on, off]))
