"""Multi-head latent attention (DeepSeek-V2/V3, arch deepseek2) as llama.cpp runs it.

llama.cpp's deepseek2 graph uses the "absorbed" form: the KV cache holds, per token, the
normalised compressed latent (kv_lora_rank values) and the roped shared key part (n_rot values),
as one key head; the value is that latent. Each query head's no-RoPE part is mapped into the
latent space by its `attn_k_b` slice, so attention is multi-query over rank + n_rot wide keys,
and each head's latent output is decompressed by its `attn_v_b` slice before `attn_output`.
The converter writes the hparams of that form: head_count_kv 1, key_length rank + n_rot,
value_length rank, with the per-head sizes in key_length_mla/value_length_mla.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from llmtk.errors import ShapeError, UnsupportedError
from llmtk.kernels.activations import round_activations

from . import _blas, ops
from .arch import ROPE_NEOX

if TYPE_CHECKING:
    from .arch import HParams
    from .model import KVCache, Model, _Batch

F32 = np.float32


@dataclass
class MlaLayer:
    """Tensor names of one MLA block (q either through the q LoRA pair or one `attn_q`)."""

    q_a: str | None
    q_a_norm: str | None
    q_b: str | None
    q: str | None
    kv_a_mqa: str
    kv_a_norm: str
    k_b: str
    v_b: str


def layer_names(tensors: dict[str, Any], il: int) -> MlaLayer:
    def opt(suffix: str) -> str | None:
        name = f"blk.{il}.{suffix}"
        return name if name in tensors else None

    def req(suffix: str) -> str:
        name = f"blk.{il}.{suffix}"
        if name not in tensors:
            if suffix.startswith(("attn_k_b", "attn_v_b")) and f"blk.{il}.attn_kv_b.weight" in tensors:
                raise UnsupportedError(f"tensor 'blk.{il}.attn_kv_b.weight' is the unsplit MLA form of old "
                                       "deepseek2 GGUFs, which llmtk.model does not run (re-convert the model)")
            raise ShapeError(f"tensor {name!r} is missing from the deepseek2 model")
        return name

    q_a = opt("attn_q_a.weight")
    return MlaLayer(
        q_a=q_a, q_a_norm=req("attn_q_a_norm.weight") if q_a else None, q_b=req("attn_q_b.weight") if q_a else None,
        q=None if q_a else req("attn_q.weight"),
        kv_a_mqa=req("attn_kv_a_mqa.weight"), kv_a_norm=req("attn_kv_a_norm.weight"),
        k_b=req("attn_k_b.weight"), v_b=req("attn_v_b.weight"),
    )


def check_hparams(hp: "HParams") -> None:
    """The absorbed form's hparams agree with each other (llama.cpp's loader asserts the same)."""
    if not (hp.head_k_mla and hp.head_v_mla):
        raise UnsupportedError("deepseek2 GGUF lacks attention.key_length_mla/value_length_mla: the old MHA form "
                               "of MLA is not supported by llmtk.model (re-convert the model)")
    if hp.n_head_kv != 1 or hp.head_k != hp.n_lora_kv + hp.n_rot or hp.head_v != hp.n_lora_kv:
        raise UnsupportedError(f"deepseek2 GGUF has head_count_kv {hp.n_head_kv}, key_length {hp.head_k}, "
                               f"value_length {hp.head_v}; MLA needs 1, kv_lora_rank + rope dims "
                               f"({hp.n_lora_kv + hp.n_rot}) and kv_lora_rank ({hp.n_lora_kv})")
    if hp.head_k_mla <= hp.n_rot:
        raise UnsupportedError(f"deepseek2 key_length_mla {hp.head_k_mla} leaves no dims without RoPE "
                               f"(rope dims {hp.n_rot})")


def check_shapes(check: Any, hp: "HParams", M: MlaLayer, wo: str) -> None:
    """Shapes (numpy order) of an MLA block's attention tensors."""
    E, H, rank, rope = hp.n_embd, hp.n_head, hp.n_lora_kv, hp.n_rot
    nope = hp.head_k_mla - rope
    if M.q_a is not None:
        check(M.q_a, hp.n_lora_q, E)
        check(M.q_a_norm, hp.n_lora_q)
        check(M.q_b, H * hp.head_k_mla, hp.n_lora_q)
    else:
        check(M.q, H * hp.head_k_mla, E)
    check(M.kv_a_mqa, rank + rope, E)
    check(M.kv_a_norm, rank)
    check(M.k_b, H, rank, nope)
    check(M.v_b, H, hp.head_v_mla, rank)
    check(wo, E, H * hp.head_v_mla)


