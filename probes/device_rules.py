"""What a CUDA (or CPU) device would run, applied to meta tensors: autocast's casts and kernel choices.

The estimate (:mod:`probes.estimate`) runs the real training step on the meta device, where tensors
have shapes and dtypes but no data. Two things a real device decides are lost there, and
:class:`DeviceRules` puts them back, so that the estimate for a CUDA card follows CUDA's rules on a
CPU-only machine:

1. **Autocast's casts.** ``torch.autocast`` casts at the ``Autocast*`` dispatch keys, which only
   tensors of that device carry: a meta tensor passes every autocast kernel untouched, and
   ``torch.autocast("cuda")`` disables itself without a GPU. So the casts are re-applied here, by a
   ``TorchFunctionMode`` at the Python surface of the ops (where autocast itself patches, "Option 2"
   in ``aten/src/ATen/autocast_mode.h``, above autograd, so that the casts are recorded and the
   lower-precision copies are what backward saves), following the op lists of the PyTorch release
   installed (torch 2.14.1, as pinned in ``constraints.txt``; :mod:`probes.autocast_ops`):

   - CUDA: ``AT_FORALL_LOWER_PRECISION_FP``, ``AT_FORALL_FP32``, ``AT_FORALL_FP32_SET_OPT_DTYPE``
     and ``AT_FORALL_PROMOTE`` in ``aten/src/ATen/autocast_mode.h`` (the header ships with the
     wheel: ``torch/include/ATen/autocast_mode.h``), registered for ``AutocastCUDA`` in
     ``aten/src/ATen/autocast_mode.cpp`` with ``cudnn_convolution``, ``cudnn_convolution_transpose``
     and ``_cudnn_rnn`` (lower precision) and ``linalg_matrix_sqrth`` (float32) added, and
     ``binary_cross_entropy`` banned (it raises under CUDA autocast; left alone here);
   - CPU: the ``TORCH_LIBRARY_IMPL(aten, AutocastCPU, m)`` block of ``autocast_mode.cpp`` (2.14.1:
     with ``linalg_matrix_sqrth``, without ``cholesky`` and ``qr``).

   The policies are autocast's (``CastPolicy`` in the header): ``lower_precision_fp`` casts every
   floating argument to the autocast dtype, ``fp32`` to float32, ``fp32_set_opt_dtype`` asks for a
   float32 output unless a dtype was given, ``promote`` casts to the widest floating type among the
   arguments. As autocast does, double tensors are left alone, fp32 leaf parameters' casts are
   cached until the autocast region ends, ops inside a listed op are not cast again, and ops inside
   an unlisted composite (``F.multi_head_attention_forward``, a Python function) are. The test
   ``tests/probes/test_device_rules.py`` checks these lists against the ops the installed torch
   registers for ``AutocastCUDA`` and ``AutocastCPU``, and the CPU rules against the real CPU
   autocast. On CUDA, softmax and layer norm run in float32 (``AT_FORALL_FP32*``); on CPU they do
   not: attention with weights keeps float32 probabilities under CUDA's rules only.

2. **Kernel choices that change what is stored.** Dropout on CUDA is the fused ``native_dropout``,
   which keeps a 1-byte mask for backward; elsewhere (CPU, meta) it multiplies by a float noise
   tensor of 4 bytes per element. ``scaled_dot_product_attention`` on meta falls back to the math
   path, which stores the whole attention matrix; CUDA runs flash attention (fp16/bf16 without a
   mask) or the memory-efficient kernel, and the CPU its own flash kernel, which store only the
   output and the log-sum-exp. Both are routed here to the kernel the target device would pick.

Activation checkpointing recomputes the forward inside backward, where torch function modes are
off: :func:`recompute_under` hands ``torch.utils.checkpoint`` a ``context_fn`` (its documented hook
for the recomputation's context) that re-enters these rules for every recomputation, as autocast
re-enters its own state there.
"""

from __future__ import annotations

import contextlib
import inspect
import types
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
import torch.utils.checkpoint as torch_checkpoint
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

from probes.autocast_ops import CAST_RULES, op_name

