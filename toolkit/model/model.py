"""The transformer forward pass over GGUF weights: tokens in, float32 logits out, with a KV cache.

One decoder loop serves every architecture in `llmtk.model.arch.ARCHS`, following llama.cpp's
graph builders (`src/models/*.cpp`, `llm_graph_context::build_attn/build_ffn/build_moe_ffn`):
pre-norm blocks, RoPE in ggml's normal or neox mode, grouped-query attention with a causal
(optionally sliding-window) mask, gated FFN or top-k softmax-routed experts.
"""
from __future__ import annotations

import itertools
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import numpy.typing as npt

from llmtk.ggufio.constants import GGMLType, Key
from llmtk.errors import InputError, LlmtkError, ShapeError, UnsupportedError
from llmtk.kernels.activations import round_activations, round_to_storage

from . import _blas, mla, moe, ops, rope
from .arch import NORM_LAYER, ROPE_NEOX, ArchSpec, HParams, arch_spec
from .weights import DEFAULT_BUDGET, StackedRows, Weights, dot_rows, open_reader

log = logging.getLogger(__name__)

F32 = np.float32
_UNSET = object()
# hook(weight_name, x) with x (n, cols) float32 entering a matmul; for expert tensors
# hook(weight_name, x, ids) with x (n, n_expert_used, cols) and ids (n, n_expert_used) int32;
# for a 3-D weight multiplied per matrix without routing (MLA's k_b/v_b) hook(weight_name, x)
# with x (n, n_mat, cols).
Hook = Callable[..., None]

# batches of at most this many tokens multiply the file's own blocks (llmtk.kernels.unpack) on numba
# threads, reading 0.7-2 bytes a weight; larger ones use BLAS sgemm on float32 copies
DECODE_ROWS = 4
ATTN_Q_CHUNK = 128  # query rows per attention block: bounds the scores, skips masked keys


KV_CACHE_TYPES = ("f16", "bf16", "f32")


def check_cache_types(*types: str) -> None:
    """Refuse a KV cache type llmtk cannot hold (llama.cpp's quantized caches among them)."""
    for t in types:
        if t not in KV_CACHE_TYPES:
            raise InputError(f"KV cache type {t!r} is not supported (choose from {', '.join(KV_CACHE_TYPES)})")


class KVCache:
    """Per-layer keys and values of the tokens seen so far, positions 0 .. n_past-1.

    Stored as float32 for BLAS but rounded to `type_k`/`type_v` when written, as llama.cpp's
    cache holds them (its default, `-ctk f16 -ctv f16`). The rounding matters beyond its size:
    with 8-bit activation quantization (Q8_0 weights) a tiny change upstream flips roundings in
    blocks holding outliers, so PPL only agrees with llama.cpp's when the cache matches too.
    """

    def __init__(self, hp: HParams, n_ctx: int, type_k: str = "f16", type_v: str = "f16"):
        if n_ctx <= 0:
            raise InputError(f"KV cache size must be positive, got n_ctx={n_ctx}")
        check_cache_types(type_k, type_v)
        self.n_ctx = int(n_ctx)
        self.n_past = 0
        self.type_k, self.type_v = type_k, type_v
        # (n_head_kv, n_ctx, head_dim): each head's keys are contiguous rows for BLAS
        self.k = [np.zeros((hp.n_head_kv, n_ctx, hp.head_k), dtype=F32) for _ in range(hp.n_layer)]
        self.v = [np.zeros((hp.n_head_kv, n_ctx, hp.head_v), dtype=F32) for _ in range(hp.n_layer)]

    def clear(self) -> None:
        """Forget every cached token (the buffers are reused)."""
        self.n_past = 0

    def round_stored(self, il: int, p0: int, p1: int) -> None:
        """Round layer il's freshly written positions p0..p1-1 to the cache types."""
        round_to_storage(self.k[il][:, p0:p1], self.type_k)
        round_to_storage(self.v[il][:, p0:p1], self.type_v)


@dataclass
class Layer:
    """Tensor names of one block; None where the file has no such tensor."""

    attn_norm: str | None
    wq: str | None
    wk: str | None
    wv: str | None
    wqkv: str | None
    wo: str
    bq: str | None
    bk: str | None
    bv: str | None
    bqkv: str | None
    bo: str | None
    q_norm: str | None
    k_norm: str | None
    post_attn_norm: str | None
    ffn_norm: str | None
    gate: str | None
    up: str
    down: str
    post_ffn_norm: str | None
    gate_inp: str | None
    b_gate: str | None
    b_up: str | None
    b_down: str | None
    experts: "moe.Experts | None" = None   # MoE blocks: router, expert biases, shared experts
    mla: "mla.MlaLayer | None" = None      # deepseek2: latent attention tensors (wq/wk/wv are None)
    sinks: str | None = None               # gpt-oss: per-head attention sink logits

    @property
    def qkv(self) -> tuple[str, ...]:
        return (self.wqkv,) if self.wqkv else (self.wq, self.wk, self.wv)

    @property
    def qkv_b(self) -> tuple[str | None, ...]:
        return (self.bqkv,) if self.wqkv else (self.bq, self.bk, self.bv)

    @property
    def ffn_in(self) -> tuple[str, ...]:
        return (self.up,) if self.gate is None else (self.gate, self.up)

    @property
    def ffn_in_b(self) -> tuple[str | None, ...]:
        return (self.b_up,) if self.gate is None else (self.b_gate, self.b_up)


