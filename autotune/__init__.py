"""autotune: the largest batch that fits and the DataLoader workers that keep the GPU fed, measured."""

from autotune.errors import ProbeError, UserError
from autotune.tuning.batch import decide_batch, headroom_batch
from autotune.tuning.search import SearchOutcome, find_max_batch

__all__ = ["ProbeError", "SearchOutcome", "UserError", "decide_batch", "find_max_batch", "headroom_batch"]
__version__ = "0.1.0"
