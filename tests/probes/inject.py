"""A real probe child whose training step raises a given error at a given step (1 = the first).

    python -m tests.probes.inject REQUEST.json RESULT.json TYPE STEP MESSAGE

``TYPE`` is ``AcceleratorError``, ``OutOfMemoryError`` or ``RuntimeError``: the errors CUDA and
its libraries raise near the limit, injected where they arise (in the step) so that the child's
own reporting path turns them into a result. Started as one rank of a DDP job, only the rank named
by ``INJECT_RANK`` (when set) fails.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch

from probes import child, train_step


def main(argv: list[str]) -> int:
    request, result, kind, at, message = argv
    error = {
        "AcceleratorError": getattr(torch, "AcceleratorError", RuntimeError),
        "OutOfMemoryError": torch.OutOfMemoryError,
        "RuntimeError": RuntimeError,
    }[kind]
    original = train_step.TrainStep.__call__
    calls = [0]

    only = os.environ.get("INJECT_RANK")
    mine = only is None or only == os.environ.get("RANK", "0")

    def failing(self: train_step.TrainStep, batch: Any) -> float:
        calls[0] += 1
        if mine and calls[0] == int(at):
            raise error(message)
        return original(self, batch)

    train_step.TrainStep.__call__ = failing  # type: ignore[method-assign]
    return child.main([request, result])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
