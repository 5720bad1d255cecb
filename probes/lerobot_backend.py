"""The LeRobot backend: probes measured with the user's LeRobot itself, for any policy it has.

Where LeRobot is importable in the probe child's Python, a probe parses the same ``lerobot-train``
arguments the tuner will print (LeRobot's own config classes, through draccus), builds the dataset,
the policy, its pre-processor, the optimizer and the scheduler through LeRobot's factories, and
trains with LeRobot's own ``update_policy`` under an ``Accelerator`` set up the way
``lerobot-train`` sets it up (its autocast and gradient clipping). So memory and time are the
trainer's, with the trainer's torch. Checked against lerobot 0.6.1's ``scripts/lerobot_train.py``;
releases whose ``update_policy`` takes no ``accelerator`` (0.3) are refused with one line.

Pretrained weights are never needed to measure: a torchvision backbone's ImageNet weights
(``pretrained_backbone_weights``) are left out, which changes no shape. A policy that needs the
Hugging Face hub even without weights (a VLM's config, processor or tokenizer) fails with
:class:`NeedsHub`, naming what it wanted.

The set-up (the arguments parsed, and the dataset, policy, optimizer and scheduler built) is
:mod:`probes.lerobot_session`; here are LeRobot's step as a probe's and the probes themselves.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
import time
from typing import Any

import torch

from probes.device import MemoryMeter, resolve_device
from probes.lerobot_session import (
    CHECKPOINTING_FIELD,
    NeedsHub,
    Session,
    known_policies,
    open_session,
    version,
)
from probes.protocol import ProbeRequest
from probes.train_step import MAX_WARMUP_STEPS
from probes.training import timed_steps

log = logging.getLogger("probes.child")


class Step:
    """LeRobot's ``update_policy`` as a probe's training step (``__call__`` returns the loss)."""

    def __init__(self, session: Session, precision: str) -> None:
        self.session = session
        self.model = session.policy
        self.precision = precision
        self.scaler = torch.amp.GradScaler(enabled=False)  # accelerate holds the real one
        self._states = -1
        self.stepped = False

    def optimizer_ready(self) -> bool:
        """Whether the optimizer holds its state: it exists and the last step added none."""
        return self.stepped

    def __call__(self, batch: dict[str, Any]) -> float:
        s = self.session
        s.tracker, _ = s.update(
            s.tracker, s.policy, batch, s.optimizer, s.cfg.optimizer.grad_clip_norm, s.accelerator,
            lr_scheduler=s.scheduler,
        )  # fmt: skip
        states = len(s.optimizer.state)
        self.stepped = states > 0 and states == self._states
        self._states = states
        return float(s.tracker.loss.val) if hasattr(s.tracker.loss, "val") else 0.0


def warm_up(step: Step, run_step: Any, min_steps: int) -> int:
    """At least ``min_steps`` steps, and until the optimizer's state stopped growing."""
    done = 0
    while done < min_steps or not step.optimizer_ready():
        if done >= max(min_steps, MAX_WARMUP_STEPS):
            raise RuntimeError(
                f"the optimizer holds no settled state after {done} warm-up steps at {step.precision}"
            )
        run_step(done)
        done += 1
    return done


def one_batch(session: Session, batch_size: int, seed: int) -> dict[str, Any]:
    """``batch_size`` samples of the dataset, read by LeRobot's dataset class in this process."""
    rng = random.Random(seed)
    n = len(session.dataset)
    indices = [rng.randrange(n) for _ in range(batch_size)]
    sampler = torch.utils.data.SubsetRandomSampler(indices, generator=torch.Generator().manual_seed(seed))
    loader = session.loader(batch_size, 0, None, False, None, seed)
    loader = torch.utils.data.DataLoader(
        session.dataset, batch_size=batch_size, sampler=sampler, collate_fn=loader.collate_fn
    )
    return next(iter(loader))


def run_batch_probe(request: ProbeRequest, on_exceed: Any) -> dict[str, Any]:
    """LeRobot's training step on real samples of the dataset at ``request.batch_size``: peak
    memory and step time (one batch read once, trained on every step)."""
    device = resolve_device(request.device)
    meter = MemoryMeter(device, request.memory_limit_bytes, on_exceed=on_exceed)
    session = open_session(request, meter)
    step = Step(session, request.precision)
    raw = one_batch(session, request.batch_size, request.seed)
    fields = timed_steps(request, device, meter, step, lambda _: session.prepare(dict(raw)), warm_up)
    return {
        **fields,
        **session.param_counts(),
        "message": fields["message"] or "; ".join(session.notes),
    }


