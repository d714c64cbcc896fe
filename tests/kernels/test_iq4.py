"""IQ4_NL and IQ4_XS against ggml's bytes and floats, best_index_int8 and the dot products."""
from __future__ import annotations

import numpy as np
import pytest
from dotcheck import check_matvec
from reference import reference_cases

from llmtk import kernels

IQ4_TYPES = ["IQ4_NL", "IQ4_XS"]


def test_both_paths_are_covered(ggml_quants):
    for q in IQ4_TYPES:
        assert {m for m, _, _ in reference_cases(ggml_quants, q)} == {"plain", "imatrix"}


def test_best_index_int8():
    from llmtk.kernels._numeric import KVALUES_IQ4NL, best_index_int8

    vals = KVALUES_IQ4NL.astype(np.float32)
    for x in np.linspace(-140, 130, 2701, dtype=np.float32):
        i = best_index_int8(KVALUES_IQ4NL, np.float32(x))
        # nearest value; a tie goes to the upper one (strict < in ggml)
        d = np.abs(vals - x)
        assert d[i] == d.min(), x
        if np.count_nonzero(d == d.min()) > 1:
            assert i == np.flatnonzero(d == d.min()).max(), x


def test_iq4_xs_zero_row_has_negative_zero_scale():
    # ggml: all sub-block scales 0 -> d = -0/32, stored as fp16 0x8000; codes index value 1 (8)
    q = kernels.quantize(np.zeros((1, 256), np.float32), "IQ4_XS")[0]
    assert q[:2].tobytes() == b"\x00\x80"
    assert np.all(q[8:] == 0x88)


@pytest.mark.parametrize("qtype", IQ4_TYPES)
def test_matvec(qtype):
    check_matvec(qtype, cols=512)


@pytest.mark.parametrize("qtype", IQ4_TYPES)
def test_results_do_not_depend_on_thread_count(qtype):
    import numba

    rng = np.random.default_rng(8)
    x = rng.standard_normal((5, 512)).astype(np.float32)
    imat = rng.random(512).astype(np.float32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = kernels.quantize(x, qtype, imatrix=imat)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, kernels.quantize(x, qtype, imatrix=imat))
    np.testing.assert_array_equal(kernels.quantize(x[2:3], qtype, imatrix=imat), one[2:3])
