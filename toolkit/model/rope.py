"""RoPE scaling beyond linear: llama.cpp's YaRN (ggml `rope_yarn`, `ggml_rope_yarn_corr_dims`).

YaRN mixes, per rotated pair i, the interpolated angle (position * freq_scale) and the original
one with a ramp between two correction dims derived from beta_fast/beta_slow and the original
context, and scales cos/sin by a magnitude correction. llama.cpp spreads the magnitude over
three places, which `yarn_params` reproduces: llama_context's constructor sets
ext_factor = 1 and attn_factor = mscale / (1 + 0.1 ln factor) (mscale from the DeepSeek-style
`yarn_log_multiplier` when the arch reads it), and ggml's rope_yarn multiplies it back by
1 + 0.1 ln(1/freq_scale); deepseek2's graph folds the same mscale squared into its kq scale
(`mla_kq_scale`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from .arch import HParams

F32 = np.float32


@dataclass(frozen=True)
class Yarn:
    """The YaRN arguments every ggml_rope_ext call of a model gets (llama_cparams' yarn_*)."""

    ext_factor: float
    attn_factor: float
    beta_fast: float
    beta_slow: float
    n_ctx_orig: int


def _mscale(scale: float, mscale: float) -> float:
    # llama_context's get_mscale
    return 1.0 if scale <= 1.0 else 0.1 * mscale * math.log(scale) + 1.0


def yarn_params(hp: "HParams") -> Yarn:
    """ext_factor and attn_factor as llama_context's constructor derives them from the hparams
    (ext_factor 1 for rope type yarn, else 0; then the mscale bookkeeping described above)."""
    ext = 1.0 if hp.rope_scaling == "yarn" else 0.0
    attn = 1.0
    if ext != 0.0:
        factor = 1.0 / hp.freq_scale
        if hp.yarn_log_mul != 0.0:
            mscale_all = hp.yarn_log_mul
            # deepseek2 (V2-Lite) takes mscale = mscale_all_dim when it is not 1
            mscale = mscale_all if hp.arch == "deepseek2" and mscale_all != 1.0 else 1.0
            attn = _mscale(factor, mscale) / _mscale(factor, mscale_all)
        else:
            attn = _mscale(factor, 1.0)
        attn *= 1.0 / (1.0 + 0.1 * math.log(factor))
    attn *= hp.rope_attn_factor
    return Yarn(ext, attn, hp.yarn_beta_fast, hp.yarn_beta_slow, hp.n_ctx_orig or hp.n_ctx_train)


def corr_dims(n_rot: int, n_ctx_orig: int, base: float, beta_fast: float, beta_slow: float) -> tuple[float, float]:
    """ggml_rope_yarn_corr_dims: the pair indices where the ramp starts and ends."""
    def dim(n_rotations: float) -> float:
        return n_rot * math.log(n_ctx_orig / (n_rotations * 2 * math.pi)) / (2 * math.log(base))
    return max(0.0, math.floor(dim(beta_fast))), min(n_rot - 1.0, math.ceil(dim(beta_slow)))


def rope_tables(pos: npt.NDArray[np.int64], n_rot: int, base: float, freq_scale: float, yarn: Yarn,
                freq_factors: npt.NDArray[np.float32] | None = None
                ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """cos/sin (n, n_rot/2) of ggml's rope_yarn for positions `pos`: with ext_factor 0 this is the
    plain (linearly scaled) rope times attn_factor."""
    if yarn.ext_factor == 0.0:
        from .ops import rope_tables as plain
        return plain(pos, n_rot, base, freq_scale, yarn.attn_factor, freq_factors)
    inv = base ** (-np.arange(0, n_rot, 2, dtype=np.float64) / n_rot)
    if freq_factors is not None:
        inv = inv / freq_factors.astype(np.float64)
    extrap = pos.astype(np.float64)[:, None] * inv[None, :]
    theta = freq_scale * extrap
    low, high = corr_dims(n_rot, max(1, yarn.n_ctx_orig), base, yarn.beta_fast, yarn.beta_slow)
    i = np.arange(n_rot // 2, dtype=np.float64)
    ramp = 1.0 - np.clip((i - low) / max(0.001, high - low), 0.0, 1.0)
    mix = ramp * yarn.ext_factor
    theta = theta * (1.0 - mix) + extrap * mix
    mscale = yarn.attn_factor * (1.0 + 0.1 * math.log(1.0 / freq_scale))
    return (np.cos(theta) * mscale).astype(F32), (np.sin(theta) * mscale).astype(F32)
