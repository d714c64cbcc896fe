"""llmtk.model on real gemma-3-270m (Q4_K_M) against transformers running the same weights.

The GGUF's tensors are dequantized with llmtk's kernels and loaded into transformers'
Gemma3ForCausalLM (names mapped back, norms stored as 1 + w turned back into w), so the comparison
checks the metadata reading (512-token sliding window every 6th layer dense, two RoPE bases,
head_dim 256) and the graph on real weights, past the window.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from llmtk.model import load_model  # noqa: E402

# keys and values kept in float32 (llama.cpp rounds them to f16 by default): these tests
# compare with transformers or between code paths at float32 tolerances
EXACT_KV = dict(cache_type_k="f32", cache_type_v="f32")

REL_TOL = 1e-4


# GGUF block tensor -> transformers Gemma3 module (inverse of convert_hf_to_gguf's mapping)
HF_OF = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm", "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}


def _hf_name(gguf_name: str) -> str:
    fixed = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
    if gguf_name in fixed:
        return fixed[gguf_name]
    _, bid, rest = gguf_name.split(".", 2)
    return f"model.layers.{bid}.{HF_OF[rest.removesuffix('.weight')]}.weight"


@pytest.mark.slow
def test_gemma3_270m_matches_transformers(gemma3_path):
    import torch
    import transformers

    with load_model(gemma3_path, threads=1, quantize_activations=False, **EXACT_KV) as m:
        hp = m.hp
        cfg = transformers.Gemma3TextConfig(
            vocab_size=hp.n_vocab, hidden_size=hp.n_embd, intermediate_size=hp.n_ff,
            num_hidden_layers=hp.n_layer, num_attention_heads=hp.n_head, num_key_value_heads=hp.n_head_kv,
            head_dim=hp.head_k, query_pre_attn_scalar=hp.head_k, rms_norm_eps=hp.eps,
            rope_theta=hp.rope_base, rope_local_base_freq=hp.rope_base_swa, sliding_window=hp.n_swa,
            layer_types=["sliding_attention" if s else "full_attention" for s in hp.is_swa],
            max_position_embeddings=hp.n_ctx_train, tie_word_embeddings=True,
            final_logit_softcapping=None, attn_logit_softcapping=None)
        cfg._attn_implementation = "eager"
        assert hp.n_swa == 512 and hp.is_swa[:6] == [True] * 5 + [False]
        hf = transformers.Gemma3ForCausalLM(cfg).float().eval()
        sd = {}
        for name in m.reader.tensors:
            w = m.w.get(name)
            sd[_hf_name(name)] = torch.from_numpy(np.array(w - 1 if name.endswith("norm.weight") else w))
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
        missing, unexpected = hf.load_state_dict(sd, strict=False)
        assert not unexpected and set(missing) <= {"lm_head.weight"}

        toks = np.random.default_rng(0).integers(100, 20000, 600).astype(np.int32)
        toks[0] = 2  # BOS
        with torch.no_grad():
            ref = hf(torch.from_numpy(toks.astype(np.int64))[None]).logits[0].float().numpy()
        got = m.forward(toks)
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    assert rel < REL_TOL, rel
