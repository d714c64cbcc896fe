"""llmtk.model against transformers' float32 forward on tiny random models of every architecture."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_models import CASES, N_VOCAB, build, hf_logits  # noqa: E402

from llmtk.model import load_model  # noqa: E402

# keys and values kept in float32 (llama.cpp rounds them to f16 by default): these tests
# compare with transformers or between code paths at float32 tolerances
EXACT_KV = dict(cache_type_k="f32", cache_type_v="f32")

# |llmtk - transformers| / max|transformers logits|, both float32
REL_TOL = 1e-4


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = build(name, tmp_path_factory.mktemp(name))
        return cache[name]
    return get


def _tokens(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, N_VOCAB, n).astype(np.int32)


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_match_transformers(built, name):
    hf, path = built(name)
    toks = _tokens(13)
    ref = hf_logits(hf, toks)
    # exact float32 activations: GELU as transformers computes it, not from ggml-cpu's f16 table
    with load_model(path, quantize_activations=False, **EXACT_KV) as m:
        got = m.forward(toks)
        last = m.forward(toks, all_logits=False)
    assert got.shape == ref.shape and got.dtype == np.float32
    assert last.shape == (1, ref.shape[1])
    assert np.abs(last - got[-1:]).max() / np.abs(ref).max() < REL_TOL
    scale = np.abs(ref).max()
    assert scale > 1.0  # a model whose logits are all ~0 would match anything
    rel = np.abs(got - ref).max() / scale
    assert rel < REL_TOL, f"{name}: max |diff| / scale = {rel:.3g}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_incremental_decoding_equals_full_forward(built, name):
    hf, path = built(name)
    toks = _tokens(13, seed=2)
    ref = hf_logits(hf, toks)
    with load_model(path, **EXACT_KV) as m:
        full = m.forward(toks)
        cache = m.new_cache(16)
        parts = [m.forward(toks[:6], cache)]
        parts += [m.forward(toks[i:i + 1], cache) for i in range(6, 9)]
        parts.append(m.forward(toks[9:], cache))
        assert cache.n_past == 13
    inc = np.concatenate(parts)
    scale = np.abs(ref).max()
    assert np.abs(inc - full).max() / scale < REL_TOL
    assert np.abs(inc - ref).max() / scale < REL_TOL


def test_hook_sees_every_matmul_input(built):
    _, path = built("qwen3moe")
    seen: dict[str, tuple] = {}

    def hook(name, x, ids=None):
        assert x.dtype == np.float32
        seen[name] = (x.shape, None if ids is None else ids.shape)

    with load_model(path, **EXACT_KV) as m:
        m.forward(_tokens(7), hook=hook)
        hp = m.hp
    assert seen["blk.0.attn_q.weight"] == ((7, 32), None)
    assert seen["blk.1.attn_output.weight"] == ((7, 4 * 16), None)
    assert seen["blk.0.ffn_gate_inp.weight"] == ((7, 32), None)
    assert seen["blk.0.ffn_up_exps.weight"] == ((7, hp.n_expert_used, 32), (7, hp.n_expert_used))
    assert seen["blk.1.ffn_down_exps.weight"] == ((7, hp.n_expert_used, 24), (7, hp.n_expert_used))
    assert seen["token_embd.weight"] == ((7, 32), None)  # tied output


def test_cache_overflow_and_bad_tokens_are_errors(built):
    from llmtk.errors import InputError
    _, path = built("llama")
    with load_model(path, **EXACT_KV) as m:
        cache = m.new_cache(4)
        with pytest.raises(InputError, match="n_ctx=4"):
            m.forward(_tokens(5), cache)
        with pytest.raises(InputError, match="outside the vocabulary"):
            m.forward(np.array([0, N_VOCAB], dtype=np.int32))


@pytest.mark.parametrize("name", ["gemma3", "llama"])
def test_chunked_attention_matches(built, name, monkeypatch):
    # query chunks smaller than the batch exercise the skipped-key and sliding-window offsets
    import llmtk.model.model as model_mod
    hf, path = built(name)
    toks = _tokens(13, seed=3)
    ref = hf_logits(hf, toks)
    monkeypatch.setattr(model_mod, "ATTN_Q_CHUNK", 4)
    with load_model(path, **EXACT_KV) as m:
        got = m.forward(toks)
    assert np.abs(got - ref).max() / np.abs(ref).max() < REL_TOL


def test_weight_budget_zero_gives_same_logits(built):
    _, path = built("mixtral")
    toks = _tokens(9, seed=4)
    with load_model(path, **EXACT_KV) as a, load_model(path, weight_budget=0, **EXACT_KV) as b:
        np.testing.assert_array_equal(a.forward(toks), b.forward(toks))
        assert b.w.used == 0


def test_phi3_longrope_switches_to_long_factors_past_the_original_context(built):
    # more than original_max_position_embeddings (64) tokens: transformers (sequence length) and
    # llama.cpp (n_ctx > n_ctx_orig) both take the long factors; within 64 the short ones
    hf, path = built("phi3-longrope")
    toks = _tokens(70, seed=5)
    ref_long, ref_short = hf_logits(hf, toks), hf_logits(hf, toks[:60])
    with load_model(path, **EXACT_KV) as m:
        long = m.forward(toks)
        short = m.forward(toks[:60], m.new_cache(64))
    scale = np.abs(ref_long).max()
    assert np.abs(long - ref_long).max() / scale < REL_TOL
    assert np.abs(short - ref_short).max() / scale < REL_TOL
    assert np.abs(long[:60] - short).max() / scale > 100 * REL_TOL


def test_threads_do_not_change_logits(built):
    # two threads: kv heads attended in parallel, numba matvecs on two workers
    hf, path = built("qwen3")
    toks = _tokens(13, seed=6)
    with load_model(path, threads=1, **EXACT_KV) as one, load_model(path, threads=2, **EXACT_KV) as two:
        a = one.forward(toks)
        c1, c2 = one.new_cache(16), two.new_cache(16)
        b = two.forward(toks)
        for i in range(3):
            np.testing.assert_allclose(one.forward(toks[i:i + 1], c1), two.forward(toks[i:i + 1], c2),
                                       rtol=0, atol=1e-6 * np.abs(a).max())
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * np.abs(a).max())
