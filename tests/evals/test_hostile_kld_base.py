"""Regression tests of issue 17 for KL-divergence base files (B7)."""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from llmtk.errors import InputError
from llmtk.evals.perplexity import KldBase, run_kl_divergence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
from engine import seed_kld  # noqa: E402

N_VOCAB, N_CTX = 24, 8


def _logits(base):
    rng = np.random.default_rng(0)
    return lambda c: rng.standard_normal((len(c), base.n_vocab)).astype(np.float32)


def _scale_offset(raw: bytes, token: int) -> int:
    n_ctx, n_vocab, n_chunk = struct.unpack_from("<iii", raw, 8)
    return 20 + 4 * n_ctx * n_chunk + token * 2 * (2 * ((n_vocab + 1) // 2) + 4)


@pytest.mark.parametrize("field,value", [(0, 3e38), (0, -1.0), (1, -3e38), (1, 1e30), (0, float("nan"))])
def test_b7_kld_huge_or_negative_scale_and_min(tmp_path, field, value):
    raw = bytearray(seed_kld(N_VOCAB, N_CTX))
    struct.pack_into("<f", raw, _scale_offset(raw, 1) + 4 * field, value)
    p = tmp_path / "base.kld"
    p.write_bytes(raw)
    base = KldBase.open(p)
    with pytest.raises(InputError) as e:
        run_kl_divergence(_logits(base), base)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_b7_kld_28_byte_file_with_n_ctx_2(tmp_path):
    p = tmp_path / "tiny.kld"
    p.write_bytes(b"_logits_" + struct.pack("<iii", 2, 4, 1) + struct.pack("<ii", 0, 1))
    assert p.stat().st_size == 28
    with pytest.raises(InputError) as e:
        KldBase.open(p)
    assert str(p) in str(e.value)


def test_b7_kld_chunks_0(tmp_path):
    p = tmp_path / "base.kld"
    p.write_bytes(seed_kld(N_VOCAB, N_CTX))
    base = KldBase.open(p)
    with pytest.raises(InputError) as e:
        run_kl_divergence(_logits(base), base, n_chunks=0)
    assert "--chunks" in str(e.value)


def test_b7_kld_token_outside_vocabulary(tmp_path):
    raw = bytearray(seed_kld(N_VOCAB, N_CTX))
    struct.pack_into("<i", raw, 20 + 4 * 3, N_VOCAB + 5)
    p = tmp_path / "base.kld"
    p.write_bytes(raw)
    with pytest.raises(InputError):
        KldBase.open(p)


def test_b7_valid_base_still_compares(tmp_path):
    p = tmp_path / "base.kld"
    p.write_bytes(seed_kld(N_VOCAB, N_CTX))
    base = KldBase.open(p)
    res = run_kl_divergence(_logits(base), base)
    assert res.kld.count == 2 * (N_CTX - 1 - N_CTX // 2) and np.isfinite(res.kld.mean)