def time_samples(dataset: Any, seed: int, samples: int = 6) -> float:
    """Seconds one process takes to read one sample through LeRobot's dataset class."""
    rng = random.Random(seed)
    indices = [rng.randrange(len(dataset)) for _ in range(samples + 1)]
    dataset[indices[0]]
    t0 = time.perf_counter()
    for i in indices[1:]:
        dataset[i]
    return (time.perf_counter() - t0) / samples


def _use_backend(dataset: Any, backend: str) -> None:
    """Make LeRobot's dataset decode with ``backend`` from its next query: 0.4-0.5 read
    ``video_backend`` on the dataset, 0.6 ``_video_backend`` on the dataset and on its reader."""
    for holder in (dataset, getattr(dataset, "reader", None)):
        for name in ("video_backend", "_video_backend"):
            if holder is not None and name in vars(holder):
                setattr(holder, name, backend)


def run_decode_probe(request: ProbeRequest, on_exceed: Any) -> dict[str, Any]:
    """LeRobot's dataset read one sample at a time, with the request's video backend and with every
    other one that loads here (LeRobot's dataset reads its ``video_backend`` at each query)."""
    from probes.dataset.decode import decode_probe_fields

    session = open_session(request, None)

    def read_s(backend: str) -> float:
        _use_backend(session.dataset, backend)
        return time_samples(session.dataset, request.seed, samples=max(4, request.measure_steps))

    # LeRobot's FrameTimestampError is a ValueError.
    fields = decode_probe_fields(request.video_backend, read_s, (ValueError, RuntimeError, OSError))
    return {**fields, "steps": request.measure_steps}


def run_worker_probe(request: ProbeRequest, on_exceed: Any) -> dict[str, Any]:
    """LeRobot's dataset through the DataLoader lerobot-train builds, into LeRobot's step: data_s
    (the next batch and the pre-processor, as lerobot-train 0.4 to 0.6.1 count it) and updt_s."""
    from probes.loading import drive

    device = resolve_device(request.device)
    meter = MemoryMeter(device, request.memory_limit_bytes, on_exceed=None)
    session = open_session(request, meter, num_workers=request.num_workers)
    step = Step(session, request.precision)
    decode_s = time_samples(session.dataset, request.seed)
    loader = session.loader(
        request.batch_size, request.num_workers, request.prefetch_factor, request.persistent_workers,
        request.multiprocessing_context, request.seed,
    )  # fmt: skip
    batches = itertools.chain.from_iterable(itertools.repeat(loader))  # lerobot-train's cycle()
    fields = drive(
        request, device, meter, step, batches, session.prepare, decode_s, lambda s, run, n: warm_up(s, run, n)
    )
    return {**fields, **session.param_counts()}


def run_describe_probe(request: ProbeRequest, on_exceed: Any) -> dict[str, Any]:
    """Check the arguments and build the policy once: LeRobot's version, its policies, the
    parameter counts, whether the policy has gradient checkpointing, and the notes."""
    assert request.model is not None
    description: dict[str, Any] = {"lerobot_version": version(), "policies": known_policies()}
    try:
        session = open_session(request, None)
    except NeedsHub as exc:
        return {"status": "error", "message": str(exc), "description": {**description, "unbuildable": True}}
    except ImportError as exc:  # a LeRobot extra that is not installed (lerobot[smolvla], ...)
        message = f"lerobot's {request.model.policy} cannot be built here: {str(exc).strip().splitlines()[0]}"
        return {"status": "error", "message": message, "description": {**description, "unbuildable": True}}
    except ValueError as exc:
        return {"status": "error", "message": str(exc), "invalid_input": True, "description": description}
    fields = dataclasses.fields(session.cfg.policy)
    description |= {
        "grad_checkpointing": any(f.name == CHECKPOINTING_FIELD for f in fields),
        "notes": session.notes,
        **session.param_counts(),
    }
    return {"status": "ok", "description": description, **session.param_counts()}
