"""Decode matvecs on raw GGUF blocks (llmtk.model.decode) against llmtk's dequantize + float64."""
from __future__ import annotations

import numpy as np
import pytest

from llmtk import kernels
from llmtk.ggufio.constants import GGMLType
from llmtk.model import decode, load_model

# keys and values kept in float32 (llama.cpp rounds them to f16 by default): these tests
# compare with transformers or between code paths at float32 tolerances
EXACT_KV = dict(cache_type_k="f32", cache_type_v="f32")

AFFINE = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q6_K"]


def _weights(rows: int = 40, cols: int = 512) -> np.ndarray:
    w = (np.random.default_rng(0).standard_normal((rows, cols)) * 0.05).astype(np.float32)
    w[0, :6] = [0.0, -0.0, 1e-6, -3e-7, 60000.0, -2.5]  # zeros, f16 subnormals, large values
    return w


def test_half_conversion_is_exact_for_every_finite_half():
    from numba import njit

    @njit
    def all_halves(out):
        for h in range(65536):
            out[h] = decode._half(np.uint16(h))

    got = np.empty(65536, np.float32)
    all_halves(got)
    ref = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(got[finite].view(np.uint32), ref[finite].view(np.uint32))


@pytest.mark.parametrize("qtype", AFFINE)
def test_unpacked_blocks_equal_dequantize_bit_for_bit(qtype):
    w = _weights()
    raw = kernels.quantize(w, qtype)
    aff = decode.unpack(raw, GGMLType[qtype], *w.shape)
    bs = 16 if qtype == "Q6_K" else 32
    vals = aff.a.repeat(bs, axis=1) * aff.q.astype(np.float32)
    if aff.b.shape[1]:
        vals = vals + aff.b.repeat(bs, axis=1)
    assert aff.a.shape == (w.shape[0], w.shape[1] // bs)
    np.testing.assert_array_equal(vals.astype(np.float32), kernels.dequantize(raw, qtype, w.shape))


@pytest.mark.parametrize("qtype", AFFINE + ["F16", "F32"])
@pytest.mark.parametrize("n", [1, 3])
def test_matvec_matches_dequantized_product(qtype, n):
    w = _weights()
    x = np.random.default_rng(1).standard_normal((n, w.shape[1])).astype(np.float32)
    raw = kernels.quantize(w, qtype)
    deq = kernels.dequantize(raw, qtype, w.shape).astype(np.float64)
    if qtype == "F16":
        got = decode.matvec_f16(raw, x)
    elif qtype == "F32":
        got = decode.matvec_f32(w, x)
    else:
        got = decode.unpack(raw, GGMLType[qtype], *w.shape).matvec(x)
    ref = x.astype(np.float64) @ deq.T
    # float32 sums in another order than float64: a few ulps of the row's magnitude
    assert np.abs(got - ref).max() < 1e-5 * np.abs(x).max() * np.abs(deq).sum(axis=1).max()


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


def test_round_activations_follows_the_vec_dot_type():
    from llmtk.model.ops import round_activations

    x = np.random.default_rng(3).standard_normal((5, 256)).astype(np.float32)
    assert round_activations(x, GGMLType.F32) is x
    np.testing.assert_array_equal(round_activations(x, GGMLType.F16), x.astype(np.float16).astype(np.float32))
    x[0, :40] = 0.0  # an all-zero block
    x[1, 7] = 0.5 / 127  # ties for roundf
    for vdt in ("Q8_0", "Q8_1", "Q8_K", "BF16"):
        want = kernels.dequantize(kernels.quantize(x, vdt), vdt, x.shape)
        np.testing.assert_array_equal(round_activations(x, GGMLType[vdt]), want)
    assert round_activations(x[:, :96], GGMLType.Q8_K) is not None  # 96 is no Q8_K row: unchanged


def test_q8_0_activations_round_as_ggml_cpu_on_x86():
    """quantize_row_q8_0 of ggml-cpu's x86 code: scale 127/amax and half-to-even rounding (the
    reference C code, which llmtk's quantizer follows, uses 1/d and roundf)."""
    from llmtk.model.ops import round_activations

    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 96)).astype(np.float32)
    x[0, :32] = np.arange(32, dtype=np.float32) - 15.5   # amax 15.5: many x*127/amax near halves
    x[1, :32] = 0.0
    x[1, 0], x[1, 1], x[1, 2] = 127.0, 2.5, -3.5        # id = 1: exact ties 2.5 -> 2, -3.5 -> -4
    blocks = x.reshape(64, 3, 32)
    amax = np.abs(blocks).max(axis=2, keepdims=True)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127.0) / amax, np.float32(0.0)).astype(np.float32)
    d16 = (amax / np.float32(127.0)).astype(np.float16).astype(np.float32)
    want = (np.rint(blocks * inv) * d16).reshape(64, 96)
    got = round_activations(x, GGMLType.Q8_0)
    np.testing.assert_array_equal(got, want)
    assert got[1, 1] == 2.0 and got[1, 2] == -4.0


def test_quantize_activations_changes_quantized_models_only(tmp_path):
    pytest.importorskip("transformers")
    from tiny_models import N_VOCAB, build

    toks = np.random.default_rng(4).integers(0, N_VOCAB, 7).astype(np.int32)
    for qtype, changed in (("F32", False), ("Q8_0", True)):
        _, path = build("qwen2", tmp_path, qtype=qtype)
        with load_model(path) as a, load_model(path, quantize_activations=False) as b:
            la, lb = a.forward(toks), b.forward(toks)
        assert (np.abs(la - lb).max() > 0) == changed, qtype
