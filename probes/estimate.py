"""An estimate probe: the real training step on the meta device, its live tensor bytes counted.

No GPU, no data, seconds: the policy is built on the meta device (shapes and dtypes, no storage) and
trained by the real :class:`~probes.train_step.TrainStep` (forward, loss, backward, gradient
clipping, an AdamW step that allocates its state, ``zero_grad``) at a few batch sizes. A
``TorchDispatchMode`` under autograd sees every op the step runs, recomputations of checkpointed
blocks included, and counts the bytes of every tensor storage as the op that creates it returns,
rounded up to the CUDA caching allocator's 512-byte blocks, until the storage dies (a weakref
finalizer on the storage, whose Python object lives exactly as long as the storage). The peak of
that count during one steady-state step (the optimizer's state already allocated, as in the batch
probes' measured steps) is the estimate at that batch size.

What the real device would run differently is applied by :class:`~probes.device_rules.DeviceRules`:
autocast's casts of the target device (CUDA's rules on a CPU-only machine), CUDA's fused dropout
and the fused attention kernels. On CUDA the optimizer runs as torch runs it there, with
``foreach`` kernels (``_default_to_fused_or_foreach`` picks them for CUDA parameters), whose
``_foreach_sqrt`` holds a copy of the second moments for the whole step. fp16's gradient scaler
is left out (its unscaling works in place; its scale is one scalar).

What is not a tensor storage is not counted: the CUDA context, cuBLAS and cuDNN workspaces, the
caching allocator's segment rounding beyond 512 bytes and its fragmentation (the tuner adds them,
:mod:`autotune.estimate`), and on a CPU the runtime's own memory. The rounding of large blocks
into 2 MiB segments at the peak (``get_allocation_size`` in c10/cuda/CUDACachingAllocator.cpp) is
counted apart, as ``segment_rounding``.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from probes import catalogue
from probes.device_rules import DeviceRules, recompute_under
from probes.policies.common import count_params
from probes.protocol import ProbeRequest
from probes.train_step import DTYPES, TrainStep, prepare_batch

META = torch.device("meta")
BLOCK_BYTES = 512  # the caching allocator rounds every allocation up to this (kMinBlockSize)
MiB = 1024**2
# c10/cuda/CUDACachingAllocator.cpp: an allocation of at least kMinLargeAlloc (10 MiB) gets a
# segment of its own, rounded up to kRoundLarge (2 MiB).
LARGE_ALLOC_BYTES = 10 * MiB
ROUND_LARGE_BYTES = 2 * MiB
DEFAULT_BATCH_SIZES = tuple(2**k for k in range(13))  # 1 to 4096, as autotune.estimate asks


def rounded(nbytes: int) -> int:
    """Bytes the allocator hands out for ``nbytes`` (0 for an empty tensor: no allocation)."""
    return -(-nbytes // BLOCK_BYTES) * BLOCK_BYTES


def segment_waste(nbytes: int) -> int:
    """Bytes a large allocation's own segment holds beyond the allocation (0 for smaller ones,
    which share pooled segments)."""
    if nbytes < LARGE_ALLOC_BYTES:
        return 0
    return -(-nbytes // ROUND_LARGE_BYTES) * ROUND_LARGE_BYTES - rounded(nbytes)


class LiveBytes(TorchDispatchMode):
    """Live bytes of every meta tensor storage: counted when an op first returns it, until it dies.

    A meta tensor's ``.item()`` (the step's ``loss.item()``) has no value to give: it reads 0.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self.waste_bytes = 0  # segment rounding of the live large blocks
        self.peak_waste_bytes = 0  # ... at the peak
        self._sizes: dict[int, int] = {}  # storage address -> bytes counted
        self.counting = True

    def adopt(self, tensors: Iterable[torch.Tensor]) -> int:
        """Count tensors that exist already (parameters, buffers, a host batch); their bytes."""
        before = self.live_bytes
        for tensor in tensors:
            if isinstance(tensor, torch.Tensor):
                self._track(tensor)
        return self.live_bytes - before

    @contextlib.contextmanager
    def aside(self) -> Iterator[None]:
        """Tensors made in this block are not counted (the loader's batch, in host memory)."""
        self.counting = False
        try:
            yield
        finally:
            self.counting = True

    def reset_peak(self) -> None:
        self.peak_bytes, self.peak_waste_bytes = self.live_bytes, self.waste_bytes

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage.data_ptr() if tensor.device.type != "meta" else storage._cdata
        if key in self._sizes:
            return
        nbytes = storage.nbytes()
        counted = rounded(nbytes)
        self._sizes[key] = counted
        self.live_bytes += counted
        self.waste_bytes += segment_waste(nbytes)
        if self.live_bytes > self.peak_bytes:
            self.peak_bytes, self.peak_waste_bytes = self.live_bytes, self.waste_bytes
        weakref.finalize(storage, self._free, key, segment_waste(nbytes))

    def _free(self, key: int, waste: int) -> None:
        self.live_bytes -= self._sizes.pop(key, 0)
        self.waste_bytes -= waste

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default and args[0].device.type == "meta":
            return False if args[0].dtype == torch.bool else 0
        out = func(*args, **kwargs)
        if not self.counting:
            return out
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor) and leaf.device.type == "meta":
                self._track(leaf)
        return out


