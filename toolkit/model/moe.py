"""Mixture-of-experts feed-forward blocks: llama.cpp's router and sparse expert products.

`route` is `llm_graph_context::build_moe_ffn`'s routing as data in, ids and weights out: the
gating function (softmax, sigmoid, or softmax over the selected logits), the DeepSeek-V3
selection bias (`exp_probs_b`, which moves the choice but not the weights), group-limited top-k
(the best `n_group_used` groups by the sum of their two best scores), renormalisation and
scaling. `moe_ffn` runs a layer's routed experts sparsely (each expert multiplies only the tokens
routed to it), adds the shared experts (qwen2moe's behind a sigmoid gate) and returns the block's
output. What differs between architectures is a `MoeSpec` row; the optional tensors (biases,
selection bias, shared experts) are taken from the file as llama.cpp's loaders do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from llmtk.errors import ShapeError
from llmtk.kernels.activations import round_activations

from . import ops

if TYPE_CHECKING:
    from .model import Model

F32 = np.float32

# llama_expert_gating_func_type: the values of `<arch>.expert_gating_func`
GATING_FUNCS = {1: "softmax", 2: "sigmoid", 3: "softmax_weight"}
# build_moe_ffn clamps the sum of the kept weights to the smallest normal float16 before dividing
WEIGHTS_SUM_MIN = F32(6.103515625e-5)
# LLM_FFN_SWIGLU_OAI_MOE (gpt-oss): ggml_swiglu_oai's alpha and limit
OAI_ALPHA = F32(1.702)
OAI_LIMIT = F32(7.0)


@dataclass(frozen=True)
class MoeSpec:
    """How an architecture routes tokens to experts (the arguments its graph passes to build_moe_ffn).

    `gating` is the default gating function; with `reads_keys` the file's `expert_gating_func`,
    `expert_weights_norm` and `expert_weights_scale` override it and `norm_w` (dots1, glm4moe,
    deepseek2; None: the file must name it). `select_on_logits`/`weight_before_ffn` are llama4's
    top-k on the raw router logits and router weights applied to the expert input.
    """

    gating: str | None = "softmax"
    norm_w: bool = True
    reads_keys: bool = False
    act: str = "silu"                 # "silu" (SwiGLU) or "swiglu_oai" (gpt-oss, clamped, with biases)
    select_on_logits: bool = False
    weight_before_ffn: bool = False


@dataclass
class Experts:
    """Tensor names of one MoE block beyond the 3-D gate/up/down the `Layer` holds."""

    gate_inp: str
    gate_inp_b: str | None
    exp_probs_b: str | None
    b_gate: str | None               # (n_expert, n_ff) expert biases (gpt-oss)
    b_up: str | None
    b_down: str | None
    shexp: tuple[str | None, str, str] | None   # shared expert gate, up, down (2-D)
    shexp_gate_inp: str | None        # qwen2moe: sigmoid(x @ w) scales the shared expert


def layer_experts(tensors: dict[str, Any], il: int) -> Experts | None:
    """The MoE tensors of block `il`, or None when it is a dense block (no router)."""
    def opt(suffix: str) -> str | None:
        name = f"blk.{il}.{suffix}"
        return name if name in tensors else None

    gate_inp = opt("ffn_gate_inp.weight")
    if gate_inp is None:
        return None
    up_sh, down_sh = opt("ffn_up_shexp.weight"), opt("ffn_down_shexp.weight")
    if (up_sh is None) != (down_sh is None):
        raise ShapeError(f"block {il} has only one of ffn_up_shexp/ffn_down_shexp")
    return Experts(
        gate_inp=gate_inp, gate_inp_b=opt("ffn_gate_inp.bias"), exp_probs_b=opt("exp_probs_b.bias"),
        b_gate=opt("ffn_gate_exps.bias"), b_up=opt("ffn_up_exps.bias"), b_down=opt("ffn_down_exps.bias"),
        shexp=(opt("ffn_gate_shexp.weight"), up_sh, down_sh) if up_sh else None,
        shexp_gate_inp=opt("ffn_gate_inp_shexp.weight"),
    )


def check_shapes(check: Any, X: Experts, n_expert: int, n_embd: int, n_ff: int) -> None:
    """Shapes of the optional MoE tensors (numpy order), through model._check_shapes' `check`."""
    check(X.gate_inp_b, n_expert)
    if X.exp_probs_b is not None:   # {n_expert} or {n_expert, 1} (ernie4_5-moe's converter)
        try:
            check(X.exp_probs_b, n_expert)
        except ShapeError:
            check(X.exp_probs_b, 1, n_expert)
    check(X.b_gate, n_expert, n_ff)
    check(X.b_up, n_expert, n_ff)
    check(X.b_down, n_expert, n_embd)
    if X.shexp is not None:
        g, u, d = X.shexp
        n_sh = check(d, n_embd, None)[1]
        check(u, n_sh, n_embd)
        check(g, n_sh, n_embd)
    if X.shexp_gate_inp is not None:   # {n_embd} (llama-quantize's output) or {n_embd, 1} (the converter's)
        try:
            check(X.shexp_gate_inp, n_embd)
        except ShapeError:
            check(X.shexp_gate_inp, 1, n_embd)


