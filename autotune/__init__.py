"""autotune: the largest batch that fits and the DataLoader workers that keep the GPU fed, measured."""

from autotune.errors import ProbeError, UserError
from autotune.search import SearchOutcome, find_max_batch, recommend_batch

__all__ = ["ProbeError", "SearchOutcome", "UserError", "find_max_batch", "recommend_batch"]
__version__ = "0.1.0"
