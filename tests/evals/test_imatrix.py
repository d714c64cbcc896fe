"""`llmtk imatrix` against llama-imatrix: file formats byte for byte, statistics line for line,
and the collected values within 1% per entry."""
from __future__ import annotations

import filecmp
import re

import numpy as np
import pytest
from click.testing import CliRunner

from llmtk.cli import main
from llmtk.ggufio.imatrix_file import Imatrix, read_imatrix


def _cli(*args: str):
    res = CliRunner().invoke(main, ["imatrix", *args])
    assert res.exit_code == 0, res.output
    return res


def test_in_file_rewrites_both_formats_byte_identical(shared_dir, tmp_path):
    src = shared_dir / "llamacpp" / "smollm2"
    _cli("--in-file", str(src / "imatrix.gguf"), "-o", str(tmp_path / "a.gguf"))
    assert filecmp.cmp(tmp_path / "a.gguf", src / "imatrix.gguf", shallow=False)
    _cli("--in-file", str(src / "imatrix.gguf"), "--output-format", "dat", "-o", str(tmp_path / "a.dat"))
    assert filecmp.cmp(tmp_path / "a.dat", src / "imatrix.dat", shallow=False)
    _cli("--in-file", str(src / "imatrix.dat"), "--output-format", "dat", "-o", str(tmp_path / "b.dat"))
    assert filecmp.cmp(tmp_path / "b.dat", src / "imatrix.dat", shallow=False)


def test_combining_two_files_adds_sums_and_counts(shared_dir, tmp_path):
    src = shared_dir / "llamacpp" / "smollm2" / "imatrix.gguf"
    _cli("--in-file", str(src), "--in-file", str(src), "-o", str(tmp_path / "two.gguf"))
    one, two = read_imatrix(src), read_imatrix(tmp_path / "two.gguf")
    assert two.chunk_count == 2 * one.chunk_count and two.datasets == one.datasets * 2
    for name, e in one.entries.items():
        np.testing.assert_array_equal(two.entries[name].sums, e.sums * 2)   # exact: x + x == 2x
        np.testing.assert_array_equal(two.entries[name].counts, e.counts * 2)


def test_legacy_and_gguf_give_the_same_means(shared_dir):
    src = shared_dir / "llamacpp" / "smollm2"
    g, d = read_imatrix(src / "imatrix.gguf").means(), read_imatrix(src / "imatrix.dat").means()
    assert g.keys() == d.keys() and len(g) == 210
    for k in g:
        np.testing.assert_allclose(d[k], g[k], rtol=1e-6)


def test_show_statistics_matches_llama_imatrix(shared_dir):
    src = shared_dir / "llamacpp" / "smollm2"
    out = CliRunner().invoke(main, ["imatrix", "--in-file", str(src / "imatrix.gguf"), "--show-statistics"])
    assert out.exit_code == 0, out.output
    ours = [ln for ln in out.output.splitlines() if ln.strip()][1:]
    ref = [re.sub(r"^\d+\.\d+\.\d+\.\d+ I ?", "", ln) for ln in (src / "imatrix-statistics.txt").read_text().splitlines()]
    ref = [ln for ln in ref if ln.strip()][1:]
    ref = ref[:-1] if not ref[-1].strip() or "\t" not in ref[-1] else ref   # the reference log ends mid-line
    assert len(ref) > 100
    assert [ln.rstrip() for ln in ours[:len(ref)]] == [ln.rstrip() for ln in ref]


def _compare_means(ours: Imatrix, ref: Imatrix) -> tuple[float, float]:
    mo, mr = ours.means(), ref.means()
    assert mo.keys() == mr.keys()
    rel = np.concatenate([np.abs(mo[k] - mr[k]) / np.maximum(np.abs(mr[k]), 1e-30) for k in mr])
    return float(rel.max()), float(np.median(rel))


