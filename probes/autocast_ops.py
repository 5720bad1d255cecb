"""Autocast's op lists of torch 2.14.1 and the cast policy each gives an op, by device type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _ops(names: str) -> frozenset[str]:
    return frozenset(names.split())


CUDA_LOWER_PRECISION_FP = _ops(
    "_convolution conv1d conv2d conv3d conv_tbc conv_transpose1d conv_transpose2d conv_transpose3d "
    "convolution prelu addmm addmv addr matmul einsum mm mv linalg_vecdot linear addbmm baddbmm bmm "
    "chain_matmul linalg_multi_dot _thnn_fused_lstm_cell _thnn_fused_gru_cell lstm_cell gru_cell "
    "rnn_tanh_cell rnn_relu_cell _scaled_dot_product_flash_attention scaled_dot_product_attention "
    "cudnn_convolution cudnn_convolution_transpose _cudnn_rnn"
)
CUDA_FP32 = _ops(
    "acos asin cosh erfinv exp expm1 log log10 log2 log1p reciprocal rsqrt sinh tan pow softplus "
    "layer_norm native_layer_norm rms_norm group_norm frobenius_norm nuclear_norm cosine_similarity "
    "poisson_nll_loss cosine_embedding_loss nll_loss nll_loss2d hinge_embedding_loss kl_div l1_loss "
    "smooth_l1_loss huber_loss mse_loss margin_ranking_loss multilabel_margin_loss soft_margin_loss "
    "triplet_margin_loss multi_margin_loss binary_cross_entropy_with_logits dist pdist cdist renorm "
    "logsumexp upsample_nearest1d _upsample_nearest_exact1d upsample_nearest2d "
    "_upsample_nearest_exact2d upsample_nearest3d _upsample_nearest_exact3d upsample_linear1d "
    "upsample_bilinear2d _upsample_bilinear2d_aa upsample_trilinear3d upsample_bicubic2d "
    "_upsample_bicubic2d_aa linalg_matrix_sqrth"
)
# norm (AT_FORALL_DIFFERENT_REDISPATCH_SIGNATURE, fp32_append_dtype) asks for a float32 output
# like these: treated alike.
CUDA_FP32_SET_OPT_DTYPE = _ops(
    "prod softmax log_softmax cumprod cumsum linalg_vector_norm linalg_matrix_norm sum norm"
)
CUDA_PROMOTE = _ops(
    "addcdiv addcmul atan2 bilinear cross dot vdot grid_sampler index_put tensordot scatter_add"
)
CPU_LOWER_PRECISION_FP = _ops(
    "conv1d conv2d conv3d bmm mm linalg_vecdot baddbmm addmm _addmm_activation addbmm linear "
    "_convolution matmul conv_tbc mkldnn_rnn_layer conv_transpose1d conv_transpose2d "
    "conv_transpose3d prelu scaled_dot_product_attention _native_multi_head_attention"
)
CPU_FP32 = _ops(
    "avg_pool3d binary_cross_entropy grid_sampler polar prod quantile nanquantile stft cdist "
    "grid_sampler_2d _grid_sampler_2d_cpu_fallback grid_sampler_3d trace view_as_complex "
    "cholesky_inverse cholesky_solve inverse lu_solve orgqr ormqr pinverse max_pool3d max_unpool2d "
    "max_unpool3d adaptive_avg_pool3d reflection_pad1d reflection_pad2d replication_pad1d "
    "replication_pad2d replication_pad3d mse_loss cosine_embedding_loss nll_loss nll_loss2d "
    "hinge_embedding_loss poisson_nll_loss smooth_l1_loss cross_entropy_loss l1_loss huber_loss "
    "margin_ranking_loss soft_margin_loss triplet_margin_loss multi_margin_loss ctc_loss kl_div "
    "multilabel_margin_loss binary_cross_entropy_with_logits fft_fft fft_ifft fft_fft2 fft_ifft2 "
    "fft_fftn fft_ifftn fft_rfft fft_irfft fft_rfft2 fft_irfft2 fft_rfftn fft_irfftn fft_hfft "
    "fft_ihfft linalg_cond linalg_matrix_rank linalg_solve linalg_cholesky linalg_svdvals "
    "linalg_eigvals linalg_eigvalsh linalg_inv linalg_householder_product linalg_tensorinv "
    "linalg_tensorsolve fake_quantize_per_tensor_affine geqrf _lu_with_info svd linalg_matrix_sqrth "
    "triangular_solve fractional_max_pool2d fractional_max_pool3d adaptive_max_pool3d "
    "multilabel_margin_loss_forward linalg_qr linalg_cholesky_ex linalg_svd linalg_eig linalg_eigh "
    "linalg_lstsq linalg_inv_ex"
)
CPU_PROMOTE = _ops("stack cat index_copy")

# Python functions whose name differs from the aten op autocast lists.
ALIASES = {"rmatmul": "matmul", "rpow": "pow"}


class CastRules:
    """Autocast's policy for one device type: which ops cast to what."""

    def __init__(
        self,
        device_type: str,
        lower: frozenset[str],
        fp32: frozenset[str],
        fp32_set_opt_dtype: frozenset[str],
        promote: frozenset[str],
    ) -> None:
        self.device_type = device_type
        self.lower = lower
        self.fp32 = fp32
        self.fp32_set_opt_dtype = fp32_set_opt_dtype
        self.promote = promote

    def policy(self, name: str) -> str | None:
        for policy, ops in (
            ("lower_precision_fp", self.lower),
            ("fp32", self.fp32),
            ("fp32_set_opt_dtype", self.fp32_set_opt_dtype),
            ("promote", self.promote),
        ):
            if name in ops:
                return policy
        return None

    def ops(self) -> frozenset[str]:
        return self.lower | self.fp32 | self.fp32_set_opt_dtype | self.promote


CAST_RULES = {
    "cuda": CastRules("cuda", CUDA_LOWER_PRECISION_FP, CUDA_FP32, CUDA_FP32_SET_OPT_DTYPE, CUDA_PROMOTE),
    "cpu": CastRules("cpu", CPU_LOWER_PRECISION_FP, CPU_FP32, frozenset(), CPU_PROMOTE),
}


def op_name(func: Callable[..., Any]) -> str:
    """The aten name a Python-level torch function stands for: ``__rmatmul__`` -> ``matmul``."""
    name = getattr(func, "__name__", "")
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
    return ALIASES.get(name, name)
