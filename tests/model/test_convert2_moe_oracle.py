"""MoE and MLA architectures of ../shared/convert2 in llmtk's forward pass, converted by llmtk.

(a) llama.cpp's oracle (`<arch>/logits-topk.npz`, llama-perplexity on the f32 GGUF): the 4 chunks
of 64 tokens evaluated as llama-perplexity does (first token replaced by BOS where the vocab adds
one, f16 KV cache), positions 32..62 scored: same top-1 everywhere, the oracle's top-32 log-probs
and the next token's log-prob within TOP32_TOL / NEXT_TOL. Those tolerances are float32
summation-order noise plus the oracle's uint16 encoding (up to 1.22e-4); the Q4_0 quantization of
the same models moves the top-32 log-probs by 0.19 to 2.25 on average (convert2/README.md), so
they are 60-700 times tighter than what tells two quantizations apart.
(b) transformers on the same checkpoint, float32 both, keys and values kept in float32: the whole
sequence, and token by token through the KV cache.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from oracle_helpers import Oracle, bos_for_chunks, converted_once, materialize, score

MOE_ARCHS = ["qwen2moe", "olmoe", "granitemoe", "phimoe", "ernie4_5-moe", "dots1", "glm4moe", "llama4",
             "gpt-oss", "deepseek2", "deepseek2-v3"]
# max |llmtk - oracle| over the scored positions of the 4 chunks (measured: <= 1.3e-3 and 3e-4)
TOP32_TOL = 4e-3
NEXT_TOL = 2e-3
# max |llmtk - transformers| / max |transformers|, both float32 on the same bf16-exact weights
# (measured: <= 9e-7)
REL_TOL = 2e-5
EXACT_KV = dict(cache_type_k="f32", cache_type_v="f32")


@pytest.fixture(scope="module")
def converted(shared_dir: Path, tmp_path_factory):
    """arch -> (checkpoint folder, f32 GGUF converted by llmtk), each converted once; skips when
    llmtk has no converter for the checkpoint's class."""
    return converted_once(shared_dir, tmp_path_factory.mktemp("moe2"))


def _hf_model(src: Path):
    """transformers' float32 eager model of `src`. DeepSeek's q_a/kv_a RMS norms take their
    default epsilon 1e-6 in transformers, where llama.cpp's graph uses the file's
    layer_norm_rms_epsilon for every norm: they are given the config's here."""
    import torch
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(src, torch_dtype=torch.float32,
                                                           attn_implementation="eager").eval()
    for name, module in hf.named_modules():
        if name.endswith(("q_a_layernorm", "kv_a_layernorm")):
            module.variance_epsilon = hf.config.rms_norm_eps
    return hf


@pytest.mark.parametrize("arch", MOE_ARCHS)
def test_matches_llama_cpp_oracle(shared_dir: Path, converted, arch: str) -> None:
    from llmtk.model import load_model

    _, gguf = converted(arch)
    oracle = Oracle.load(shared_dir / "convert2" / arch / "logits-topk.npz")
    with load_model(gguf) as m:   # llama-perplexity's defaults: f16 KV cache
        diff = score(m, oracle, bos_for_chunks(gguf), tie_tol=0.0)
    assert diff.top1_agreement == 1.0, f"{arch}: {diff}"
    assert diff.max_topk < TOP32_TOL, f"{arch}: {diff}"
    assert diff.max_next < NEXT_TOL, f"{arch}: {diff}"


# transformers runs another graph than llama.cpp for these; what llmtk runs is llama.cpp's
TRANSFORMERS_DIFFERS = {
    # PhimoeDecoderLayer normalises with LayerNorm and routes with sparsemixer; llama.cpp's phimoe
    # graph (phi3's) uses RMS norm plus the LayerNorm's bias and softmax top-2 renormalised
    "phimoe": "llama.cpp's phimoe graph uses RMS norms and softmax top-k where transformers uses "
              "LayerNorm and sparsemixer routing",
}


@pytest.mark.parametrize("arch", [a for a in MOE_ARCHS if a not in TRANSFORMERS_DIFFERS])
def test_matches_transformers(converted, arch: str) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llmtk.model import load_model

    src, gguf = converted(arch)
    hf = _hf_model(src)
    n_vocab = hf.config.vocab_size
    toks = np.random.default_rng(7).integers(0, n_vocab, 11).astype(np.int32)
    with torch.no_grad():
        ref = hf(torch.from_numpy(toks.astype(np.int64))[None]).logits[0].float().numpy()
    with load_model(gguf, **EXACT_KV) as m:
        if arch == "deepseek2":
            # transformers 4.57's DeepseekV2Attention scales scores by 1/sqrt(qk_head_dim) only;
            # DeepSeek's own code and llama.cpp multiply that by the YaRN mscale squared
            # (mla.kq_scale, which the oracle test checks), so take transformers' scale here
            m.kq_scale = 1.0 / math.sqrt(m.hp.head_k_mla)
        if arch == "deepseek2-v3":
            # DeepseekV3 routes through sigmoid scores; the converter writes no expert_gating_func for
            # it and llama.cpp then falls back to softmax (the oracle above is that), so run
            # transformers' gating here
            m.hp.expert_gating = "sigmoid"
        full = m.forward(toks)
        cache = m.new_cache(len(toks))
        steps = np.concatenate([m.forward(toks[i:i + 1], cache) for i in range(len(toks))])
    scale = np.abs(ref).max()
    assert scale > 0.05
    rel = np.abs(full - ref).max() / scale
    assert rel < REL_TOL, f"{arch}: full sequence, max |diff| / scale = {rel:.3g}"
    rel_steps = np.abs(steps - ref).max() / scale
    assert rel_steps < REL_TOL, f"{arch}: token by token, max |diff| / scale = {rel_steps:.3g}"


