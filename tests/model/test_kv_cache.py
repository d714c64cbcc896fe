"""KV cache precision: llama.cpp's default f16 cache, bf16, and exact f32."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.importorskip("torch")
pytest.importorskip("transformers")
from tiny_models import N_VOCAB, build, hf_logits  # noqa: E402

from llmtk.errors import InputError  # noqa: E402
from llmtk.model import load_model  # noqa: E402


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return build("llama", tmp_path_factory.mktemp("kv"))


def test_default_cache_holds_f16_values_and_stays_close_to_f32(llama):
    hf, path = llama
    toks = np.random.default_rng(3).integers(0, N_VOCAB, 12).astype(np.int32)
    ref = hf_logits(hf, toks)
    with load_model(path) as m16, load_model(path, cache_type_k="f32", cache_type_v="f32") as m32:
        assert (m16.cache_type_k, m16.cache_type_v) == ("f16", "f16")
        cache = m16.new_cache(12)
        got16 = m16.forward(toks, cache)
        got32 = m32.forward(toks)
        for layer in cache.k + cache.v:
            stored = layer[:, :12]
            assert np.array_equal(stored, stored.astype(np.float16).astype(np.float32))
    scale = np.abs(ref).max()
    assert np.abs(got32 - ref).max() / scale < 1e-4
    diff16 = np.abs(got16 - ref).max() / scale
    assert 0 < diff16 < 5e-3  # f16 keys/values: rounding visible, and small


def test_bf16_cache_is_coarser_than_f16(llama):
    hf, path = llama
    toks = np.random.default_rng(4).integers(0, N_VOCAB, 12).astype(np.int32)
    ref = hf_logits(hf, toks)
    errs = {}
    for t in ("f16", "bf16"):
        with load_model(path, cache_type_k=t, cache_type_v=t) as m:
            errs[t] = np.abs(m.forward(toks) - ref).max()
    assert 0 < errs["f16"] < errs["bf16"]


@pytest.mark.parametrize("bad", ["q8_0", "F16", "fp16", ""])
def test_unknown_cache_type_is_refused(llama, bad):
    _, path = llama
    with pytest.raises(InputError, match="KV cache type"):
        load_model(path, cache_type_k=bad)