class _Batch:
    """Per-forward tables shared by all layers: RoPE cos/sin and the attention mask chunks."""

    def __init__(self, hp: HParams, p0: int, n: int, rope: dict[bool, tuple[np.ndarray, np.ndarray]]):
        self.hp, self.p0, self.n, self.rope = hp, p0, n, rope
        self._chunks: dict[bool, list[tuple[int, int, int, int, np.ndarray]]] = {}

    def chunks(self, swa: bool) -> list[tuple[int, int, int, int, np.ndarray]]:
        """(c0, c1, t0, t1, mask): query rows c0..c1 see key positions t0..t1 through mask."""
        got = self._chunks.get(swa)
        if got is None:
            n_swa = self.hp.n_swa if swa else 0
            got = []
            for c0 in range(0, self.n, ATTN_Q_CHUNK):
                c1 = min(self.n, c0 + ATTN_Q_CHUNK)
                t1 = self.p0 + c1  # later keys are all masked: skip them
                if n_swa and self.hp.swa_chunked:  # keys before the first query's chunk are all masked
                    t0 = (self.p0 + c0) // n_swa * n_swa
                else:
                    t0 = max(0, self.p0 + c0 - n_swa + 1) if n_swa else 0
                q_pos = np.arange(self.p0 + c0, self.p0 + c1)
                got.append((c0, c1, t0, t1, ops.causal_mask(q_pos, t0, t1, n_swa, self.hp.swa_chunked)))
            self._chunks[swa] = got
        return got


def _layer_names(spec: ArchSpec, hp: HParams, tensors: dict[str, Any], il: int) -> Layer:
    def opt(suffix: str) -> str | None:
        name = f"blk.{il}.{suffix}"
        return name if name in tensors else None

    def req(suffix: str) -> str:
        name = f"blk.{il}.{suffix}"
        if name not in tensors:
            raise ShapeError(f"tensor {name!r} is missing from the {spec.name} model")
        return name

    experts = moe.layer_experts(tensors, il) if hp.n_expert > 0 else None
    moe_blk = experts is not None
    ffn = "_exps" if moe_blk else ""
    fused = opt("attn_qkv.weight")  # create_tensor_qkv: one fused projection or three
    latent = mla.layer_names(tensors, il) if spec.mla else None
    sep = not fused and latent is None
    return Layer(
        attn_norm=req("attn_norm.weight") if spec.pre_norms else None,
        wq=req("attn_q.weight") if sep else None,
        wk=req("attn_k.weight") if sep else None,
        wv=req("attn_v.weight") if sep else None,
        wqkv=fused,
        wo=req("attn_output.weight"),
        bq=opt("attn_q.bias"), bk=opt("attn_k.bias"), bv=opt("attn_v.bias"), bqkv=opt("attn_qkv.bias"),
        bo=opt("attn_output.bias"),
        q_norm=req("attn_q_norm.weight") if spec.qk_norm is True else opt("attn_q_norm.weight") if spec.qk_norm else None,
        k_norm=req("attn_k_norm.weight") if spec.qk_norm is True else opt("attn_k_norm.weight") if spec.qk_norm else None,
        post_attn_norm=req("post_attention_norm.weight") if spec.post_norms else None,
        # parallel blocks (command-r) feed attn_norm's output to the FFN too
        ffn_norm=req(f"{spec.ffn_norm}.weight") if spec.pre_norms and not spec.parallel else None,
        gate=None if spec.fused_gate_up or not spec.ffn_gated else req(f"ffn_gate{ffn}.weight"),
        up=req(f"ffn_up{ffn}.weight"),
        down=req(f"ffn_down{ffn}.weight"),
        post_ffn_norm=req("post_ffw_norm.weight") if spec.post_norms else None,
        gate_inp=experts.gate_inp if experts else None,
        b_gate=opt("ffn_gate.bias"), b_up=opt("ffn_up.bias"), b_down=opt("ffn_down.bias"),
        experts=experts, mla=latent, sinks=opt("attn_sinks.weight"),
    )