def _sigmoid(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return (F32(1.0) / (F32(1.0) + np.exp(-x))).astype(F32)


def route(logits: npt.NDArray[np.float32], n_used: int, *, gating: str, norm_w: bool, scale: float,
          bias: npt.NDArray[np.float32] | None = None, n_groups: int = 0, n_group_used: int = 0,
          select_on_logits: bool = False) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """Expert ids (n, n_used) int32 and weights (n, n_used) float32 from router logits (n, n_expert),
    as llm_graph_context::build_moe_ffn computes them.

    The selection uses probs + bias (`exp_probs_b`), restricted to the best `n_group_used` of
    `n_groups` expert groups (each scored by the sum of its two best entries), or the raw logits
    (`select_on_logits`, llama4); the weights are the unbiased probs of the chosen experts, a
    softmax over the chosen logits for "softmax_weight" (gpt-oss), then renormalised (`norm_w`, the
    sum clamped to 2^-14) and multiplied by `scale` unless it is 0 or 1.
    """
    logits = np.asarray(logits, dtype=F32)
    n, n_expert = logits.shape
    if gating == "softmax":
        probs = ops.softmax(logits)
    elif gating == "sigmoid":
        probs = _sigmoid(logits)
    elif gating == "softmax_weight":
        probs = logits
    else:
        raise ValueError(f"unknown gating function {gating!r}")
    select = probs if bias is None else probs + bias.reshape(1, n_expert)
    if select_on_logits:
        select = logits
    if n_groups > 1 and n:
        per = n_expert // n_groups
        grouped = select.reshape(n, n_groups, per)
        top2 = -np.sort(-grouped, axis=2)[:, :, :2]
        group_score = top2.sum(axis=2, dtype=F32)                              # (n, n_groups)
        keep = np.argsort(-group_score, axis=1, kind="stable")[:, :n_group_used]
        masked = np.full_like(grouped, -np.inf)
        rows = np.arange(n)[:, None]
        masked[rows, keep] = grouped[rows, keep]
        select = masked.reshape(n, n_expert)
    ids = np.argsort(-select, axis=1, kind="stable")[:, :n_used].astype(np.int32)
    w = np.take_along_axis(probs, ids, axis=1).astype(F32)
    if gating == "softmax_weight":
        w = ops.softmax(w)
    if norm_w:
        w = w / np.maximum(w.sum(axis=1, keepdims=True, dtype=F32), WEIGHTS_SUM_MIN)
    if scale not in (0.0, 1.0):
        w = w * F32(scale)
    return ids, w.astype(F32)


def _shared_gate_logit(model: "Model", x: npt.NDArray[np.float32], name: str, hook: Any) -> npt.NDArray[np.float32]:
    """x (n, n_embd) . w for qwen2moe's shared-expert gate (one row, stored 1-D or 2-D): (n, 1)."""
    if hook is not None:
        hook(name, x)
    xr = round_activations(np.ascontiguousarray(x, dtype=F32), model._vec_dot_type(name), model._rows) \
        if model.quantize_activations else x
    return (xr @ model.w.get(name).reshape(-1, 1)).astype(F32)


def _each_expert(model: "Model", fn: Any, routes: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
    """fn(e, tokens, slots) for every routed expert, spread over the model's worker threads (each
    expert's products and dequantization on one thread; experts write disjoint (token, slot) rows)."""
    from ._blas import numba_threads

    def run(route: tuple[int, np.ndarray, np.ndarray]) -> None:
        with numba_threads(1):
            fn(*route)
    pool = model._workers()
    if pool is None or len(routes) < 2:
        for r in routes:
            run(r)
        return
    for f in [pool.submit(run, r) for r in routes]:
        f.result()


def _swiglu_oai(g: npt.NDArray[np.float32], u: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    # ggml_compute_forward_swiglu_oai: x = min(gate, limit), y = clamp(up, -limit, limit),
    # x * sigmoid(alpha * x) * (y + 1)
    x = np.minimum(g, OAI_LIMIT)
    y = np.clip(u, -OAI_LIMIT, OAI_LIMIT)
    return (x / (F32(1.0) + np.exp(-OAI_ALPHA * x)) * (y + F32(1.0))).astype(F32)


def moe_ffn(model: "Model", il: int, x: npt.NDArray[np.float32], hook: Any) -> npt.NDArray[np.float32]:
    """Block il's MoE output (n, n_embd) for its normalised input x (n, n_embd): routed experts,
    each run on its own tokens only, plus the shared experts (llama.cpp adds moe_out + shexp_out)."""
    hp, L = model.hp, model.layers[il]
    spec: MoeSpec = model.spec.moe
    X: Experts = L.experts
    k = hp.n_expert_used
    logits = model._mm(x, X.gate_inp, hook, X.gate_inp_b)
    bias = model.w.get(X.exp_probs_b) if X.exp_probs_b is not None else None
    ids, wts = route(logits, k, gating=hp.expert_gating, norm_w=hp.expert_weights_norm,
                     scale=hp.expert_weights_scale, bias=bias, n_groups=hp.n_expert_groups,
                     n_group_used=hp.n_group_used, select_on_logits=spec.select_on_logits)
    out = _experts(model, L, X, spec, x, ids, wts, hook)
    if X.shexp is not None:
        gate, up, down = X.shexp
        if gate is not None:
            g, u = model._proj(x, (gate, up), (None, None), hook, separate=True)
            h = ops.glu("silu", g, u, model._rows)
        else:
            h = ops.glu("silu", model._mm(x, up, hook), np.ones(1, F32))
        sh = model._mm(h, down, hook)
        if X.shexp_gate_inp is not None:
            sh = sh * _sigmoid(_shared_gate_logit(model, x, X.shexp_gate_inp, hook))
        out = ops.add(out, sh, model._rows)
    return out


def _experts(model: "Model", L: Any, X: Experts, spec: MoeSpec, x: npt.NDArray[np.float32],
             ids: npt.NDArray[np.int32], wts: npt.NDArray[np.float32], hook: Any) -> npt.NDArray[np.float32]:
    """sum over slots of w * down_e(act(gate_e(x), up_e(x))) with each expert's matrices applied to
    the rows routed to it only (llama.cpp's mul_mat_id). Inputs are rounded to each weight's
    vec_dot_type first, as ggml's CPU backend does."""
    w = model.w
    n, k = ids.shape
    if spec.weight_before_ffn:   # llama4: the expert input of slot j is x * w_j
        xin = x[:, None, :] * wts[:, :, None]                                  # (n, k, n_embd)
    else:
        xin = np.broadcast_to(x[:, None, :], (n, k, x.shape[1]))
    if hook is not None:
        if L.gate is not None:
            hook(L.gate, xin, ids)
        hook(L.up, xin, ids)

    def rounded(a: npt.NDArray[np.float32], name: str) -> npt.NDArray[np.float32]:
        if not model.quantize_activations:
            return a
        return round_activations(np.ascontiguousarray(a, dtype=F32), model._vec_dot_type(name))

    n_ff = w.shape(L.down)[2]
    flat = xin.reshape(n * k, -1) if spec.weight_before_ffn else x
    xin_up = rounded(flat, L.up)
    xin_gate = xin_up if L.gate is None or model._vec_dot_type(L.gate) == model._vec_dot_type(L.up) \
        else rounded(flat, L.gate)
    act = np.zeros((n, k, n_ff), dtype=F32)
    b_gate = w.get(X.b_gate) if X.b_gate is not None else None
    b_up = w.get(X.b_up) if X.b_up is not None else None
    routes = [(int(e), *np.nonzero(ids == e)) for e in np.unique(ids)]   # (expert, tokens, slots)

    def gate_up(e: int, tok: np.ndarray, slot: np.ndarray) -> None:
        rows = tok * k + slot if spec.weight_before_ffn else tok
        if L.gate is None:   # fused gate|up experts
            gu = xin_up[rows] @ w.expert(L.up, e).T
            g, u = gu[:, :n_ff], gu[:, n_ff:]
        else:
            g = xin_gate[rows] @ w.expert(L.gate, e).T
            u = xin_up[rows] @ w.expert(L.up, e).T
        if b_gate is not None:
            g = g + b_gate[e]
        if b_up is not None:
            u = u + b_up[e]
        act[tok, slot] = _swiglu_oai(g, u) if spec.act == "swiglu_oai" else ops.glu("silu", g, u)

    _each_expert(model, gate_up, routes)
    if hook is not None:
        hook(L.down, act, ids)
    act_in = rounded(act.reshape(n * k, n_ff), L.down).reshape(n, k, n_ff)
    b_down = w.get(X.b_down) if X.b_down is not None else None
    per_slot = np.zeros((n, k, w.shape(L.down)[1]), dtype=F32)

    def down(e: int, tok: np.ndarray, slot: np.ndarray) -> None:
        y = act_in[tok, slot] @ w.expert(L.down, e).T
        if b_down is not None:
            y = y + b_down[e]
        per_slot[tok, slot] = y

    _each_expert(model, down, routes)
    if not spec.weight_before_ffn:
        per_slot *= wts[:, :, None]
    out = per_slot[:, 0].copy()
    for j in range(1, k):   # llama.cpp adds the slots' views in order
        out += per_slot[:, j]
    return out