def test_group_limited_routing_matches_transformers(shared_dir: Path, tmp_path: Path) -> None:
    """DeepSeek-V3 with 2 expert groups of which 1 is kept (the shared checkpoint has one group):
    the converter writes expert_group_count/used from n_group/topk_group and llmtk's routing then
    matches transformers' noaux_tc; without the group limit the logits are far off."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llmtk.converters import ARCHITECTURES, convert
    from llmtk.model import load_model

    if "DeepseekV3ForCausalLM" not in ARCHITECTURES:
        pytest.skip("llmtk has no converter for DeepseekV3ForCausalLM yet")
    if not (shared_dir / "convert2" / "deepseek2-v3").is_dir():
        pytest.skip("reference data not found: convert2/deepseek2-v3")
    src = materialize(shared_dir, "deepseek2-v3", tmp_path / "ckpt")
    config = json.loads((src / "config.json").read_text())
    config.update(n_group=2, topk_group=1)
    (src / "config.json").unlink()
    (src / "config.json").write_text(json.dumps(config))
    gguf = convert(src, tmp_path / "v3-groups.gguf", "f32", progress=False)
    hf = _hf_model(src)
    toks = np.random.default_rng(7).integers(0, 49152, 16).astype(np.int32)
    with torch.no_grad():
        ref = hf(torch.from_numpy(toks.astype(np.int64))[None]).logits[0].float().numpy()
    scale = np.abs(ref).max()
    with load_model(gguf, **EXACT_KV) as m:
        assert (m.hp.n_expert_groups, m.hp.n_group_used) == (2, 1)
        m.hp.expert_gating = "sigmoid"   # as in test_matches_transformers
        rel = np.abs(m.forward(toks) - ref).max() / scale
        m.hp.n_expert_groups = 0
        rel_ungrouped = np.abs(m.forward(toks) - ref).max() / scale
    assert rel < REL_TOL, f"grouped routing: max |diff| / scale = {rel:.3g}"
    assert rel_ungrouped > 100 * REL_TOL   # the group limit changes which experts run


def test_experts_run_only_on_routed_tokens(converted) -> None:
    """Expert matrices are read only for the experts a token is routed to (llama.cpp's mul_mat_id):
    one token runs k of the n_expert experts of each MoE block, a batch the union of its routes."""
    from llmtk.model import load_model

    _, gguf = converted("qwen2moe")
    toks = np.random.default_rng(3).integers(0, 49152, 5).astype(np.int32)
    with load_model(gguf, **EXACT_KV) as m:
        routed: dict[str, set[int]] = {}
        hook_ids: dict[str, np.ndarray] = {}

        def hook(name: str, x: np.ndarray, ids: np.ndarray | None = None) -> None:
            if ids is not None:
                hook_ids[name] = ids.copy()
        expert = m.w.expert

        def spy(name: str, e: int) -> np.ndarray:
            routed.setdefault(name, set()).add(int(e))
            return expert(name, e)
        m.w.expert = spy
        m.forward(toks[:1], m.new_cache(8), hook)   # one token: k of the n_expert experts run
        k, n_expert = m.hp.n_expert_used, m.hp.n_expert
        assert k < n_expert and hook_ids
        for name, ids in hook_ids.items():
            assert routed[name] == set(np.unique(ids).tolist())
            assert len(routed[name]) == k
        routed.clear()
        hook_ids.clear()
        m.forward(toks, None, hook)
        for name, ids in hook_ids.items():
            assert routed[name] == set(np.unique(ids).tolist())


def test_yarn_qwen2_matches_transformers(shared_dir: Path, tmp_path: Path) -> None:
    """YaRN on an arch that does not special-case it (qwen2, factor 4 over 256 positions): the
    rope_yarn ramp and llama_context's attn_factor give transformers' YaRN logits."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from llmtk.converters import convert
    from llmtk.model import load_model

    tokenizer = shared_dir / "convert" / "_tokenizer" / "tokenizer.json"
    if not tokenizer.is_file():
        pytest.skip(f"reference data not found: {tokenizer}")
    cfg = transformers.Qwen2Config(vocab_size=49152, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                                   rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256})
    torch.manual_seed(5)
    model = transformers.Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    src = tmp_path / "tiny-qwen2-yarn"
    model.save_pretrained(src, safe_serialization=True)
    (src / "tokenizer.json").symlink_to(tokenizer)
    gguf = convert(src, tmp_path / "yarn.gguf", "f32", progress=False)
    hf = transformers.AutoModelForCausalLM.from_pretrained(src, torch_dtype=torch.float32,
                                                           attn_implementation="eager").eval()
    toks = np.random.default_rng(5).integers(0, 49152, 48).astype(np.int32)
    with torch.no_grad():
        ref = hf(torch.from_numpy(toks.astype(np.int64))[None]).logits[0].float().numpy()
    with load_model(gguf, **EXACT_KV) as m:
        assert m.yarn.ext_factor == 1.0
        got = m.forward(toks)
        m.yarn = dataclasses.replace(m.yarn, ext_factor=0.0, attn_factor=1.0)   # plain linear scaling
        linear = m.forward(toks)
    scale = np.abs(ref).max()
    rel = np.abs(got - ref).max() / scale
    assert rel < REL_TOL, f"qwen2 YaRN: max |diff| / scale = {rel:.3g}"
    assert np.abs(linear - ref).max() / scale > 100 * REL_TOL
