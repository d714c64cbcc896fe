"""llmtk.model.moe.route against a direct transcription of build_moe_ffn's routing, and YaRN's
rope tables against transformers' YaRN frequencies."""
from __future__ import annotations

import math

import numpy as np
import pytest

from llmtk.model.moe import route


def _reference(logits, k, gating, norm_w, scale, bias=None, n_groups=0, n_group_used=0, on_logits=False):
    """Token by token in float64, as llm_graph_context::build_moe_ffn reads."""
    ids_all, w_all = [], []
    for z in logits.astype(np.float64):
        if gating == "softmax":
            p = np.exp(z - z.max())
            p /= p.sum()
        elif gating == "sigmoid":
            p = 1 / (1 + np.exp(-z))
        else:
            p = z.copy()
        sel = p + (0 if bias is None else bias)
        if on_logits:
            sel = z.copy()
        if n_groups > 1:
            g = sel.reshape(n_groups, -1)
            score = np.sort(g, axis=1)[:, -2:].sum(axis=1)
            keep = np.argsort(-score, kind="stable")[:n_group_used]
            mask = np.full_like(g, -np.inf)
            mask[keep] = g[keep]
            sel = mask.reshape(-1)
        ids = np.argsort(-sel, kind="stable")[:k]
        w = p[ids]
        if gating == "softmax_weight":
            w = np.exp(w - w.max())
            w /= w.sum()
        if norm_w:
            w = w / max(w.sum(), 6.103515625e-5)
        if scale not in (0.0, 1.0):
            w = w * scale
        ids_all.append(ids)
        w_all.append(w)
    return np.array(ids_all), np.array(w_all)


CASES = [
    dict(gating="softmax", norm_w=True, scale=0.0),                       # mixtral, qwen3moe, granitemoe
    dict(gating="softmax", norm_w=False, scale=0.0),                      # qwen2moe, olmoe
    dict(gating="softmax", norm_w=False, scale=1.5),                      # deepseek2 (V2)
    dict(gating="softmax", norm_w=True, scale=0.0, bias=True),            # ernie4_5-moe
    dict(gating="sigmoid", norm_w=True, scale=2.5, bias=True),            # glm4moe, deepseek V3, dots1
    dict(gating="sigmoid", norm_w=True, scale=2.5, bias=True, n_groups=4, n_group_used=2),  # V3 groups
    dict(gating="softmax_weight", norm_w=False, scale=0.0),               # gpt-oss
    dict(gating="sigmoid", norm_w=False, scale=0.0, on_logits=True),      # llama4
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_route_matches_build_moe_ffn(case: dict) -> None:
    rng = np.random.default_rng(11)
    n, n_expert, k = 40, 16, 4
    logits = rng.normal(0, 2, (n, n_expert)).astype(np.float32)
    case = dict(case)
    bias = rng.normal(0, 0.5, n_expert).astype(np.float32) if case.pop("bias", False) else None
    on_logits = case.pop("on_logits", False)
    ids, w = route(logits, k, bias=bias, select_on_logits=on_logits, **case)
    ref_ids, ref_w = _reference(logits, k, bias=bias, on_logits=on_logits, **case)
    assert ids.dtype == np.int32 and w.dtype == np.float32
    assert np.array_equal(ids, ref_ids)
    np.testing.assert_allclose(w, ref_w, rtol=2e-6, atol=1e-7)


def test_selection_bias_moves_the_choice_not_the_weights() -> None:
    logits = np.array([[2.0, 1.0, 0.0, -1.0]], dtype=np.float32)
    bias = np.array([0.0, 0.0, 0.0, 5.0], dtype=np.float32)
    ids, w = route(logits, 2, gating="sigmoid", norm_w=False, scale=0.0, bias=bias)
    assert ids.tolist() == [[3, 0]]
    np.testing.assert_allclose(w[0], 1 / (1 + np.exp(-logits[0, [3, 0]])), rtol=1e-6)


def test_group_limit_keeps_only_the_best_groups() -> None:
    # groups {0,1} {2,3} {4,5}: top-2 sums 1.9, 1.6, 1.5 -> with one group kept, experts 0 and 1
    # win although expert 4 alone has the highest score
    sel = np.array([[0.95, 0.95, 0.8, 0.8, 0.99, 0.51]], dtype=np.float32)
    logits = np.log(sel / (1 - sel))
    ids, _ = route(logits, 2, gating="sigmoid", norm_w=True, scale=0.0, n_groups=3, n_group_used=1)
    assert sorted(ids[0].tolist()) == [0, 1]
    ids, _ = route(logits, 2, gating="sigmoid", norm_w=True, scale=0.0)
    assert ids[0].tolist() == [4, 0]


def test_yarn_rope_matches_transformers() -> None:
    """rope.rope_tables with llama.cpp's YaRN against transformers' YaRN inverse frequencies and
    attention factor (truncated correction range, as ggml always truncates)."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from llmtk.model.arch import HParams
    from llmtk.model.rope import rope_tables, yarn_params
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    head, base, factor, orig = 64, 150000.0, 32.0, 4096
    config = transformers.PretrainedConfig(
        rope_theta=base, hidden_size=head * 4, num_attention_heads=4, head_dim=head, max_position_embeddings=orig * 32,
        rope_scaling={"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": orig,
                      "beta_fast": 32.0, "beta_slow": 1.0})
    inv_freq, attention_factor = ROPE_INIT_FUNCTIONS["yarn"](config, "cpu")
    hp = HParams(arch="gpt-oss", n_vocab=1, n_embd=head * 4, n_layer=1, n_ff=1, n_head=4, n_head_kv=4,
                 head_k=head, head_v=head, n_rot=head, eps=1e-5, rope_base=base, freq_scale=1 / factor,
                 rope_scaling="yarn", n_ctx_train=orig * 32, n_ctx_orig=orig)
    # transformers' inverse frequencies are float32: compare the angle at position 1, and the
    # tables where float32 frequencies keep the angles exact to 1e-5
    pos = np.arange(0, 64, dtype=np.int64)
    cos, sin = rope_tables(pos, head, base, hp.freq_scale, yarn_params(hp))
    np.testing.assert_allclose(np.arctan2(sin[1], cos[1]), inv_freq.double().numpy(), rtol=1e-6)
    theta = pos[:, None].astype(np.float64) * inv_freq.double().numpy()[None, :]
    np.testing.assert_allclose(cos, np.cos(theta) * attention_factor, atol=1e-5)
    np.testing.assert_allclose(sin, np.sin(theta) * attention_factor, atol=1e-5)
    assert abs(math.hypot(cos[5, 0], sin[5, 0]) - attention_factor) < 1e-6
