"""Grid-based i-quants against ggml's own bytes and floats (../shared/quants/ggml-quants.npz)."""
from __future__ import annotations

import numpy as np
import pytest

IQ_TYPES = ["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M"]


@pytest.mark.parametrize("qtype", IQ_TYPES)
def test_matvec_matches_dequantized_dot(qtype):
    """Q8_K dot products equal the float64 dot of the dequantized weights with the dequantized
    Q8_K activations up to float32 accumulation (1e-5 of sum |w x|), and stay within Q8_K's
    rounding of the plain float product (2% of sum |w x|)."""
    from llmtk import kernels
    from llmtk.kernels.kquants import quantize_q8_K

    rng = np.random.default_rng(5)
    cols, rows, n = 768, 9, 4
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    imatrix = rng.uniform(0.5, 2.0, cols).astype(np.float32)
    x = rng.standard_normal((n, cols)).astype(np.float32)
    data = kernels.quantize(w, qtype, imatrix=imatrix)
    wd = kernels.dequantize(data, qtype, (rows, cols)).astype(np.float64)
    d8, qs8, _ = quantize_q8_K(x)
    x8 = (np.repeat(d8, 256, axis=1).astype(np.float64) * qs8)
    ours = kernels.matvec(data, qtype, x)
    assert ours.shape == (n, rows) and ours.dtype == np.float32
    ref = x8 @ wd.T
    scale = np.abs(x8) @ np.abs(wd).T
    np.testing.assert_array_less(np.abs(ours - ref), 1e-5 * scale)
    np.testing.assert_array_less(np.abs(ours - x.astype(np.float64) @ wd.T), 0.02 * scale)


def test_ksigns_has_even_parity():
    from llmtk.kernels._iq_grids import KSIGNS

    assert KSIGNS.shape == (128,)
    assert all(bin(int(v)).count("1") % 2 == 0 and int(v) & 127 == i for i, v in enumerate(KSIGNS))


@pytest.mark.parametrize("name,dim,bits,nwant,max_level", [
    ("IQ2_XXS", 8, 2, 2, 2), ("IQ2_XS", 8, 2, 2, 2), ("IQ2_S", 8, 2, 1, 2), ("IQ1_S", 8, 2, 3, 2),
    ("IQ3_XXS", 4, 3, 2, 7), ("IQ3_S", 4, 3, 3, 7)])
def test_neighbour_lists_are_the_nearest_grid_points(name, dim, bits, nwant, max_level):
    """Spot-check the tables against a brute force: every grid point maps to itself, and an
    off-grid point lists all grid points of its `nwant` smallest distances by (distance, index)."""
    from llmtk.kernels._iq_grids import grid

    g = grid(name)
    n = g.levels.shape[0]
    packed = (g.levels.astype(np.int64) << (bits * np.arange(dim))).sum(axis=1)
    assert np.array_equal(g.kmap[packed], np.arange(n))
    rng = np.random.default_rng(1)
    for _ in range(40):
        lv = rng.integers(0, max_level + 1, dim)
        u = int((lv << (bits * np.arange(dim))).sum())
        if g.kmap[u] >= 0:
            continue
        d2 = (((2 * g.levels.astype(np.int64) + 1) - (2 * lv + 1)) ** 2).sum(axis=1)
        keep = np.isin(d2, np.unique(d2)[:nwant])
        order = np.lexsort((np.arange(n), d2))
        want = order[keep[order]]
        off = -int(g.kmap[u]) - 1
        got = g.neighbours[off + 1:off + 1 + int(g.neighbours[off])]
        assert np.array_equal(got, want), (name, lv)


@pytest.mark.parametrize("qtype", ["IQ2_XXS", "IQ3_S", "IQ1_M"])
def test_quantize_does_not_depend_on_thread_count(qtype):
    import numba
    from llmtk import kernels

    x = np.random.default_rng(3).standard_normal((6, 512)).astype(np.float32)
    imatrix = np.linspace(0.1, 3.0, 512, dtype=np.float32)
    n = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = kernels.quantize(x, qtype, imatrix=imatrix)
    finally:
        numba.set_num_threads(n)
    assert np.array_equal(one, kernels.quantize(x, qtype, imatrix=imatrix))