_DROPOUT = inspect.signature(F.dropout)
# The checks a Python composite makes before it runs its own body.
_NO_TORCH_FUNCTION = ("has_torch_function", "has_torch_function_unary", "has_torch_function_variadic")


def _eligible(value: Any) -> bool:
    """A tensor autocast would cast: floating, not double (every tensor here is on one device)."""
    return isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float64


def _unchecked(func: types.FunctionType, cache: dict[Any, types.FunctionType]) -> types.FunctionType:
    """``func`` without its own ``__torch_function__`` check, so that the ops it calls, not the
    function as a whole, meet the mode (as autocast meets the ops inside an unlisted composite)."""
    if func not in cache:
        namespace = dict(func.__globals__)
        for name in _NO_TORCH_FUNCTION:
            namespace[name] = lambda *args, **kwargs: False
        clone = types.FunctionType(
            func.__code__, namespace, func.__name__, func.__defaults__, func.__closure__
        )
        clone.__kwdefaults__ = func.__kwdefaults__
        cache[func] = clone
    return cache[func]


class DeviceRules(TorchFunctionMode):
    """Autocast's casts (``dtype`` None: none) and the kernel choices of ``device_type``, on meta.

    Enter it around the forward (:meth:`region`); :func:`recompute_under` re-enters it for every
    recomputation of a checkpointed block.
    """

    def __init__(self, device_type: str, dtype: torch.dtype | None) -> None:
        super().__init__()
        if device_type not in CAST_RULES:
            raise ValueError(f"no device rules for {device_type!r}: cuda or cpu")
        self.device_type = device_type
        self.dtype = dtype
        self.rules = CAST_RULES[device_type]
        self._casts: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # autocast's weight cache
        self._unchecked: dict[Any, types.FunctionType] = {}
        self._inside: set[Any] = set()  # composites running unchecked (a guard against recursion)
        self.calls: list[str] = []  # op names cast, for tests

    @contextlib.contextmanager
    def region(self) -> Iterator[None]:
        """One autocast region (a forward, or one recomputation): casts of fp32 weights are cached
        inside it and dropped at its end, as ``torch.autocast.__exit__`` clears autocast's cache."""
        casts, self._casts = self._casts, {}
        try:
            with self:
                yield
        finally:
            self._casts = casts

    def __torch_function__(self, func: Any, types_: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        name = op_name(func)
        if name == "scaled_dot_product_attention":
            args, kwargs = self._cast("lower_precision_fp" if self.dtype else None, args, kwargs)
            return self._attention(*args, **kwargs)
        if name == "dropout" and self.device_type == "cuda":
            return self._fused_dropout(func, *args, **kwargs)
        policy = self.rules.policy(name) if self.dtype is not None else None
        if policy is not None:
            args, kwargs = self._cast(policy, args, kwargs)
            self.calls.append(name)
            return func(*args, **kwargs)
        composite = isinstance(func, types.FunctionType) and (func.__module__ or "").startswith("torch")
        if composite and func not in self._inside:
            # A Python composite (multi-head attention): the ops inside it meet the rules.
            self._inside.add(func)
            try:
                with self:
                    return _unchecked(func, self._unchecked)(*args, **kwargs)
            finally:
                self._inside.discard(func)
        return func(*args, **kwargs)

    # --- casts -------------------------------------------------------------------------------

    def _to(self, value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if value.dtype == dtype:
            return value
        cacheable = (
            dtype == self.dtype
            and value.dtype == torch.float32
            and value.requires_grad
            and value.is_leaf
            and not value._is_view()
        )
        if not cacheable:
            return value.to(dtype)
        if id(value) not in self._casts:
            self._casts[id(value)] = (value, value.to(dtype))
        return self._casts[id(value)][1]

    def _cast(self, policy: str | None, args: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        assert self.dtype is not None or policy is None
        if policy is None:
            return args, kwargs
        if policy == "fp32_set_opt_dtype":
            first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
            explicit = kwargs.get("dtype") is not None or any(isinstance(a, torch.dtype) for a in args)
            if first is not None and _eligible(first) and not explicit:
                kwargs["dtype"] = torch.float32
            return args, kwargs
        if policy == "promote":
            leaves = [a for a in (*args, *kwargs.values()) if _eligible(a)]
            leaves += [t for a in args if isinstance(a, (list, tuple)) for t in a if _eligible(t)]
            target = torch.float32 if any(t.dtype == torch.float32 for t in leaves) else self.dtype
        else:
            target = torch.float32 if policy == "fp32" else self.dtype
        assert target is not None

        def cast(value: Any) -> Any:
            return self._to(value, target) if _eligible(value) else value

        return tree_map(cast, args), tree_map(cast, kwargs)

    # --- kernel choices ----------------------------------------------------------------------

    def _fused_dropout(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """CUDA's dropout: ``native_dropout``, a 1-byte mask kept for backward (at::dropout takes the
        fused kernel on CUDA, ``is_fused_kernel_acceptable`` in aten/src/ATen/native/Dropout.cpp)."""
        if func is not F.dropout:
            return func(*args, **kwargs)
        bound = _DROPOUT.bind(*args, **kwargs)
        bound.apply_defaults()
        x, p, training, inplace = (bound.arguments[k] for k in ("input", "p", "training", "inplace"))
        if not training or inplace or not 0 < p < 1 or x.numel() == 0:
            return func(*args, **kwargs)
        return torch.ops.aten.native_dropout(x, p, True)[0]

    def _attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> torch.Tensor:
        """The fused attention kernel the device would pick (``select_sdp_backend`` in
        aten/src/ATen/native/transformers/{cuda,}/sdp_utils*.cpp): on CUDA flash attention for
        fp16/bf16 without a mask, else the memory-efficient kernel; on the CPU its flash kernel.
        None of them keeps the attention matrix for backward."""
        if enable_gqa and k.shape[-3] != q.shape[-3]:
            groups = q.shape[-3] // k.shape[-3]
            k, v = k.repeat_interleave(groups, dim=-3), v.repeat_interleave(groups, dim=-3)
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            # convert_boolean_attn_mask (aten/src/ATen/native/transformers/attention.cpp)
            attn_mask = torch.where(attn_mask.logical_not(), float("-inf"), 0.0).to(q.dtype)
        if self.device_type == "cpu":
            return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q, k, v, dropout_p, is_causal, attn_mask=attn_mask, scale=scale
            )[0]
        if q.dtype in (torch.float16, torch.bfloat16) and attn_mask is None and q.shape[-1] <= 256:
            return torch.ops.aten._scaled_dot_product_flash_attention(
                q, k, v, dropout_p, is_causal, False, scale=scale
            )[0]
        if attn_mask is not None:
            attn_mask = attn_mask.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
            pad = -attn_mask.shape[-1] % 16  # the kernel's alignment (preprocess_mask, pad_bias)
            if pad:
                attn_mask = F.pad(attn_mask, (0, pad))[..., : k.shape[2]]
        needs_grad = q.requires_grad or k.requires_grad or v.requires_grad
        return torch.ops.aten._scaled_dot_product_efficient_attention(
            q, k, v, attn_mask, needs_grad, dropout_p, is_causal, scale=scale
        )[0]


@contextlib.contextmanager
def recompute_under(rules: DeviceRules) -> Iterator[None]:
    """Every ``torch.utils.checkpoint`` recomputation inside this block runs under ``rules``.

    ``checkpoint(..., context_fn=...)`` is the documented way to give the recomputation a context;
    the policies call ``checkpoint`` without one, so its default is set here for the block and
    restored after (``context_fn`` is keyword-only: its default lives in ``__kwdefaults__`` of the
    function under ``torch._disable_dynamo``'s wrapper).
    """
    raw = inspect.unwrap(torch_checkpoint.checkpoint)
    defaults = raw.__kwdefaults__
    if not defaults or "context_fn" not in defaults:
        raise RuntimeError("torch.utils.checkpoint.checkpoint has no context_fn default to set")

    def context_fn() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
        return contextlib.nullcontext(), rules.region()

    previous = defaults["context_fn"]
    defaults["context_fn"] = context_fn
    try:
        yield
    finally:
        defaults["context_fn"] = previous