def _rules_in_forward(model: torch.nn.Module, rules: DeviceRules) -> contextlib.ExitStack:
    """Enter ``rules`` for every forward of ``model`` (the step's autocast region) and leave them
    after; the returned stack removes the hooks."""
    stack = contextlib.ExitStack()
    regions: list[contextlib.ExitStack] = []

    def enter(module: Any, args: Any) -> None:
        region = contextlib.ExitStack()
        region.enter_context(rules.region())
        regions.append(region)

    def leave(module: Any, args: Any, output: Any) -> None:
        if regions:
            regions.pop().close()

    stack.callback(model.register_forward_pre_hook(enter).remove)
    stack.callback(model.register_forward_hook(leave, always_call=True).remove)
    return stack


def on_device(batch: dict[str, Any], target: str) -> dict[str, Any]:
    """The batch as the step receives it: on the CPU the loader's tensors themselves; on CUDA a
    copy on the device (``.to`` on the meta device copies nothing, so the copy is made here)."""
    if target == "cuda":
        batch = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return prepare_batch(batch, META)


def run_estimate_probe(request: ProbeRequest, on_exceed: Any = None) -> dict[str, Any]:
    """The counted peak of one steady-state training step at each of ``estimate_batch_sizes``,
    as the device ``request.device`` (its type: cuda or cpu) would run it at ``request.precision``.
    """
    assert request.model is not None
    started = time.perf_counter()
    target = torch.device(request.device).type
    if target not in ("cuda", "cpu"):
        raise ValueError(f"cannot estimate for device {request.device!r}: cuda or cpu")
    sizes = sorted(set(request.estimate_batch_sizes or DEFAULT_BATCH_SIZES))
    torch.manual_seed(request.seed)
    cfg = catalogue.build_config(request.model)
    module = catalogue.model_module(request.model.policy)
    with META:
        model = module.Model(cfg)
    model.set_gradient_checkpointing(request.model.gradient_checkpointing)
    counter = LiveBytes()
    params = list(model.parameters())
    weights_bytes = counter.adopt(itertools.chain(params, model.buffers()))
    step = TrainStep(model, cfg, META, "fp32")  # autocast is DeviceRules' (no autocast on meta)
    if target == "cuda":
        for group in step.optimizer.param_groups:
            group["foreach"] = True
    dtype = None if request.precision == "fp32" else DTYPES[request.precision]
    rules = DeviceRules(target, dtype)
    points: list[list[int]] = []
    waste: list[list[int]] = []
    with _rules_in_forward(model, rules), recompute_under(rules), counter:
        for size in sizes:
            with META, counter.aside():  # the loader's batch: at 4096 frames real bytes would be GiBs
                batch = module.synthetic_batch(cfg, size)
            if target == "cpu":
                counter.adopt(tree_leaves(batch))  # the loader's batch lives in the same memory
            if not step.optimizer_ready():
                step(on_device(batch, target))  # the first step allocates the optimizer's state
            counter.reset_peak()
            step(on_device(batch, target))
            points.append([size, counter.peak_bytes])
            waste.append([size, counter.peak_waste_bytes])
            del batch
    state = [t for s in step.optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    return {
        "status": "ok",
        "estimate": {
            "target": target,
            "precision": request.precision,
            "points": points,
            "segment_rounding": waste,
            "weights_bytes": weights_bytes,
            "optimizer_state_bytes": sum(rounded(t.untyped_storage().nbytes()) for t in state if t.is_meta),
            "casts": len(rules.calls),
            "wall_s": time.perf_counter() - started,
        },
        "total_params": count_params(params),
        "trainable_params": count_params(p for p in params if p.requires_grad),
    }