def test_tiny_qwen2_imatrix_within_1_percent(shared_dir, tmp_path):
    base = shared_dir / "llamacpp" / "tiny-qwen2-w256"
    _cli("-m", str(base / "tiny-qwen2-f16.gguf"), "-f", str(shared_dir / "text" / "pydoc-tutorial.txt"),
         "-c", "512", "--chunks", "4", "-o", str(tmp_path / "im.gguf"))
    ours, ref = read_imatrix(tmp_path / "im.gguf"), read_imatrix(base / "imatrix.gguf")
    assert ours.chunk_count == ref.chunk_count == 4 and ours.chunk_size == 512
    worst, median = _compare_means(ours, ref)
    assert worst < 0.01 and median < 1e-3, (worst, median)


@pytest.mark.slow
def test_smollm2_imatrix_within_1_percent(shared_dir, smollm2_path, tmp_path):
    from llmtk.quantize import quantize_model

    f16 = quantize_model(smollm2_path, tmp_path / "f16.gguf", "F16", allow_requantize=True).out_paths[0]
    _cli("-m", str(f16), "-f", str(shared_dir / "text" / "pydoc-tutorial.txt"), "-c", "512", "--chunks", "16",
         "-o", str(tmp_path / "im.gguf"))
    worst, median = _compare_means(read_imatrix(tmp_path / "im.gguf"),
                                   read_imatrix(shared_dir / "llamacpp" / "smollm2" / "imatrix.gguf"))
    assert worst < 0.01 and median < 1e-3, (worst, median)


def test_collector_sums_squares_per_weight_and_per_expert():
    from llmtk.evals.imatrix import ImatrixCollector

    col = ImatrixCollector(n_expert=3)
    x = np.arange(16 * 4, dtype=np.float32).reshape(16, 4) / 10
    col("blk.0.attn_q.weight", x)
    col("blk.0.attn_q.weight", x)
    col("blk.0.attn_k.weight", x[:8])            # fewer than 16 rows: ignored, as llama.cpp does
    col("token_embd.weight", x)                  # not a blk.* weight (nor output.weight)
    e = col.im.entries["blk.0.attn_q.weight"]
    np.testing.assert_allclose(e.sums, 2 * (x.astype(np.float64) ** 2).sum(0), rtol=1e-6)
    assert e.counts.tolist() == [32] and set(col.im.entries) == {"blk.0.attn_q.weight"}
    # experts: token t routed to experts ids[t]; x (n, n_used, cols)
    xe = np.ones((2, 2, 4), np.float32) * np.array([[[1], [2]], [[3], [4]]], np.float32)
    ids = np.array([[0, 2], [2, 1]], np.int32)
    col("blk.0.ffn_up_exps.weight", xe, ids)
    e = col.im.entries["blk.0.ffn_up_exps.weight"]
    assert e.counts.tolist() == [1, 1, 2]
    np.testing.assert_array_equal(e.sums.reshape(3, 4), [[1] * 4, [16] * 4, [4 + 9] * 4])


def test_collector_batched_3d_weight_keeps_one_count():
    """MLA's attn_k_b/attn_v_b: one matrix per head, each multiplied by its own slice of the
    activations (ggml's MUL_MAT over a 3-D weight): sums per head, one count of the tokens."""
    from llmtk.evals.imatrix import ImatrixCollector

    col = ImatrixCollector(n_expert=8)
    x = np.random.default_rng(0).standard_normal((16, 3, 4)).astype(np.float32)   # (n, heads, cols)
    col("blk.0.attn_k_b.weight", x)
    col("blk.0.attn_k_b.weight", x)
    col("blk.0.attn_v_b.weight", x[:15])         # fewer than 16 tokens: ignored
    e = col.im.entries["blk.0.attn_k_b.weight"]
    assert e.counts.tolist() == [32] and set(col.im.entries) == {"blk.0.attn_k_b.weight"}
    np.testing.assert_allclose(e.sums.reshape(3, 4), 2 * (x.astype(np.float64) ** 2).sum(0), rtol=1e-6)