def kq_scale(hp: "HParams", attn_factor: float) -> float:
    """llama.cpp's deepseek2 kq scale: the YaRN magnitude (undoing llama_context's cancellation,
    then with the yarn_log_multiplier) squared over sqrt(key_length_mla)."""
    log_inv = math.log(1.0 / hp.freq_scale)
    attn_factor_org = attn_factor * (1.0 + 0.1 * log_inv)
    mscale = attn_factor_org * (1.0 + 0.1 * hp.yarn_log_mul * log_inv)
    return mscale * mscale / math.sqrt(hp.head_k_mla)


def _rounded(model: "Model", x: npt.NDArray[np.float32], name: str) -> npt.NDArray[np.float32]:
    """x (n, H, cols) as ggml's CPU backend feeds it to the per-head product with `name`: each
    row rounded to the weight's vec_dot_type (a no-op for float32 weights)."""
    if not model.quantize_activations:
        return x
    n, H, cols = x.shape
    return round_activations(x.reshape(n * H, cols), model._vec_dot_type(name), model._rows).reshape(n, H, cols)


def attention(model: "Model", il: int, x: npt.NDArray[np.float32], cache: "KVCache", ctx: "_Batch",
              hook: Any) -> npt.NDArray[np.float32]:
    """Block il's attention output (n, n_embd) for its normalised input x, appending the block's
    latent keys to `cache` (llama_model_deepseek2's graph with is_mla)."""
    hp, L = model.hp, model.layers[il]
    M: MlaLayer = L.mla
    n, H, rank, rope = x.shape[0], hp.n_head, hp.n_lora_kv, hp.n_rot
    nope = hp.head_k_mla - rope
    if M.q_a is not None:
        q = model._mm(model._norm(model._mm(x, M.q_a, hook), M.q_a_norm), M.q_b, hook)
    else:
        q = model._mm(x, M.q, hook)
    q = q.reshape(n, H, hp.head_k_mla)
    kv = model._mm(x, M.kv_a_mqa, hook)                                    # (n, rank + rope)
    latent = model._norm(np.ascontiguousarray(kv[:, :rank]), M.kv_a_norm)   # (n, rank)
    cos, sin = ctx.rope[False]
    neox = model.spec.rope_mode == ROPE_NEOX
    scale = model.kq_scale
    k_b = model.w.get(M.k_b)                                                # (H, rank, nope)
    q_nope = q[:, :, :nope]
    if hook is not None:
        hook(M.k_b, np.ascontiguousarray(q_nope))       # batched per head: (n, H, nope), no routing
    q_nope = _rounded(model, np.ascontiguousarray(q_nope), M.k_b)
    Q = np.empty((H, n, rank + rope), dtype=F32)
    Q[:, :, :rank] = np.matmul(q_nope.transpose(1, 0, 2), k_b.transpose(0, 2, 1))  # (H, n, rank)
    Q[:, :, :rank] *= F32(scale)
    ops.rope(q[:, :, nope:], cos, sin, rope, neox, out=Q[:, :, rank:], rows=model._rows, scale=scale)
    p0, T = cache.n_past, cache.n_past + n
    K = cache.k[il]                                                         # (1, n_ctx, rank + rope)
    K[0, p0:T, :rank] = latent
    ops.rope(kv[:, None, rank:], cos, sin, rope, neox, out=K[:, p0:T, rank:], rows=model._rows)
    cache.v[il][0, p0:T] = latent
    cache.round_stored(il, p0, T)
    out = np.empty((n, H, rank), dtype=F32)
    with _blas.threads(1):
        model._attend(Q.reshape(1, H, n, rank + rope), K, cache.v[il], out, ctx.chunks(False))
    v_b = model.w.get(M.v_b)                                                # (H, head_v_mla, rank)
    if hook is not None:
        hook(M.v_b, out)                                # batched per head: (n, H, rank)
    heads = np.matmul(_rounded(model, out, M.v_b).transpose(1, 0, 2), v_b.transpose(0, 2, 1))  # (H, n, head_v_mla)
    attn = np.ascontiguousarray(heads.transpose(1, 0, 2)).reshape(n, H * hp.head_v_mla)
    return model._mm(attn, L.wo, hook, L.bo)
