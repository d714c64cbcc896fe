"""Cohere family: CohereForCausalLM (`command-r`) and Cohere2ForCausalLM (`cohere2`).

Parallel attention and FFN off one LayerNorm per block, tied output with a logit scale, RoPE
scaling written as "none". Cohere2 adds sliding-window layers and a rotary fraction, and drops
its bias tensors, which llama.cpp's runtime does not have (they must be zero).
"""
from __future__ import annotations

from typing import Any, Iterator

import gguf
import numpy as np

from llmtk.errors import InputError

from .base import KA, KL, KR, ModelConverter
from .dense import dense_tensor_map
from .kv import KVStore
from .source import LazyTensor

# transformers' CohereConfig / Cohere2Config defaults llama.cpp reads
_COHERE_DEFAULTS = {"vocab_size": 256000, "max_position_embeddings": 8192, "layer_norm_eps": 1e-5,
                    "rope_theta": 10000.0, "intermediate_size": 22528, "logit_scale": 0.0625}
# (Cohere2Config has no `rotary_pct`, which llama.cpp reads: a config without it is refused)
_COHERE2_DEFAULTS = {**_COHERE_DEFAULTS, "sliding_window": 4096, "head_dim": 128}


class CommandRConverter(ModelConverter):
    """llama.cpp's `CommandR2Model`: the context length is `model_max_length` when the config has it."""

    model_arch = "command-r"
    tensor_map = dense_tensor_map("attn_norm ffn_gate attn_q_norm attn_k_norm")
    hparam_defaults = _COHERE_DEFAULTS

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.hparams["max_position_embeddings"] = self.find_hparam(["model_max_length", "max_position_embeddings"])

    def set_gguf_parameters(self, kv: KVStore) -> None:
        super().set_gguf_parameters(kv)
        kv.f32(KL.LOGIT_SCALE, self.hparams["logit_scale"])
        kv.str(KR.SCALING_TYPE, gguf.RopeScalingType.NONE.value)


class Cohere2Converter(ModelConverter):
    """llama.cpp's `Cohere2Model`: sliding window, vocab size, rotary dimension from `rotary_pct`."""

    model_arch = "cohere2"
    tensor_map = dense_tensor_map("attn_norm ffn_gate")
    hparam_defaults = _COHERE2_DEFAULTS

    def set_gguf_parameters(self, kv: KVStore) -> None:
        super().set_gguf_parameters(kv)
        hp = self.hparams
        kv.f32(KL.LOGIT_SCALE, hp["logit_scale"])
        kv.u32(KA.SLIDING_WINDOW, hp["sliding_window"])
        kv.u32(KL.VOCAB_SIZE, hp["vocab_size"])
        rotary_pct = self.find_hparam(["rotary_pct"])
        kv.u32(KR.DIMENSION_COUNT, int(rotary_pct * (hp["hidden_size"] // hp["num_attention_heads"])))
        kv.str(KR.SCALING_TYPE, gguf.RopeScalingType.NONE.value)

    def modify_tensors(self, t: LazyTensor, name: str, bid: int | None) -> Iterator[tuple[str, LazyTensor]]:
        if name.endswith(".bias"):
            if np.any(t.numpy() != 0):
                raise InputError(f"{self.hf_dir}: bias tensor {name} is not zero; llama.cpp's cohere2 has no biases")
            return
        yield from super().modify_tensors(t, name, bid)
