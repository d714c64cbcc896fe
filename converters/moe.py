"""Mixture-of-experts pieces shared by the MoE converters.

Checkpoints store routed experts either one tensor per expert and projection
(`model.layers.3.mlp.experts.17.gate_proj.weight`) or already stacked in 3-D. llama.cpp's converters
stack the former into one `(n_expert, rows, cols)` tensor per projection and layer, in a fixed
projection order, once the last expert of the layer has arrived (`Qwen2MoeModel.modify_tensors` and
its copies in the OLMoE, Phi-MoE, dots1, GLM-4.5, DeepSeek and ERNIE converters). `ExpertStacking`
is that rule as data: a converter names its per-expert template, the merged name and the projection
order, and the mixin buffers the lazy expert tensors (headers only: no weight is read until the
stacked tensor is written, slab by slab of rows).
"""
from __future__ import annotations

import re
from typing import Any, Callable, ClassVar, Iterator

import numpy as np

from llmtk.errors import ShapeError

from .base import ModelConverter
from .source import LazyTensor

# gguf-py's names of a MoE block's tensors, shared by the MoE tensor maps
ROUTER = "blk.{bid}.ffn_gate_inp"
GATE_EXPS, UP_EXPS, DOWN_EXPS = "blk.{bid}.ffn_gate_exps", "blk.{bid}.ffn_up_exps", "blk.{bid}.ffn_down_exps"
GATE_SHEXP, UP_SHEXP, DOWN_SHEXP = "blk.{bid}.ffn_gate_shexp", "blk.{bid}.ffn_up_shexp", "blk.{bid}.ffn_down_shexp"
EXP_PROBS_B = "blk.{bid}.exp_probs_b"

# the rows every llama-shaped decoder's tensor map starts with (HF name -> GGUF name)
DECODER_CORE: dict[str, str] = {
    "model.embed_tokens": "token_embd",
    "lm_head": "output",
    "model.norm": "output_norm",
    "model.layers.{bid}.input_layernorm": "blk.{bid}.attn_norm",
    "model.layers.{bid}.self_attn.q_proj": "blk.{bid}.attn_q",
    "model.layers.{bid}.self_attn.k_proj": "blk.{bid}.attn_k",
    "model.layers.{bid}.self_attn.v_proj": "blk.{bid}.attn_v",
    "model.layers.{bid}.self_attn.o_proj": "blk.{bid}.attn_output",
}


def expert_rows(block: str = "mlp", *, router: str = "gate", experts: str = "experts", shared: str | None = None,
                bias: str | None = None) -> dict[str, str]:
    """HF name -> GGUF name of one MoE block `model.layers.{bid}.<block>`: its `<router>`, the
    stacked `<experts>.{gate,up,down}_proj`, the `<shared>` expert's projections and the
    `<bias>` of expert selection when the architecture has them (HF spellings differ by family,
    the GGUF names do not)."""
    stem = "model.layers.{bid}." + block + "."
    rows = {stem + router: ROUTER, stem + experts + ".gate_proj": GATE_EXPS,
            stem + experts + ".up_proj": UP_EXPS, stem + experts + ".down_proj": DOWN_EXPS}
    if bias is not None:
        rows[stem + bias] = EXP_PROBS_B
    if shared is not None:
        rows.update({stem + shared + ".gate_proj": GATE_SHEXP, stem + shared + ".up_proj": UP_SHEXP,
                     stem + shared + ".down_proj": DOWN_SHEXP})
    return rows


