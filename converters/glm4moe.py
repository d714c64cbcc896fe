"""GLM-4.5: Glm4MoeForCausalLM -> GGUF arch `glm4moe`.

llama.cpp's `Glm4MoeModel`: Q/K norms and Q/K/V biases, rotary over `partial_rotary_factor` of each
head (0.5 by default), the first `first_k_dense_replace` layers dense, routed experts stacked
down/gate/up and scored by a sigmoid with a correction bias (`exp_probs_b`), shared experts as one
FFN. The NextN (multi-token prediction) layers after the main ones are kept: they count in
`block_count`, keep their layer's tensors and add `blk.N.nextn.*`, and `nextn_predict_layers` is
written. The vocabulary is GLM's: BPE plus bos `[gMASK]`, eot `<|user|>`, unk `<|endoftext|>`, eom
`<|observation|>` from the added tokens, where tokenizer_config.json did not set them already.
"""
from __future__ import annotations

from typing import Any

import gguf

from llmtk.errors import InputError

from . import vocab as V
from .base import KL, KR, ModelConverter
from .kv import KVStore
from .moe import DECODER_CORE, ExpertStacking, expert_rows

_LAYER = "model.layers.{bid}."
GLM4MOE_TENSORS: dict[str, str] = {
    **DECODER_CORE,
    _LAYER + "self_attn.q_norm": "blk.{bid}.attn_q_norm",
    _LAYER + "self_attn.k_norm": "blk.{bid}.attn_k_norm",
    _LAYER + "post_attention_layernorm": "blk.{bid}.post_attention_norm",
    _LAYER + "mlp.gate_proj": "blk.{bid}.ffn_gate",
    _LAYER + "mlp.up_proj": "blk.{bid}.ffn_up",
    _LAYER + "mlp.down_proj": "blk.{bid}.ffn_down",
    **expert_rows(shared="shared_experts", bias="gate.e_score_correction"),
    # the NextN layers' own tensors
    _LAYER + "eh_proj": "blk.{bid}.nextn.eh_proj",
    _LAYER + "embed_tokens": "blk.{bid}.nextn.embed_tokens",
    _LAYER + "enorm": "blk.{bid}.nextn.enorm",
    _LAYER + "hnorm": "blk.{bid}.nextn.hnorm",
    _LAYER + "shared_head.head": "blk.{bid}.nextn.shared_head_head",
    _LAYER + "shared_head.norm": "blk.{bid}.nextn.shared_head_norm",
}

# transformers' Glm4MoeConfig defaults llama.cpp reads
_GLM4MOE_DEFAULTS = {"vocab_size": 151552, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
                     "rope_theta": 10000.0, "intermediate_size": 10944, "partial_rotary_factor": 0.5,
                     "moe_intermediate_size": 1408, "num_experts_per_tok": 8, "n_group": 1, "topk_group": 1,
                     "n_shared_experts": 1, "n_routed_experts": 128, "routed_scaling_factor": 1.0,
                     "first_k_dense_replace": 1, "norm_topk_prob": True}

# GLM's special tokens, found in the added vocabulary (llama.cpp's `_set_vocab_glm`)
GLM_SPECIAL_TOKENS = (("bos", "[gMASK]"), ("eot", "<|user|>"), ("unk", "<|endoftext|>"), ("eom", "<|observation|>"))


class Glm4MoeConverter(ExpertStacking, ModelConverter):
    model_arch = "glm4moe"
    tensor_map = GLM4MOE_TENSORS
    hparam_defaults = _GLM4MOE_DEFAULTS
    expert_count_keys = ("n_routed_experts",)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        n_nextn = self.hparams.get("num_nextn_predict_layers") or 0
        if isinstance(n_nextn, bool) or not isinstance(n_nextn, int) or not 0 <= n_nextn <= self.block_count:
            raise InputError(f"{self.hf_dir / 'config.json'}: num_nextn_predict_layers is {n_nextn!r}, expected "
                             f"0..{self.block_count}")
        self.block_count += n_nextn  # the NextN layers follow the main ones
        self._names = self._expand_tensor_map()

    def set_gguf_parameters(self, kv: KVStore) -> None:
        super().set_gguf_parameters(kv)
        hp = self.hparams
        head_dim = hp.get("head_dim") or hp["hidden_size"] // hp["num_attention_heads"]
        kv.u32(KR.DIMENSION_COUNT, int(head_dim * self.rope_parameters.get("partial_rotary_factor", 0.5)))
        if hp.get("n_routed_experts") is not None:
            kv.u32(KL.EXPERT_COUNT, hp["n_routed_experts"])
        if hp.get("moe_intermediate_size") is not None:
            kv.u32(KL.EXPERT_FEED_FORWARD_LENGTH, hp["moe_intermediate_size"])
        if hp.get("n_shared_experts") is not None:
            kv.u32(KL.EXPERT_SHARED_COUNT, hp["n_shared_experts"])
        if hp.get("first_k_dense_replace") is not None:
            kv.u32(KL.LEADING_DENSE_BLOCK_COUNT, hp["first_k_dense_replace"])
        kv.u32(KL.EXPERT_GATING_FUNC, int(gguf.ExpertGatingFuncType.SIGMOID))
        if hp.get("routed_scaling_factor") is not None:
            kv.f32(KL.EXPERT_WEIGHTS_SCALE, hp["routed_scaling_factor"])
        if hp.get("norm_topk_prob") is not None:
            kv.bool(KL.EXPERT_WEIGHTS_NORM, hp["norm_topk_prob"])
        if hp.get("num_nextn_predict_layers") is not None:
            kv.u32(KL.NEXTN_PREDICT_LAYERS, hp["num_nextn_predict_layers"])

    def set_vocab(self, kv: KVStore) -> None:
        write_glm_vocab(kv, self.hf_dir, self.hparams.get("vocab_size"), GLM_SPECIAL_TOKENS)


def write_glm_vocab(kv: KVStore, hf_dir, vocab_size: int | None, specials: tuple[tuple[str, str], ...]) -> None:
    """The BPE vocabulary, then GLM's special token ids by their text in the added vocabulary
    (ids tokenizer_config.json already sets win, as in gguf-py's SpecialVocab)."""
    tokens, types, pre = V.bpe_vocab(hf_dir, vocab_size)
    kv.str(gguf.Keys.Tokenizer.MODEL, "gpt2")
    kv.str(gguf.Keys.Tokenizer.PRE, pre)
    kv.strs(gguf.Keys.Tokenizer.LIST, tokens)
    kv.i32s(gguf.Keys.Tokenizer.TOKEN_TYPE, types)
    added = V.added_vocab(hf_dir)
    special = V.SpecialVocab(hf_dir, load_merges=True)
    for typ, text in specials:
        if text not in added:
            raise InputError(f"{hf_dir}: GLM tokenizer has no added token {text!r}")
        special.set_id(typ, added[text])
    special.write(kv)
