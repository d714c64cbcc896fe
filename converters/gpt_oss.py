"""gpt-oss: GptOssForCausalLM -> GGUF arch `gpt-oss`.

llama.cpp's `GptOssModel`. The experts come stacked in 3-D, laid out for `x @ W` (n_expert, in, out),
with gate and up interleaved row by row in `gate_up_proj` (even rows gate, odd rows up), and
biases. Two checkpoint forms:
- float experts (`mlp.experts.down_proj`, `gate_up_proj`): transposed to (n_expert, out, in) and
  split into `ffn_{gate,up,down}_exps`, then typed like any other weight;
- MXFP4 experts (`*_blocks` uint8 (n_expert, rows, n_blocks, 16), `*_scales` uint8 E8M0 (n_expert,
  rows, n_blocks)): repacked losslessly into ggml's `block_mxfp4` and written as MXFP4 whatever the
  outtype, ahead of every other tensor (llama.cpp adds them in `generate_extra_tensors`).
Attention sinks become `attn_sinks.weight`; the sliding window and the expert width are written.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from llmtk.errors import InputError, ShapeError
from llmtk.ggufio.constants import GGMLType

from .base import KA, KL, ModelConverter
from .kv import KVStore
from .moe import DECODER_CORE, expert_rows, per_expert
from .source import LazyTensor

_LAYER = "model.layers.{bid}."
GPT_OSS_TENSORS: dict[str, str] = {
    **DECODER_CORE,
    _LAYER + "self_attn.sinks": "blk.{bid}.attn_sinks",
    _LAYER + "post_attention_layernorm": "blk.{bid}.post_attention_norm",
    **expert_rows(router="router"),
}

# transformers' GptOssConfig defaults llama.cpp reads
_GPT_OSS_DEFAULTS = {"vocab_size": 201088, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
                     "rope_theta": 150000.0, "intermediate_size": 2880, "head_dim": 64, "sliding_window": 128,
                     "num_local_experts": 128, "num_experts_per_tok": 4, "num_attention_heads": 64,
                     "num_key_value_heads": 8,
                     "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                                      "truncate": False, "original_max_position_embeddings": 4096}}

MXFP4_BLOCK = 32  # values per block_mxfp4: one E8M0 scale byte, then 16 bytes of 4-bit codes


def repack_mxfp4(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """OpenAI's MXFP4 layout -> ggml's `block_mxfp4` bytes, losslessly (llama.cpp's
    `GptOssModel.repack_mxfp4`).

    `blocks` uint8 (..., n_blocks, 16): byte j holds value 2j in its low nibble, 2j+1 in its high
    one; `scales` uint8 (..., n_blocks): the E8M0 exponents. ggml's block is the scale byte, then
    16 bytes where byte j holds value j (low nibble) and value j + 16 (high nibble); the 4-bit
    codes index the same E2M1 table on both sides. Returns uint8 (..., n_blocks * 17).
    """
    if blocks.shape[-1] != MXFP4_BLOCK // 2 or blocks.shape[:-1] != scales.shape:
        raise ShapeError(f"MXFP4 blocks {list(blocks.shape)} and scales {list(scales.shape)} do not pair up "
                         f"(expected (..., n_blocks, 16) and (..., n_blocks))")
    values = np.stack((blocks & 0x0F, blocks >> 4), axis=-1).reshape(*blocks.shape[:-1], MXFP4_BLOCK)
    qs = values[..., :16] | (values[..., 16:] << 4)
    out = np.concatenate((scales[..., None], qs), axis=-1)  # (..., n_blocks, 17)
    return np.ascontiguousarray(out, dtype=np.uint8).reshape(*blocks.shape[:-2], -1)


def _as_bytes(x: np.ndarray) -> np.ndarray:
    """U8 checkpoint values (read widened to exact float32 integers) as bytes again."""
    return np.asarray(x).astype(np.uint8)


class GptOssConverter(ModelConverter):
    model_arch = "gpt-oss"
    tensor_map = GPT_OSS_TENSORS
    hparam_defaults = _GPT_OSS_DEFAULTS

    def filter_tensors(self, name: str) -> str | None:
        if "sinks" in name:
            name += ".weight"
        return super().filter_tensors(name)

    def set_gguf_parameters(self, kv: KVStore) -> None:
        super().set_gguf_parameters(kv)
        kv.u32(KA.SLIDING_WINDOW, self.hparams["sliding_window"])
        kv.u32(KL.EXPERT_FEED_FORWARD_LENGTH, self.hparams["intermediate_size"])

    def generate_extra_tensors(self) -> Iterable[tuple[str, LazyTensor]]:
        """The MXFP4 expert tensors, in checkpoint order, each when its scales follow its blocks."""
        out: list[tuple[str, LazyTensor]] = []
        blocks: dict[str, LazyTensor] = {}
        for name, t in self.source_tensors.items():
            for proj in ("down_proj", "gate_up_proj"):
                stem = f"mlp.experts.{proj}_"
                if stem + "blocks" in name:
                    blocks[name.replace("_blocks", "")] = t
                elif stem + "scales" in name:
                    key = name.replace("_scales", "")
                    if key not in blocks:
                        raise InputError(f"{self.hf_dir}: {name} has no {key}_blocks before it")
                    b = blocks.pop(key)
                    if proj == "down_proj":
                        out.append((key + ".weight", self._mxfp4(b, t, key, None)))
                    else:
                        base = key.removesuffix(".gate_up_proj")
                        out.append((base + ".gate_proj.weight", self._mxfp4(b, t, key, 0)))
                        out.append((base + ".up_proj.weight", self._mxfp4(b, t, key, 1)))
        if blocks:
            raise InputError(f"{self.hf_dir}: MXFP4 blocks without scales: {sorted(blocks)[:4]}")
        return out

    @staticmethod
    def _mxfp4(blocks: LazyTensor, scales: LazyTensor, name: str, parity: int | None) -> LazyTensor:
        """One stacked MXFP4 expert tensor; `parity` 0/1 keeps the even (gate) or odd (up) rows."""
        if len(blocks.shape) != 4 or blocks.shape[-1] != MXFP4_BLOCK // 2 or scales.shape != blocks.shape[:-1]:
            raise ShapeError(f"{name}: MXFP4 blocks {list(blocks.shape)} and scales {list(scales.shape)} do not "
                             "pair up (expected (n_expert, rows, n_blocks, 16) and (n_expert, rows, n_blocks))")
        if blocks.dtype != "U8" or scales.dtype != "U8":
            raise InputError(f"{name}: MXFP4 blocks and scales are {blocks.dtype} and {scales.dtype}, expected U8")
        n_expert, rows, n_blocks = scales.shape
        if parity is not None:
            if rows % 2:
                raise ShapeError(f"{name}: {rows} interleaved gate/up rows is odd")
            rows //= 2
        pick = (lambda x: x) if parity is None else (lambda x: x[parity::2])
        src_rows = scales.shape[1]
        by_rows = blocks.rows is not None and scales.rows is not None  # safetensors: one expert at a time

        def expert(e: int) -> np.ndarray:  # (rows, n_blocks * 17) bytes of expert e
            if by_rows:
                b = blocks.rows(e * src_rows * n_blocks, (e + 1) * src_rows * n_blocks)
                s = scales.rows(e * src_rows, (e + 1) * src_rows)
            else:
                b, s = blocks.numpy()[e], scales.numpy()[e]
            b, s = _as_bytes(b).reshape(src_rows, n_blocks, 16), _as_bytes(s).reshape(src_rows, n_blocks)
            return repack_mxfp4(pick(b), pick(s))

        def load() -> np.ndarray:
            return np.concatenate([expert(e) for e in range(n_expert)])

        def expert_rows(a: int, b: int) -> np.ndarray:
            if a % rows or b - a != rows:
                raise AssertionError("MXFP4 experts are read one whole expert at a time")
            return expert(a // rows)

        def release() -> None:
            blocks.release()
            scales.release()

        return LazyTensor((n_expert, rows, n_blocks * MXFP4_BLOCK), "MXFP4", load, expert_rows if by_rows else None,
                          release, encoded_as=GGMLType.MXFP4)

    def modify_tensors(self, t: LazyTensor, name: str, bid: int | None) -> Iterator[tuple[str, LazyTensor]]:
        if t.encoded_as is not None:  # from generate_extra_tensors, already in its final layout
            yield self.map_tensor_name(name), t
            return
        if name.endswith(("_blocks", "_scales")) and "mlp.experts." in name:
            return  # written by generate_extra_tensors
        if "mlp.experts." in name and not name.endswith("_bias") and t.ndim != 3:
            raise ShapeError(f"{self.hf_dir}: expert tensor {name} has shape {list(t.shape)}, expected "
                             "(n_expert, rows, cols)")
        if "down_proj" in name:
            if name.endswith("_bias"):
                name = name.replace("down_proj_bias", "down_proj.bias")
            else:  # float experts (n_expert, n_ff, n_embd): llama.cpp warns they are not MXFP4
                name = name.replace("down_proj", "down_proj.weight")
                t = per_expert(t, lambda x: x.T, (t.shape[0], t.shape[2], t.shape[1]))
        if "gate_up_proj" in name:
            if name.endswith("_bias"):  # (n_expert, 2 * n_ff), gate and up interleaved
                half = (*t.shape[:-1], t.shape[-1] // 2)
                yield self.map_tensor_name(name.replace("gate_up_proj_bias", "gate_proj.bias")), \
                    t.map(lambda x: x[..., ::2], half)
                yield self.map_tensor_name(name.replace("gate_up_proj_bias", "up_proj.bias")), \
                    t.map(lambda x: x[..., 1::2], half)
            else:  # (n_expert, n_embd, 2 * n_ff) -> (n_expert, n_ff, n_embd) each
                half = (t.shape[0], t.shape[2] // 2, t.shape[1])
                yield self.map_tensor_name(name.replace("gate_up_proj", "gate_proj.weight")), \
                    per_expert(t, lambda x: x.T[::2], half)
                yield self.map_tensor_name(name.replace("gate_up_proj", "up_proj.weight")), \
                    per_expert(t, lambda x: x.T[1::2], half)
            return
        yield from super().modify_tensors(t, name, bid)
