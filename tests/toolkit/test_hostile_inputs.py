"""Regression tests of issue 17 for the GGUF reader and the imatrix files (B1-B6): each hostile
input, built with struct.pack, gives one LlmtkError whose one-line message names the file."""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from llmtk.errors import GGUFFormatError, InputError, LlmtkError
from llmtk.ggufio import GGUFReader
from llmtk.ggufio.imatrix_file import Imatrix, read_imatrix, write_imatrix_dat

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
from engine import ARR, F32, STR, U32, Gguf, seed_imatrix_dat, seed_imatrix_gguf  # noqa: E402
from gguf_bytes import F32_T, gguf, tinfo  # noqa: E402


def _one_line(e: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def _imatrix_gguf(tmp_path: Path, kv_edit=None, counts=2048.0, n_cols=8, name="blk.0.attn_q.weight") -> Path:
    g = Gguf(kv=[["general.type", STR, None, "imatrix"], ["imatrix.datasets", ARR, STR, ["t"]],
                 ["imatrix.chunk_count", U32, None, 4], ["imatrix.chunk_size", U32, None, 512]])
    if kv_edit:
        kv_edit(g)
    if n_cols:
        g.add_tensor(name + ".in_sum2", np.ones(n_cols, np.float32))
    else:
        g.tensors.append([name + ".in_sum2", [0], 0, 0])
    g.add_tensor(name + ".counts", np.full(1, counts, np.float32))
    p = tmp_path / "im.gguf"
    p.write_bytes(g.pack())
    return p


def test_b1_reader_huge_dim_beside_zero_dim(tmp_path):
    p = tmp_path / "b1.gguf"
    p.write_bytes(gguf([], [tinfo("t", [2**62, 0], F32_T, 0)], b""))
    with pytest.raises(GGUFFormatError) as e:
        GGUFReader(p)
    assert "too large" in _one_line(e, p)  # B1


@pytest.mark.parametrize("kind", ["string", "nan", "inf", "array", "negative"])
def test_b2_imatrix_metadata_of_wrong_type(tmp_path, kind):
    def edit(g):
        e = g.kv[2]
        e[1], e[2], e[3] = {"string": (STR, None, "x"), "nan": (F32, None, float("nan")),
                            "inf": (F32, None, float("inf")), "array": (ARR, U32, [1, 2]),
                            "negative": (5, None, -3)}[kind]
    p = _imatrix_gguf(tmp_path, edit)
    with pytest.raises(GGUFFormatError) as e:
        read_imatrix(p)
    assert "imatrix.chunk_count" in _one_line(e, p)


@pytest.mark.parametrize("count", [float("nan"), 3e38, -3e38, 1e18])
def test_b3_imatrix_bad_counts_refused_when_read(tmp_path, count):
    p = _imatrix_gguf(tmp_path, counts=count)
    with pytest.raises(GGUFFormatError) as e:
        read_imatrix(p)
    _one_line(e, p)


def test_b3_dat_writer_count_too_large(tmp_path):
    im = read_imatrix(_imatrix_gguf(tmp_path, counts=2.0 ** 40))  # ncall 2^31 at 512 a chunk
    with pytest.raises(InputError) as e:
        write_imatrix_dat(tmp_path / "out.dat", im)
    assert "int32" in _one_line(e, tmp_path / "out.dat")
    assert not (tmp_path / "out.dat").exists()


def test_b4_combining_gguf_and_dat_of_different_sizes(tmp_path):
    g = read_imatrix(_imatrix_gguf(tmp_path, n_cols=8))
    dat = tmp_path / "im.dat"
    b = b"blk.0.attn_q.weight"
    dat.write_bytes(struct.pack("<ii", 1, len(b)) + b + struct.pack("<ii", 1, 5) + np.ones(5, "<f4").tobytes())
    both = Imatrix(has_metadata=True)
    both.add(g, 512)
    with pytest.raises(InputError) as e:
        both.add(read_imatrix(dat), 512)
    assert "5 values" in _one_line(e, dat)


def test_b5_statistics_of_one_and_zero_column_entries(tmp_path):
    from llmtk.evals.imatrix import format_statistics
    im = read_imatrix(_imatrix_gguf(tmp_path, n_cols=1))
    assert "nan" in format_statistics(im, "im.gguf")
    with pytest.raises(GGUFFormatError) as e:
        read_imatrix(_imatrix_gguf(tmp_path, n_cols=0))
    _one_line(e, tmp_path / "im.gguf")


def test_b5_legacy_name_of_5000_digits(tmp_path):
    p = tmp_path / "digits.dat"
    name = b"blk." + b"9" * 5000 + b".attn_q.weight"
    p.write_bytes(struct.pack("<ii", 1, len(name)) + name + struct.pack("<ii", 1, 4) + np.ones(4, "<f4").tobytes())
    with pytest.raises(GGUFFormatError) as e:
        read_imatrix(p)
    _one_line(e, p)


def test_b6_names_with_control_characters_stay_on_one_line(tmp_path):
    p = tmp_path / "b6.gguf"
    p.write_bytes(gguf([], [tinfo("a\nb\x1b[2J", [4], F32_T, 0), tinfo("a\nb\x1b[2J", [4], F32_T, 32)], b"\0" * 64))
    with pytest.raises(LlmtkError) as e:
        GGUFReader(p)
    assert "\\n" in _one_line(e, p)
    # and an imatrix entry without its counts, named with a newline
    g = Gguf(kv=[["general.type", STR, None, "imatrix"]])
    g.add_tensor("x\ny.in_sum2", np.ones(4, np.float32))
    q = tmp_path / "b6im.gguf"
    q.write_bytes(g.pack())
    with pytest.raises(LlmtkError) as e:
        read_imatrix(q)
    _one_line(e, q)


def test_seeds_still_read(tmp_path):
    (tmp_path / "a.gguf").write_bytes(seed_imatrix_gguf())
    (tmp_path / "a.dat").write_bytes(seed_imatrix_dat())
    assert len(read_imatrix(tmp_path / "a.gguf").entries) == 3
    assert len(read_imatrix(tmp_path / "a.dat").entries) == 3


def test_fuzz_non_finite_imatrix_entry_with_a_newline_in_its_name(tmp_path):
    """Found by benchmarks/fuzz.py (imatrix_dat): the message printed the name's newline."""
    from llmtk.quantize import load_imatrix_means

    name = b"blk.0.ff\n_down.weight"
    p = tmp_path / "bad.dat"
    values = np.array([1.0, np.nan, 1.0, 1.0], "<f4")
    p.write_bytes(struct.pack("<ii", 1, len(name)) + name + struct.pack("<ii", 1, 4) + values.tobytes())
    with pytest.raises(LlmtkError) as e:
        load_imatrix_means(p)
    assert "\n" not in str(e.value) and "bad.dat" in str(e.value)
