"""The batch a card would take, estimated without the card: a meta-device count, a line, terms on top.

An estimate probe (:mod:`probes.estimate`, in a child like every probe) counts the live tensor bytes
of the real training step on the meta device at a few batch sizes, as the target device would run
it (CUDA's autocast rules and kernels even on a CPU-only machine). The step's peak is the largest of
its phases' peaks, each linear in the batch: the counted points, linear between them, are the
model, and beyond the largest the line through the two largest, ``live = fixed_bytes +
per_sample_bytes x batch`` (where the steepest phase sets the peak).

Live tensor bytes are not all a card needs. What the count leaves out is added as named terms
(:mod:`autotune.estimate.terms`), each with its value and where it comes from, and replaced by
measurement where a profile measured on a GPU exists:

- outside the caching allocator, taken off the card: the CUDA context and the kernels that load
  after the first step;
- inside it, counted against the budget: cuBLAS's and cuDNN's workspaces, the allocator's rounding
  of large blocks into segments (counted by the probe at the peak), and its fragmentation, a share
  of the peak.

On a CPU the probes measure the growth of the resident set, which also holds the runtime's own
memory (torchvision's import, oneDNN's kernels and scratch, thread pools): one term, ``cpu_runtime``.
"""

from autotune.estimate.cards import (
    CardPrediction,
    describe_line,
    largest_batch,
    peak_bytes,
    predict_card,
    search_prior,
    search_start,
    smallest_card,
)
from autotune.estimate.count import (
    CARD_SIZES_GIB,
    ESTIMATE_BATCH_SIZES,
    ESTIMATE_TIMEOUT_S,
    Estimate,
    GiB,
    MiB,
    estimate_request,
    from_result,
)

__all__ = [
    "CARD_SIZES_GIB",
    "ESTIMATE_BATCH_SIZES",
    "ESTIMATE_TIMEOUT_S",
    "CardPrediction",
    "Estimate",
    "GiB",
    "MiB",
    "describe_line",
    "estimate_request",
    "from_result",
    "largest_batch",
    "peak_bytes",
    "predict_card",
    "search_prior",
    "search_start",
    "smallest_card",
]
