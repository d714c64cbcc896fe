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