def _check_shapes(spec: ArchSpec, hp: HParams, tensors: dict[str, Any], layers: list[Layer]) -> None:
    """Every tensor the forward pass reads has the rank and shape the hyperparameters imply
    (llama.cpp's `create_tensor` checks), so a hostile file fails here, not inside a kernel."""
    from llmtk.kernels import kernel_for

    E = hp.n_embd

    def check(name: str | None, *shape: int | None) -> tuple[int, ...]:
        if name is None:
            return ()
        got = tuple(tensors[name].shape)
        if len(got) != len(shape) or any(w is not None and g != w for g, w in zip(got, shape)):
            want = ", ".join("?" if w is None else str(w) for w in reversed(shape))
            raise ShapeError(f"tensor '{name}' has shape {list(reversed(got))}, expected [{want}] "
                             f"(GGUF order) for this {spec.name} model")
        try:
            kernel_for(tensors[name].qtype)
        except KeyError:
            raise UnsupportedError(f"tensor '{name}' has type {tensors[name].qtype.name}, which llmtk.model "
                                   "cannot read") from None
        return got

    check("token_embd.weight", hp.n_vocab, E)
    if hp.n_vocab < 1:
        raise ShapeError("tensor 'token_embd.weight' has no rows (an empty vocabulary)")
    if "output_norm.weight" not in tensors:
        raise ShapeError(f"tensor 'output_norm.weight' is missing from the {spec.name} model")
    check("output_norm.weight", E)
    if "output_norm.bias" in tensors:
        check("output_norm.bias", E)
    if "output.weight" in tensors:
        check("output.weight", hp.n_vocab, E)
    if "output.bias" in tensors:
        check("output.bias", hp.n_vocab)
    for name in ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"):
        if name in tensors:
            check(name, hp.n_rot // 2)
    q_rows, k_rows, v_rows = hp.n_head * hp.head_k, hp.n_head_kv * hp.head_k, hp.n_head_kv * hp.head_v
    for L in layers:
        for name in (L.attn_norm, L.ffn_norm, L.post_attn_norm, L.post_ffn_norm):
            check(name, E)
        if L.mla is not None:
            mla.check_shapes(check, hp, L.mla, L.wo)
        elif L.wqkv is not None:
            check(L.wqkv, q_rows + k_rows + v_rows, E)
            check(L.bqkv, q_rows + k_rows + v_rows)
        else:
            for w, b, rows in ((L.wq, L.bq, q_rows), (L.wk, L.bk, k_rows), (L.wv, L.bv, v_rows)):
                check(w, rows, E)
                check(b, rows)
        if L.mla is None:
            check(L.wo, E, hp.n_head * hp.head_v)
        check(L.bo, E)
        check(L.sinks, hp.n_head)
        # q/k norms per head, or (olmoe) over the whole projection
        for name, heads in ((L.q_norm, hp.n_head), (L.k_norm, hp.n_head_kv)):
            if name is not None and len(tensors[name].shape) == 2 and spec.norm == NORM_LAYER:
                check(name, heads, hp.head_k)  # command-r: one LayerNorm weight row per head
            elif name is not None:
                check(name, heads * hp.head_k if tensors[name].shape[0] != hp.head_k else hp.head_k)
        for name in (L.attn_norm, L.ffn_norm, L.post_attn_norm, L.post_ffn_norm):
            bias = name[:-len("weight")] + "bias" if name else None
            if bias in tensors:  # starcoder2's LayerNorms, phimoe's RMS norms have a bias
                check(bias, E)
        if L.gate_inp is not None:
            n_x = hp.n_expert
            check(L.gate_inp, n_x, E)
            n_ff = check(L.down, n_x, E, None)[2]
            check(L.up, n_x, 2 * n_ff if L.gate is None else n_ff, E)
            check(L.gate, n_x, n_ff, E)
            if n_ff < 1:
                raise ShapeError(f"tensor '{L.down}' has no expert FFN columns")
            moe.check_shapes(check, L.experts, n_x, E, n_ff)
        else:
            n_ff = check(L.down, E, None)[1]
            n_up = 2 * n_ff if spec.fused_gate_up else n_ff
            check(L.up, n_up, E)
            check(L.gate, n_ff, E)
            check(L.b_up, n_up)
            check(L.b_gate, n_ff)
            check(L.b_down, E)
            if n_ff < 1:
                raise ShapeError(f"tensor '{L.down}' has no FFN columns")


class Model:
    """A loaded GGUF transformer; `forward` maps token ids to logits."""

    def __init__(self, reader: Any, *, weight_budget: int = DEFAULT_BUDGET, threads: int | None = None,
                 quantize_activations: bool = True, cache_type_k: str = "f16", cache_type_v: str = "f16",
                 owns_reader: bool = False):
        self.reader = reader
        check_cache_types(cache_type_k, cache_type_v)
        self.cache_type_k, self.cache_type_v = cache_type_k, cache_type_v
        # round matmul inputs to the weight type's vec_dot_type, as ggml's CPU backend does
        self.quantize_activations = quantize_activations
        self._vdt: dict[str, GGMLType] = {}
        self._cuts: dict[tuple[str, ...], tuple[int, ...]] = {}
        self._stack_vdt: dict[tuple[str, ...], GGMLType | None] = {}  # None: the types' vdts differ
        self._norms: dict[tuple[str, bool], tuple[np.ndarray, np.ndarray | None]] = {}
        # worker threads of a batch and numba threads of a decoding step; None: all cores unless busy
        self.threads = threads if threads is not None else _blas.auto_threads()
        log.debug("llmtk.model: %d thread(s)", self.threads)
        self._owns_reader = owns_reader
        kv = reader.kv
        arch = kv.get(Key.ARCHITECTURE)
        if not isinstance(arch, str):
            raise UnsupportedError("GGUF metadata lacks general.architecture")
        self.spec = arch_spec(arch)
        tensors = reader.tensors
        if "token_embd.weight" not in tensors:
            raise ShapeError("tensor 'token_embd.weight' is missing from the model")
        if len(tensors["token_embd.weight"].shape) != 2:
            raise ShapeError(f"tensor 'token_embd.weight' has shape {list(tensors['token_embd.weight'].ne)}, "
                             "expected [n_embd, n_vocab]")
        n_vocab = int(tensors["token_embd.weight"].shape[0])
        # every layer has several tensors: a block_count the tensors cannot hold is refused
        # before anything per layer is built
        self.hp = HParams.from_metadata(kv, n_vocab, self.spec, max_layers=max(1, len(tensors) // 4))
        self.w = Weights(reader, weight_budget)
        self.layers = [_layer_names(self.spec, self.hp, tensors, il) for il in range(self.hp.n_layer)]
        _check_shapes(self.spec, self.hp, tensors, self.layers)
        self.output = "output.weight" if "output.weight" in tensors else "token_embd.weight"
        self.output_bias = "output.bias" if "output.bias" in tensors else None
        self._rope_long = "rope_factors_long.weight" if "rope_factors_long.weight" in tensors else None
        self._rope_short = "rope_factors_short.weight" if "rope_factors_short.weight" in tensors else None
        self._rope_freqs = "rope_freqs.weight" if "rope_freqs.weight" in tensors else None
        self._biases: dict[str, np.ndarray] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        hp = self.hp
        self.yarn = rope.yarn_params(hp)
        if self.spec.mla:
            self.kq_scale = mla.kq_scale(hp, self.yarn.attn_factor)
        elif self.spec.attn_scale is not None:
            self.kq_scale = self.spec.attn_scale(hp)
        elif hp.attention_scale:
            self.kq_scale = hp.attention_scale
        else:
            self.kq_scale = 1.0 / math.sqrt(hp.head_k)

    @property
    def n_vocab(self) -> int:
        return self.hp.n_vocab

    def new_cache(self, n_ctx: int) -> KVCache:
        """An empty KV cache holding up to `n_ctx` tokens."""
        return KVCache(self.hp, n_ctx, self.cache_type_k, self.cache_type_v)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._owns_reader and hasattr(self.reader, "close"):
            self.reader.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- building blocks ----------------------------------------------------------------

    def _mm(self, x: npt.NDArray[np.float32], name: str, hook: Hook | None,
            bias: str | None = None) -> npt.NDArray[np.float32]:
        """x (n, cols) @ W.T (+ b): the weight is (rows, cols) like ggml's ne = {cols, rows}."""
        return self._proj(x, (name,), (bias,), hook)

    def _proj(self, x: npt.NDArray[np.float32], names: tuple[str, ...], biases: tuple[str | None, ...],
              hook: Hook | None, separate: bool = False) -> Any:
        """x @ [W1; W2; ...].T + [b1, b2, ...]: projections of one input fused into one sgemm.

        `separate` returns the products of the names as a list instead (gate, up), each its own
        array when a batch's worker threads take one name each, views of one product otherwise.
        """
        if hook is not None:
            for name in names:
                hook(name, x)
        vdt = self._stack_vdt.get(names, _UNSET)
        if vdt is _UNSET:  # memoised: the decoding loop asks every step
            vdts = {self._vec_dot_type(name) for name in names}
            vdt = self._stack_vdt[names] = vdts.pop() if len(vdts) == 1 else None
        if vdt is None:  # mixed types (a Q6_K attn_v beside Q5_0 q/k): one product each
            parts = [self._proj(x, (n,), (b,), None) for n, b in zip(names, biases)]
            return parts if separate else np.concatenate(parts, axis=1)
        cuts = self._row_cuts(names) if separate else None
        if x.shape[0] <= DECODE_ROWS:  # Weights.matvec rounds (or quantizes) the activations itself
            y = self.w.matvec(names, x, vdt if self.quantize_activations else None)
            y = y if cuts is None else [y[:, a:b] for a, b in zip(cuts[:-1], cuts[1:])]
        else:
            xr = round_activations(x, vdt, self._rows) if self.quantize_activations else x
            y = self._matmul(xr, self.w.fused(names), cuts)
        b = self._bias(names, biases)
        if b is not None:
            if cuts is None:
                y += b
            else:
                for part, a0, a1 in zip(y, cuts[:-1], cuts[1:]):
                    part += b[a0:a1]
        return y

    def _row_cuts(self, names: tuple[str, ...]) -> tuple[int, ...]:
        """Row offsets 0, rows(W1), rows(W1) + rows(W2), ... of stacked tensors (memoised: the
        decoding loop asks for them every step)."""
        cuts = self._cuts.get(names)
        if cuts is None:
            cuts = self._cuts[names] = tuple(itertools.accumulate((self.w.shape(n)[0] for n in names), initial=0))
        return cuts

    def _vec_dot_type(self, name: str) -> GGMLType | None:
        """The type ggml's CPU backend converts activations to before multiplying `name`."""
        t = self._vdt.get(name)
        if t is None:
            from llmtk.kernels import kernel_for
            t = self._vdt[name] = kernel_for(self.reader.tensors[name].qtype).vec_dot_type or GGMLType.F32
        return t

    def _bias(self, names: tuple[str, ...], biases: tuple[str | None, ...]) -> npt.NDArray[np.float32] | None:
        if all(b is None for b in biases):
            return None
        key = "|".join(names)
        b = self._biases.get(key)
        if b is None:
            b = np.concatenate([self.w.get(bn) if bn is not None else np.zeros(self.w.shape(wn)[0], F32)
                                for wn, bn in zip(names, biases)]).astype(F32)
            self._biases[key] = b
        return b

    def _norm(self, x: npt.NDArray[np.float32], name: str | None, bias: bool = True) -> npt.NDArray[np.float32]:
        """build_norm: the arch's RMS norm or LayerNorm (`ArchSpec.norm`) times `name`, plus its
        `.bias` tensor where the file has one and `bias` (q/k norms are built without); None: x."""
        if name is None:
            return x
        wb = self._norms.get((name, bias))
        if wb is None:  # memoised: the decoding loop asks every step
            b = name[:-len("weight")] + "bias" if bias else None
            wb = self._norms[(name, bias)] = (self.w.get(name), self.w.get(b) if b in self.w else None)
        w, b = wb
        if self.spec.norm == NORM_LAYER:
            return ops.layer_norm(x, w, b, self.hp.eps, self._rows)
        y = ops.rms_norm(x, w, self.hp.eps, self._rows)
        if b is not None:  # phimoe's RMS norms have a bias
            y += b
        return y

    def _rope_factors(self, n_ctx: int) -> npt.NDArray[np.float32] | None:
        # llama_model::get_rope_factors: rope_freqs, else long/short by the context size
        if self._rope_freqs:
            return self.w.get(self._rope_freqs)
        if self._rope_long and n_ctx > self.hp.n_ctx_orig:
            return self.w.get(self._rope_long)
        if self._rope_short:
            return self.w.get(self._rope_short)
        return None

    def _attention(self, il: int, x: npt.NDArray[np.float32], cache: KVCache, ctx: "_Batch",
                   hook: Hook | None) -> npt.NDArray[np.float32]:
        hp, L = self.hp, self.layers[il]
        if L.mla is not None:
            return mla.attention(self, il, x, cache, ctx, hook)
        n = x.shape[0]
        n_q, n_k = hp.n_head * hp.head_k, hp.n_head_kv * hp.head_k
        y = self._proj(x, L.qkv, L.qkv_b, hook)
        q = y[:, :n_q].reshape(n, hp.n_head, hp.head_k)
        k = y[:, n_q:n_q + n_k].reshape(n, hp.n_head_kv, hp.head_k)
        v = y[:, n_q + n_k:].reshape(n, hp.n_head_kv, hp.head_v)
        if L.q_norm is not None:
            # per head, or (olmo2, olmoe) over the whole projection; q/k norms never add a bias
            q = self._norm(q if self.w.shape(L.q_norm)[-1] == hp.head_k else q.reshape(n, n_q), L.q_norm, bias=False)
            k = self._norm(k if self.w.shape(L.k_norm)[-1] == hp.head_k else k.reshape(n, n_k), L.k_norm, bias=False)
            q, k = q.reshape(n, hp.n_head, hp.head_k), k.reshape(n, hp.n_head_kv, hp.head_k)
        swa = hp.is_swa[il]
        cos, sin = ctx.rope[swa]
        neox = self.spec.rope_mode == ROPE_NEOX
        n_rot = hp.n_rot if hp.use_rope[il] else 0  # NoPE layers: only the kq scale
        p0, T = cache.n_past, cache.n_past + n
        l2 = hp.kq_l2_norm and hp.use_rope[il]
        if n <= DECODE_ROWS and not l2 and not (not hp.use_rope[il] and hp.attn_temp_scale) \
                and cache.type_k in ("f16", "f32") and cache.type_v in ("f16", "f32"):
            # a decoding step: rope, cache writes and attention of every head in one call
            (_, _, t0, _, mask), = ctx.chunks(swa)
            sinks = self.w.get(L.sinks) if L.sinks is not None else None
            out = ops.decode_attention(q, k, v, cos, sin, n_rot, neox, self.kq_scale, cache.k[il], cache.v[il],
                                       p0, cache.type_k == "f16", cache.type_v == "f16", t0, mask, sinks,
                                       hp.attn_softcap)
            return self._mm(out.reshape(n, hp.n_head * hp.head_v), L.wo, hook, L.bo)
        Qh = ops.rope(q, cos, sin, n_rot, neox, rows=self._rows, scale=1.0 if l2 else self.kq_scale)  # (n_head, n, head_k)
        ops.rope(k, cos, sin, n_rot, neox, out=cache.k[il][:, p0:T], rows=self._rows)
        if l2:  # llama4: Llama4TextL2Norm of q and k after RoPE (ggml_rms_norm, no weight)
            ones = np.ones(hp.head_k, dtype=F32)
            Qh = ops.rms_norm(Qh, ones, hp.eps, self._rows)
            Qh *= F32(self.kq_scale)
            cache.k[il][:, p0:T] = ops.rms_norm(cache.k[il][:, p0:T], ones, hp.eps, self._rows)
        elif not hp.use_rope[il] and hp.attn_temp_scale:
            # llama4's NoPE layers: llm_graph_input_attn_temp's per-position q scale
            pos = np.arange(p0, T, dtype=np.float64)
            temp = np.log(np.floor((pos + hp.attn_temp_offset) / hp.attn_temp_floor) + 1.0) * hp.attn_temp_scale + 1.0
            Qh *= temp.astype(F32)[None, :, None]
        cache.v[il][:, p0:T] = v.transpose(1, 0, 2)
        cache.round_stored(il, p0, T)
        K, V = cache.k[il], cache.v[il]                           # (n_head_kv, n_ctx, head)
        g = hp.group
        # query head h reads kv head h // g: each kv head's g query heads stacked as rows
        Q = Qh.reshape(hp.n_head_kv, g, n, hp.head_k)
        out = np.empty((n, hp.n_head, hp.head_v), dtype=F32)   # token-major: wo's input rows
        sinks = self.w.get(L.sinks) if L.sinks is not None else None
        with _blas.threads(1):
            self._attend(Q, K, V, out, ctx.chunks(swa), sinks, hp.attn_softcap)
        attn = out.reshape(n, hp.n_head * hp.head_v)
        return self._mm(attn, L.wo, hook, L.bo)

    def _attend(self, Q: np.ndarray, K: np.ndarray, V: np.ndarray, out: np.ndarray,
                chunks: list[tuple[int, int, int, int, np.ndarray]], sinks: np.ndarray | None = None,
                softcap: float = 0.0) -> None:
        """out (n, n_head, head_v) = softmax(Q K^T + mask) V per kv head and query chunk (Q already
        scaled); query head h * g + i reads kv head h. `sinks` (n_head,) are per-head logits that
        join every softmax without a value (ggml_soft_max_add_sinks, gpt-oss).

        Every (kv head, query chunk) pair is an independent task (its own sgemms on one BLAS
        thread and its own softmax, both releasing the GIL), spread over the model's worker
        threads, the longest (latest chunks see the most keys) first so the threads end together.
        """
        n_kv, g, n, head_k = Q.shape

        def task(h: int, chunk: tuple[int, int, int, int, np.ndarray]) -> None:
            c0, c1, t0, t1, mask = chunk
            m = c1 - c0
            Qc = Q[h] if m == n else np.ascontiguousarray(Q[h, :, c0:c1])
            s = np.dot(Qc.reshape(g * m, head_k), K[h, t0:t1].T)   # (g*m, t1-t0)
            if softcap:
                ops.softcap_(s, softcap)  # build_attn_mha's attn_soft_cap, before the mask
            s.reshape(g, m, t1 - t0)[...] += mask
            if sinks is None:
                ops.softmax_(s)
            else:
                ops.softmax_sinks_(s, np.repeat(sinks[h * g:(h + 1) * g], m))
            out[c0:c1, h * g:(h + 1) * g] = np.dot(s, V[h, t0:t1]).reshape(g, m, -1).transpose(1, 0, 2)

        tasks = sorted(((h, c) for h in range(n_kv) for c in chunks), key=lambda hc: -(hc[1][1] - hc[1][0]) * (hc[1][3] - hc[1][2]))
        pool = self._workers()
        if pool is None or len(tasks) == 1 or n <= DECODE_ROWS:
            for h, c in tasks:
                task(h, c)
        else:
            for f in [pool.submit(task, h, c) for h, c in tasks]:
                f.result()

    def _matmul(self, x: npt.NDArray[np.float32], w: npt.NDArray[np.float32] | StackedRows,
                cuts: tuple[int, ...] | None = None) -> Any:
        """x (n, k) @ w.T for w (m, k): one single-threaded sgemm per worker on its share of w's rows.

        Splitting the product ourselves instead of letting OpenBLAS thread it keeps OpenBLAS's
        workers idle: after a threaded call they spin for a while and would take the cores from
        the attention tasks and element-wise ops that follow. Splitting w (contiguous row
        blocks) rather than x keeps each sgemm packing only its own part of the weights. With
        `cuts` (row offsets 0 < ... < m) the column blocks between them come back as a list;
        when there are as many blocks as threads each is its own sgemm's array, with no copy.
        A streamed `w` (`StackedRows`) is dequantized block by block inside each worker's share.
        """
        x = np.ascontiguousarray(x, dtype=F32)
        n, m = x.shape[0], w.shape[0]
        pool = self._workers()
        if cuts is not None and pool is not None and len(cuts) - 1 == self.threads:
            futures = [pool.submit(dot_rows, x, w, a, b) for a, b in zip(cuts[:-1], cuts[1:])]
            return [f.result() for f in futures]
        parts = min(self.threads, m // 64)  # at least 64 weight rows a share
        if pool is None or parts < 2:
            y = dot_rows(x, w, 0, m)
        else:
            y = np.empty((n, m), dtype=F32)

            def part(a: int, b: int) -> None:
                dot_rows(x, w, a, b, out=y[:, a:b])

            ops.Rows(pool, parts)(m, part)
        return y if cuts is None else [y[:, a:b] for a, b in zip(cuts[:-1], cuts[1:])]

    @property
    def _rows(self) -> ops.Rows:
        """Splits a batch's element-wise work over the worker threads."""
        return ops.Rows(self._workers(), self.threads)

    def _workers(self) -> ThreadPoolExecutor | None:
        n = self.threads
        if n <= 1:
            return None
        if self._pool is None or self._pool_size != n:
            if self._pool is not None:
                self._pool.shutdown()
            self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="llmtk-attn")
            self._pool_size = n
        return self._pool

    def _ffn(self, il: int, x: npt.NDArray[np.float32], hook: Hook | None) -> npt.NDArray[np.float32]:
        L = self.layers[il]
        if L.experts is not None:
            return moe.moe_ffn(self, il, x, hook)
        act = self.spec.act
        if act == "gelu_tanh" and self.quantize_activations:
            act = "gelu_f16"  # ggml-cpu reads GELU from a float16 table: round as it does
        if not self.spec.ffn_gated:  # build_ffn without a gate: up (+b), act, down (+b)
            params = self.hp.xielu[il] if act == "xielu" else ()
            y = ops.act(act, self._mm(x, L.up, hook, L.b_up), params, self._rows)
            return self._mm(y, L.down, hook, L.b_down)
        if len(L.ffn_in) == 2:
            g, u = self._proj(x, L.ffn_in, L.ffn_in_b, hook, separate=True)
        else:  # one fused gate|up tensor (phi3)
            gu = self._proj(x, L.ffn_in, L.ffn_in_b, hook)
            n_ff = gu.shape[1] // 2
            g, u = gu[:, :n_ff], gu[:, n_ff:]
        return self._mm(ops.glu(act, g, u, self._rows), L.down, hook, L.b_down)

    # --- the forward pass ----------------------------------------------------------------

    def forward(self, tokens: npt.ArrayLike, cache: KVCache | None = None, hook: Hook | None = None, *,
                all_logits: bool = True, first_logit: int = 0) -> npt.NDArray[np.float32]:
        """Logits (n, n_vocab) float32 for `tokens` (n,) int32, continuing `cache` if given.

        Without a cache the tokens are a fresh sequence at positions 0..n-1. With one they sit
        at positions cache.n_past.. and are appended to it, so decoding one token at a time
        gives the same logits as one forward over the whole sequence. `hook(name, x)` sees the
        float32 activations entering every matmul (for importance matrices). `all_logits=False`
        returns only the last token's row (1, n_vocab), as llama.cpp computes for generation;
        `first_logit` returns rows first_logit.. only (the final block and the output run on
        those rows alone), as llama-perplexity asks for just the scored half of a chunk.
        """
        # OpenBLAS stays on one thread: batches split their sgemms over the model's own workers,
        # decoding runs its matvecs on numba threads
        with _blas.threads(1), _blas.numba_threads(self.threads):
            return self._forward(tokens, cache, hook, all_logits, first_logit)

    def _forward(self, tokens: npt.ArrayLike, cache: KVCache | None, hook: Hook | None,
                 all_logits: bool, first_logit: int = 0) -> npt.NDArray[np.float32]:
        hp, spec = self.hp, self.spec
        ids = np.asarray(tokens)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise InputError(f"tokens must be a 1-D integer array, got shape {ids.shape} dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        n = ids.size
        if n == 0:
            return np.zeros((0, hp.n_vocab), dtype=F32)
        if cache is None:
            cache = self.new_cache(n)
        if cache.n_past + n > cache.n_ctx:
            raise InputError(f"{n} tokens after {cache.n_past} cached ones exceed the cache size n_ctx={cache.n_ctx}")
        if ids.min() < 0 or ids.max() >= hp.n_vocab:
            bad = int(ids[(ids < 0) | (ids >= hp.n_vocab)][0])
            raise InputError(f"token id {bad} is outside the vocabulary (n_vocab={hp.n_vocab})")

        x = self.w.rows("token_embd.weight", ids)
        if spec.embed_scale:
            x = x * F32(math.sqrt(hp.n_embd))
        if hp.embedding_scale:  # build_inp_embd's f_embedding_scale (granite)
            x = x * F32(hp.embedding_scale)
        pos = np.arange(cache.n_past, cache.n_past + n, dtype=np.int64)
        ff = self._rope_factors(cache.n_ctx)
        rope_tab = {False: rope.rope_tables(pos, hp.n_rot, hp.rope_base, hp.freq_scale, self.yarn, ff)}
        if any(hp.is_swa):
            # llama_model::get_rope_freq_base/scale: sliding layers have their own base and scale
            rope_tab[True] = rope.rope_tables(pos, hp.n_rot, hp.rope_base_swa, hp.swa_rope_scale, self.yarn, ff)
        ctx = _Batch(hp, cache.n_past, n, rope_tab)

        last = len(self.layers) - 1
        out0 = n - 1 if not all_logits else min(max(int(first_logit), 0), n - 1)  # first row of logits
        res = F32(hp.residual_scale) if hp.residual_scale else None  # granite's f_residual_scale
        for il, L in enumerate(self.layers):
            a_in = self._norm(x, L.attn_norm)
            h = self._attention(il, a_in, cache, ctx, hook)
            if il == last and out0:
                # only rows out0.. reach the output: skip the rest of the final block for the
                # others, as llama.cpp's graphs do with inp_out_ids
                h, x, a_in = h[out0:], x[out0:], a_in[out0:]
            if spec.parallel:
                # command-r, cohere2: the FFN reads attn_norm's output too; x + ffn, then + attn
                x = ops.add(ops.add(self._ffn(il, a_in, hook), x, self._rows), h, self._rows)
                continue
            if L.post_attn_norm is not None:
                h = self._norm(h, L.post_attn_norm)
            if res is not None:
                h = h * res
            x = ops.add(x, h, self._rows)
            h = self._ffn(il, self._norm(x, L.ffn_norm), hook)
            if L.post_ffn_norm is not None:
                h = self._norm(h, L.post_ffn_norm)
            if res is not None:
                h = h * res
            x = ops.add(x, h, self._rows)
        cache.n_past += n

        x = self._norm(x, "output_norm.weight")
        logits = self._mm(x, self.output, hook, self.output_bias)
        if hp.logit_scale != 1.0:  # granite: 1/logit_scale, cohere: logit_scale
            logits *= F32(hp.logit_scale)
        if hp.softcap:  # gemma2/3: cap * tanh(logits * (1/cap)), three ggml ops
            logits *= F32(1.0) / F32(hp.softcap)
            np.tanh(logits, out=logits)
            logits *= F32(hp.softcap)
        return logits


def load_model(path: "str | Path | Any", *, weight_budget: int = DEFAULT_BUDGET,
               threads: int | None = None, quantize_activations: bool = True,
               cache_type_k: str = "f16", cache_type_v: str = "f16") -> Model:
    """Open a GGUF model (a path or an open `GGUFReader`) for `Model.forward`.

    `weight_budget` bounds the bytes of float32 weights kept dequantized between calls;
    `threads` is the number of worker threads a batch's sgemms, attention and element-wise ops
    are split over (OpenBLAS itself runs on one) and of numba threads when decoding (None: all
    cores, or one when the 1-minute load average already reaches the core count); it may be
    changed on the model between calls.
    `quantize_activations` rounds each matmul's input to the weight type's vec_dot_type (F16,
    Q8_0, Q8_1, Q8_K...) and reads GELU from ggml-cpu's float16 table, as ggml's CPU backend
    does, so quantized models score as in llama.cpp; False keeps exact float32 activations (and
    GELU in float32, as transformers); float32 weights are otherwise unaffected.
    `cache_type_k`/`cache_type_v` ("f16", the default as in llama.cpp, "bf16" or "f32") are the
    precisions keys and values are rounded to in the KV cache; "f32" keeps them exact.
    """
    owns = isinstance(path, (str, Path))
    if owns and not Path(path).is_file():
        raise InputError(f"model file {str(path)!r} does not exist")
    reader = open_reader(path)
    try:
        return Model(reader, weight_budget=weight_budget, threads=threads, quantize_activations=quantize_activations,
                     cache_type_k=cache_type_k, cache_type_v=cache_type_v, owns_reader=owns)
    except LlmtkError as e:
        if owns:
            reader.close()
        where = str(getattr(reader, "path", path))
        if where in str(e):
            raise
        raise type(e)(f"{where}: {e}") from None