class ExpertStacking(ModelConverter):
    """Stacks per-expert checkpoint tensors into llama.cpp's merged 3-D expert tensors.

    A converter sets `expert_template` (HF name with `{bid}`, `{xid}` and `{w}`), `expert_merged`
    (the merged HF name with `{bid}` and `{w}`, mapped through `tensor_map`) and
    `expert_projections` (the `{w}` values in the order llama.cpp writes them). Tensors matching
    the template are buffered per block; everything else goes to the next `modify_tensors`.
    """

    expert_template: ClassVar[str] = "model.layers.{bid}.mlp.experts.{xid}.{w}.weight"
    expert_merged: ClassVar[str] = "model.layers.{bid}.mlp.experts.{w}.weight"
    expert_projections: ClassVar[tuple[str, ...]] = ("down_proj", "gate_proj", "up_proj")
    expert_count_keys: ClassVar[tuple[str, ...]] = ("num_local_experts", "num_experts")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._experts: dict[int, dict[str, LazyTensor]] = {}
        ws = "|".join(re.escape(w) for w in self.expert_projections)
        pattern = re.escape(self.expert_template).replace(re.escape("{bid}"), r"\d+") \
            .replace(re.escape("{xid}"), r"\d+").replace(re.escape("{w}"), f"(?:{ws})")
        self._expert_re = re.compile(pattern)

    def is_expert_tensor(self, name: str) -> bool:
        return self._expert_re.fullmatch(name) is not None

    def n_experts(self) -> int:
        return self.find_hparam(self.expert_count_keys)

    def modify_tensors(self, t: LazyTensor, name: str, bid: int | None) -> Iterator[tuple[str, LazyTensor]]:
        if bid is not None and self.is_expert_tensor(name):
            yield from self.stack_experts(
                self._experts, bid, name, t, self.n_experts(),
                [(self.expert_template.replace("{w}", w), self.expert_merged.replace("{w}", w))
                 for w in self.expert_projections])
            return
        yield from super().modify_tensors(t, name, bid)

    def finish_tensors(self) -> None:
        super().finish_tensors()
        self.check_buffers_empty(self._experts)


def per_expert(t: LazyTensor, fn: Callable[[np.ndarray], np.ndarray], shape: tuple[int, ...]) -> LazyTensor:
    """A lazy transform of stacked experts `t` (n_expert, rows, cols) applied one expert at a time:
    `fn` maps one expert's matrix to the output expert's matrix of `shape[1:]` (a transpose, a
    slice). Reading rows computes only the experts they touch (the last one kept for the next
    slab), so converting the result holds one expert, not the whole layer."""
    if t.ndim != 3 or len(shape) != 3 or shape[0] != t.shape[0]:
        raise ShapeError(f"expert transform of shape {list(t.shape)} to {list(shape)}: expected two "
                         "(n_expert, rows, cols) shapes")
    n_expert, out_rows = shape[0], shape[1]
    in_rows = t.shape[1]

    def expert(e: int) -> np.ndarray:
        x = t.rows(e * in_rows, (e + 1) * in_rows) if t.rows is not None else t.numpy()[e]
        y = np.ascontiguousarray(fn(x))
        if y.shape != tuple(shape[1:]):
            raise AssertionError(f"expert transform computed {y.shape}, declared {tuple(shape[1:])}")
        return y

    def load() -> np.ndarray:
        return np.stack([expert(e) for e in range(n_expert)])

    last: dict[int, np.ndarray] = {}

    def rows(a: int, b: int) -> np.ndarray:
        parts = []
        for e in range(a // out_rows, (b - 1) // out_rows + 1):
            if e not in last:
                last.clear()
                last[e] = expert(e)
            lo, hi = max(a, e * out_rows) - e * out_rows, min(b, (e + 1) * out_rows) - e * out_rows
            parts.append(last[e][lo:hi])
            if hi == out_rows:
                last.clear()
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    return LazyTensor(tuple(shape), t.dtype, load, rows, t.release)


def split_fused_rows(t: LazyTensor, n_first: int) -> tuple[LazyTensor, LazyTensor]:
    """A tensor whose rows are two projections one after the other (gate then up; per expert for
    3-D stacks) as two lazy halves, the first `n_first` rows and the rest (llama.cpp's
    `split(n, dim=-2)`); stacks are split expert by expert (`per_expert`)."""
    if t.ndim < 2 or not 0 < n_first < t.shape[-2]:
        raise ShapeError(f"fused tensor of shape {list(t.shape)} cannot be split after row {n_first}")
    first = (*t.shape[:-2], n_first, t.shape[-1])
    rest = (*t.shape[:-2], t.shape[-2] - n_first, t.shape[-1])
    if t.ndim == 3:
        return (per_expert(t, lambda x: x[:n_first], first), per_expert(t, lambda x: x[n_first:], rest))
    return (t.map(lambda x: x[..., :n_first, :], first), t.map(lambda x: x[..., n_first:, :], rest))
