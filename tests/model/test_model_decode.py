"""Decoding a few tokens on the raw GGUF blocks (llmtk.kernels.unpack) against the batch forward,
and activation rounding switched on and off. The kernels themselves: tests/kernels/test_unpack.py,
tests/kernels/test_activations.py."""
from __future__ import annotations

import numpy as np
import pytest

from llmtk.ggufio.constants import GGMLType
from llmtk.model import load_model

# keys and values kept in float32 (llama.cpp rounds them to f16 by default): these tests
# compare with transformers or between code paths at float32 tolerances
EXACT_KV = dict(cache_type_k="f32", cache_type_v="f32")


@pytest.mark.parametrize("qtype", ["F16", "Q8_0", "Q4_1", "Q5_0"])
def test_decoding_quantized_model_equals_batch_forward(tmp_path, qtype):
    # single tokens take the raw-block matvecs, the batch takes sgemm on dequantized copies
    pytest.importorskip("transformers")
    from tiny_models import N_VOCAB, build

    _, path = build("llama", tmp_path, qtype=qtype)
    toks = np.random.default_rng(2).integers(0, N_VOCAB, 10).astype(np.int32)
    with load_model(path, **EXACT_KV) as m:
        assert m.reader.tensors["blk.0.attn_q.weight"].qtype == GGMLType[qtype]
        full = m.forward(toks)
        cache = m.new_cache(10)
        inc = np.concatenate([m.forward(toks[:5], cache)] + [m.forward(toks[i:i + 1], cache) for i in range(5, 10)])
    assert np.abs(inc - full).max() / np.abs(full).max() < 1e-5


def test_quantize_activations_changes_quantized_models_only(tmp_path):
    pytest.importorskip("transformers")
    from tiny_models import N_VOCAB, build

    toks = np.random.default_rng(4).integers(0, N_VOCAB, 7).astype(np.int32)
    for qtype, changed in (("F32", False), ("Q8_0", True)):
        _, path = build("qwen2", tmp_path, qtype=qtype)
        with load_model(path) as a, load_model(path, quantize_activations=False) as b:
            la, lb = a.forward(toks), b.forward(toks)
        assert (np.abs(la - lb).max() > 0) == changed, qtype


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K", "Q6_K", "Q5_1"])
def test_int8_decoding_agrees_with_the_float_kernels(tmp_path, monkeypatch, qtype):
    # decoding multiplies int8 blocks by int8 activations where the CPU allows it (as ggml's
    # vec_dot kernels) and float32 rounded activations otherwise: the same values up to sums
    pytest.importorskip("transformers")
    from tiny_models import N_VOCAB, build

    from llmtk.kernels import int8dot

    _, path = build("llama", tmp_path, qtype=qtype)
    toks = np.random.default_rng(5).integers(0, N_VOCAB, 6).astype(np.int32)

    def decode() -> np.ndarray:
        with load_model(path) as m:  # default f16 KV cache: the fused attention rounds as the batch does
            cache = m.new_cache(6)
            return np.concatenate([m.forward(toks[i:i + 1], cache) for i in range(6)])

    fast = decode()
    monkeypatch.setattr(int8dot, "AVAILABLE", False)
    slow = decode()
    with load_model(path) as m:
        full = m.forward(toks)
    assert np.abs(fast - slow).max() / np.abs(slow).max() < 1e-5
    # the batch sums its sgemms in another order: with 8-bit activations a last-bit difference
    # upstream may flip one activation's rounding, so the batch is held 10x looser
    assert np.abs(fast - full).max() / np.abs(full).max() < 1e-4
