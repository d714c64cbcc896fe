"""Tiny random Hugging Face models of every architecture llmtk.model supports, written to GGUF.

`CASES` maps a case name to the transformers config that builds it; `build(case, dir)` returns the
torch model (float32, eager attention, weights perturbed so none is trivially 0 or 1) and a GGUF
f32 file made the way llama.cpp's convert_hf_to_gguf.py lays it out (llama q/k permutation,
gemma norms stored as 1 + w, experts stacked into 3-D tensors).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

N_VOCAB = 96


@dataclass
class Case:
    gguf_arch: str
    config: Callable[[], Any]
    model_cls: str
    kv: Callable[[Any], dict[str, Any]] = field(default=lambda cfg: {})
    extra_tensors: Callable[[Any], dict[str, np.ndarray]] = field(default=lambda cfg: {})
    permute_qk: bool = False  # llama-arch: convert_hf_to_gguf's LlamaModel.permute
    norm_plus_one: bool = False  # gemma: stored norm weights are 1 + w


COMMON = dict(vocab_size=N_VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              rms_norm_eps=1e-5)


def _cfg(cls_name: str, **kw: Any) -> Callable[[], Any]:
    def make() -> Any:
        import transformers
        cfg = getattr(transformers, cls_name)(**{**COMMON, **kw})
        cfg._attn_implementation = "eager"
        return cfg
    return make


CASES: dict[str, Case] = {
    "llama": Case("llama", _cfg("LlamaConfig", rope_theta=10000.0, tie_word_embeddings=False),
                  "LlamaForCausalLM", permute_qk=True),
    "mistral": Case("llama", _cfg("MistralConfig", rope_theta=1e6, sliding_window=None, tie_word_embeddings=True),
                    "MistralForCausalLM", permute_qk=True),
    "qwen2": Case("qwen2", _cfg("Qwen2Config", rope_theta=1e6, tie_word_embeddings=True), "Qwen2ForCausalLM"),
    "qwen3": Case("qwen3", _cfg("Qwen3Config", head_dim=16, rope_theta=1e6, tie_word_embeddings=True),
                  "Qwen3ForCausalLM"),
    "gemma3": Case("gemma3", _cfg("Gemma3TextConfig", head_dim=16, num_hidden_layers=3, query_pre_attn_scalar=16,
                                  sliding_window=5, layer_types=["sliding_attention", "full_attention",
                                                                 "sliding_attention"],
                                  rope_theta=1e6, rope_local_base_freq=10000.0,
                                  rope_scaling={"rope_type": "linear", "factor": 4.0},
                                  hidden_activation="gelu_pytorch_tanh"),
                   "Gemma3ForCausalLM",
                   kv=lambda c: {"attention.sliding_window": c.sliding_window,
                                 "attention.sliding_window_pattern": 2,
                                 "rope.freq_base_swa": c.rope_local_base_freq,
                                 "rope.scaling.type": "linear", "rope.scaling.factor": 4.0},
                   norm_plus_one=True),
    "phi3": Case("phi3", _cfg("Phi3Config", partial_rotary_factor=0.5, rope_theta=10000.0, tie_word_embeddings=False,
                              pad_token_id=0),
                 "Phi3ForCausalLM"),
    # longrope (Phi-3 128k): short/long per-dimension factors as tensors, cos/sin scaled by attn_factor
    "phi3-longrope": Case("phi3", _cfg("Phi3Config", rope_theta=10000.0, tie_word_embeddings=True, pad_token_id=0,
                                       original_max_position_embeddings=64,
                                       rope_scaling={"type": "longrope", "short_factor": [1.0, 1.3, 1.7, 2.2],
                                                     "long_factor": [1.5, 2.5, 4.0, 6.0]}),
                          "Phi3ForCausalLM",
                          kv=lambda c: {"rope.scaling.original_context_length": c.original_max_position_embeddings,
                                        "rope.scaling.attn_factor": math.sqrt(1 + math.log(
                                            c.max_position_embeddings / c.original_max_position_embeddings)
                                            / math.log(c.original_max_position_embeddings))},
                          extra_tensors=lambda c: {
                              "rope_factors_long.weight": np.array(c.rope_scaling["long_factor"], np.float32),
                              "rope_factors_short.weight": np.array(c.rope_scaling["short_factor"], np.float32)}),
    "mixtral": Case("llama", _cfg("MixtralConfig", num_local_experts=4, num_experts_per_tok=2, rope_theta=1e6,
                                  tie_word_embeddings=True),
                    "MixtralForCausalLM", permute_qk=True,
                    kv=lambda c: {"expert_count": c.num_local_experts, "expert_used_count": c.num_experts_per_tok}),
    "qwen3moe": Case("qwen3moe", _cfg("Qwen3MoeConfig", head_dim=16, num_experts=4, num_experts_per_tok=2,
                                      moe_intermediate_size=24, norm_topk_prob=True, rope_theta=1e6,
                                      tie_word_embeddings=True),
                     "Qwen3MoeForCausalLM",
                     kv=lambda c: {"expert_count": c.num_experts, "expert_used_count": c.num_experts_per_tok,
                                   "expert_feed_forward_length": c.moe_intermediate_size}),
}

# HF module path (after "model.layers.{i}.") -> GGUF name (after "blk.{i}."); one spelling per row
LAYER_MAP: list[tuple[str, str]] = [
    (r"input_layernorm\.weight", "attn_norm.weight"),
    (r"self_attn\.q_proj\.(weight|bias)", r"attn_q.\1"),
    (r"self_attn\.k_proj\.(weight|bias)", r"attn_k.\1"),
    (r"self_attn\.v_proj\.(weight|bias)", r"attn_v.\1"),
    (r"self_attn\.o_proj\.(weight|bias)", r"attn_output.\1"),
    (r"self_attn\.qkv_proj\.weight", "attn_qkv.weight"),
    (r"self_attn\.q_norm\.weight", "attn_q_norm.weight"),
    (r"self_attn\.k_norm\.weight", "attn_k_norm.weight"),
    (r"pre_feedforward_layernorm\.weight", "ffn_norm.weight"),
    (r"post_feedforward_layernorm\.weight", "post_ffw_norm.weight"),
    (r"mlp\.gate_proj\.weight", "ffn_gate.weight"),
    (r"mlp\.up_proj\.weight", "ffn_up.weight"),
    (r"mlp\.down_proj\.weight", "ffn_down.weight"),
    (r"mlp\.gate_up_proj\.weight", "ffn_up.weight"),
    (r"(block_sparse_moe|mlp)\.gate\.weight", "ffn_gate_inp.weight"),
]
EXPERT_MAP = {"w1": "ffn_gate_exps", "gate_proj": "ffn_gate_exps", "w3": "ffn_up_exps", "up_proj": "ffn_up_exps",
              "w2": "ffn_down_exps", "down_proj": "ffn_down_exps"}


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # convert_hf_to_gguf LlamaModel.permute: HF's half-split rotary layout -> interleaved pairs
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gguf_tensors(case: Case, cfg: Any, sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    experts: dict[tuple[int, str], dict[int, np.ndarray]] = {}
    for name, t in sd.items():
        if name == "model.embed_tokens.weight":
            out["token_embd.weight"] = t
            continue
        if name == "model.norm.weight":
            out["output_norm.weight"] = t + 1 if case.norm_plus_one else t
            continue
        if name == "lm_head.weight":
            if not getattr(cfg, "tie_word_embeddings", False):
                out["output.weight"] = t
            continue
        m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
        if m is None:
            raise KeyError(f"unmapped tensor {name}")
        bid, rest = int(m.group(1)), m.group(2)
        me = re.fullmatch(r"(?:block_sparse_moe|mlp)\.experts\.(\d+)\.(\w+)\.weight", rest)
        if me:
            experts.setdefault((bid, EXPERT_MAP[me.group(2)]), {})[int(me.group(1))] = t
            continue
        if rest == "post_attention_layernorm.weight":
            gname = "post_attention_norm.weight" if case.gguf_arch == "gemma3" else "ffn_norm.weight"
        else:
            for pat, rep in LAYER_MAP:
                if re.fullmatch(pat, rest):
                    gname = re.sub(pat, rep, rest)
                    break
            else:
                raise KeyError(f"unmapped tensor {name}")
        if case.permute_qk and gname.startswith("attn_q."):
            t = _permute(t, cfg.num_attention_heads)
        if case.permute_qk and gname.startswith("attn_k."):
            t = _permute(t, cfg.num_key_value_heads)
        if case.norm_plus_one and gname.endswith("norm.weight"):
            t = t + 1
        out[f"blk.{bid}.{gname}"] = t
    for (bid, gname), per in sorted(experts.items()):
        out[f"blk.{bid}.{gname}.weight"] = np.stack([per[e] for e in sorted(per)])  # (n_expert, rows, cols)
    return out


def _perturb(model: Any, seed: int) -> None:
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                base = 0.0 if "Gemma" in type(model).__name__ else 1.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))


def build(name: str, out_dir: Path, seed: int = 0, qtype: str = "F32") -> tuple[Any, Path]:
    """(torch model in f32 eval mode, path of its GGUF) for case `name`: float32, or with the
    2-D weights whose rows fit `qtype`'s blocks stored in that type (by llmtk's quantizer)."""
    import gguf
    import torch
    import transformers

    case = CASES[name]
    cfg = case.config()
    torch.manual_seed(seed)
    model = getattr(transformers, case.model_cls)(cfg).float().eval()
    _perturb(model, seed)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    tensors = {**_gguf_tensors(case, cfg, sd), **case.extra_tensors(cfg)}

    a = case.gguf_arch
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    n_rot = int(head_dim * getattr(cfg, "partial_rotary_factor", 1.0))
    path = out_dir / f"tiny-{name}-{qtype}.gguf"
    w = gguf.GGUFWriter(str(path), a)
    w.add_uint32(f"{a}.block_count", cfg.num_hidden_layers)
    w.add_uint32(f"{a}.context_length", cfg.max_position_embeddings)
    w.add_uint32(f"{a}.embedding_length", cfg.hidden_size)
    w.add_uint32(f"{a}.feed_forward_length", cfg.intermediate_size)
    w.add_uint32(f"{a}.attention.head_count", cfg.num_attention_heads)
    w.add_uint32(f"{a}.attention.head_count_kv", cfg.num_key_value_heads)
    w.add_uint32(f"{a}.attention.key_length", head_dim)
    w.add_uint32(f"{a}.attention.value_length", head_dim)
    w.add_uint32(f"{a}.rope.dimension_count", n_rot)
    w.add_float32(f"{a}.rope.freq_base", float(cfg.rope_theta))
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", float(cfg.rms_norm_eps))
    for k, v in case.kv(cfg).items():
        key = f"{a}.{k}"
        if isinstance(v, str):
            w.add_string(key, v)
        elif isinstance(v, float):
            w.add_float32(key, v)
        else:
            w.add_uint32(key, int(v))
    from llmtk import kernels
    from llmtk.ggufio.constants import GGML_TYPE_TRAITS, GGMLType
    block = GGML_TYPE_TRAITS[GGMLType[qtype]].block_size
    for tname, t in tensors.items():
        t = np.ascontiguousarray(t, dtype=np.float32)
        if qtype != "F32" and t.ndim == 2 and t.shape[1] % block == 0:
            w.add_tensor(tname, kernels.quantize(t, qtype), raw_dtype=gguf.GGMLQuantizationType[qtype])
        else:
            w.add_tensor(tname, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model, path


def hf_logits(model: Any, tokens: np.ndarray) -> np.ndarray:
    """transformers' float32 logits (n, n_vocab) for one sequence."""
    import torch
    with torch.no_grad():
        return model(torch.as_tensor(tokens[None].astype(np.int64))).logits[0].float().numpy()
