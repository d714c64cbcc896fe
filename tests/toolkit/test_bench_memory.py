"""A batch forward pass's memory grows with one layer, not with the model (issue #21): weights
stream through the sgemms in blocks unless a `weight_budget` asks to keep float32 copies."""
from __future__ import annotations

import pytest
from llmtk.bench.memory import forward_memory, weights_f32_bytes, write_synthetic_llama

# llama-shaped, narrower than a 1B model so the default suite stays fast (files of 8-25 MB);
# `benchmarks/peak_memory.py` runs the same measurement at TinyLlama-1.1B's width
SHAPE = dict(n_embd=512, n_ff=1536, n_head=8, n_head_kv=2, n_vocab=4096)
N_TOKENS = 128


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("synthetic")
    one = write_synthetic_llama(d / "one.gguf", 1, **SHAPE)
    four = write_synthetic_llama(d / "four.gguf", 4, **SHAPE)
    layer_f32 = (weights_f32_bytes(four) - weights_f32_bytes(one)) / 3
    forward_memory(one, 16, threads=2)  # first use in the process: module tables, numba's cache
    return one, four, layer_f32


def test_streamed_batch_memory_does_not_grow_with_the_layers(models):
    one, four, layer_f32 = models
    # one worker: with two, the traced peak depends on whether both dequantize a 4 MiB block of
    # rows at the same moment, a timing that moved it by 1.4 MB on a loaded machine
    a = forward_memory(one, N_TOKENS, threads=1)
    b = forward_memory(four, N_TOKENS, threads=1)
    assert a["kept MB"] == b["kept MB"] == 0
    # three more layers add their KV cache (0.4 MB here) and nothing else
    assert (b["batch MB"] - a["batch MB"]) * 1e6 < 0.1 * layer_f32
    assert b["batch MB"] * 1e6 < 0.5 * weights_f32_bytes(four)


def test_a_weight_budget_keeps_float32_copies_of_every_layer(models):
    # the measurement sees copies: the old default (2 GiB) grew by a float32 layer per layer
    one, four, layer_f32 = models
    a = forward_memory(one, N_TOKENS, threads=2, weight_budget=2 << 30)
    b = forward_memory(four, N_TOKENS, threads=2, weight_budget=2 << 30)
    assert (b["batch MB"] - a["batch MB"]) * 1e6 > 2.9 * layer_f32


def test_streamed_logits_equal_kept_copies(models, monkeypatch):
    import llmtk.model.weights as weights_mod
    import numpy as np
    from llmtk.model import load_model

    _, four, _ = models
    monkeypatch.setattr(weights_mod, "STREAM_BLOCK_BYTES", 100 * 4 * SHAPE["n_embd"])  # blocks of 100 rows
    ids = np.random.default_rng(1).integers(0, SHAPE["n_vocab"], size=40, dtype=np.int32)
    with load_model(four, threads=2) as s, load_model(four, threads=2, weight_budget=2 << 30) as k:
        np.testing.assert_array_equal(s.forward(ids), k.forward(ids))
        tail, full = s.forward(ids, first_logit=30), k.forward(ids)[30:]
        # the last block on 10 rows instead of 40: OpenBLAS picks other kernels, float32 rounding only
        assert tail.shape == full.shape
        assert np.abs(tail - full).max() < 1e-4 * np.abs(full).max()
