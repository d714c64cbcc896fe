"""llmtk.bench: tiny runs of each table, checking shape, columns and the ratios (no timed assertions)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from llmtk import bench
from llmtk.errors import InputError

TINY = "convert/llama/tiny-llama-f16.gguf"


def test_kernels_table_columns_and_ratios(monkeypatch):
    from llmtk import kernels

    # pretend Q2_K requires an imatrix, as IQ2_XXS does (whose kernels take long to compile)
    real = kernels.requires_imatrix
    monkeypatch.setattr(kernels, "requires_imatrix", lambda t: real(t) or getattr(t, "name", t) == "Q2_K")
    df = bench.bench_kernels(["Q4_0", "Q2_K"], rows=2, cols=256, threads=[1, 2], repeat=1)
    assert list(df["type"]) == ["Q4_0", "Q2_K"]
    assert list(df.columns) == bench.kernel_columns([1, 2])
    for _, row in df.iterrows():
        ggml = bench.GGML_MBPS[row["type"]]
        for op, ref in (("q", ggml[0]), ("qi", ggml[1]), ("dq", ggml[2])):
            assert row[f"{op} 1t"] > 0 and row[f"{op} 2t"] > 0
            assert row[f"{op} 1t/ggml"] == pytest.approx(row[f"{op} 1t"] / ref)
        assert row["dq 1t/gguf-py"] == pytest.approx(row["dq 1t"] / row["gguf-py dq"])
    q4, iq2 = df.iloc[0], df.iloc[1]
    assert q4["q 1t/gguf-py"] == pytest.approx(q4["q 1t"] / q4["gguf-py q"])
    # gguf-py cannot quantize Q2_K (n/a); a type that requires an imatrix reports that speed as q
    assert math.isnan(iq2["gguf-py q"]) and math.isnan(iq2["q 1t/gguf-py"])
    assert iq2["q 1t"] == iq2["qi 1t"]


def test_kernels_type_without_ggml_figure_and_bad_input():
    df = bench.bench_kernels(["Q8_K"], rows=1, cols=256, threads=[2], repeat=1, gguf_py=False)
    assert list(df.columns) == bench.kernel_columns([2])       # no 1-thread ratio columns
    assert math.isnan(df.loc[0, "gguf-py dq"]) and df.loc[0, "dq 2t"] > 0
    with pytest.raises(InputError, match="multiple of 256"):
        bench.bench_kernels(["Q4_K"], rows=1, cols=100, threads=[1], repeat=1)
    with pytest.raises(InputError, match="thread count 99"):
        bench.bench_kernels(["Q4_0"], threads=[99])


def test_reference_tables_match_the_shared_readme(shared_dir):
    """The figures copied into the module are those of ../shared/README.md (re-copy if it changed)."""
    text = (shared_dir / "README.md").read_text()
    for name, (q, qi, dq, gq, gdq) in bench.GGML_MBPS.items():
        cells = [f"{v:g}" if v is not None else "n/a" for v in (q, qi, dq, gq, gdq)]
        cells = [c if "." in c or c == "n/a" or float(c) >= 100 else f"{float(c):.1f}" for c in cells]
        assert f"| {name} | " + " | ".join(cells) + " |" in text, name
    for (t, n), (pp, tg) in bench.LLAMA_BENCH_TPS.items():
        assert f"| {t} | {n} | {pp:g} | {tg:g} |" in text


def test_forward_quantized_variant_and_as_is(shared_dir):
    model = shared_dir / TINY
    df = bench.bench_forward(model, ["Q8_0"], threads=[1], n_prompt=8, n_gen=3, repeat=1)
    assert list(df.columns) == ["type", "threads", "sgemm GFLOP/s", "warmup s", "pp8 t/s", "tg3 t/s",
                                "llama pp t/s", "llama tg t/s", "pp/llama", "tg/llama"]
    assert df.shape == (1, 10) and df.loc[0, "type"] == "Q8_0"
    assert df.loc[0, "pp8 t/s"] > 0 and df.loc[0, "tg3 t/s"] > 0
    # not SmolLM2: llama-bench's figures do not apply
    assert df[["llama pp t/s", "pp/llama", "tg/llama"]].isna().all().all()
    df = bench.bench_forward(model, None, threads=[1, 2], n_prompt=4, n_gen=2, repeat=1, clock="cpu")
    assert "one-thread clock: cpu" in df.attrs["title"]
    assert list(df["type"]) == ["F16", "F16"] and list(df["threads"]) == [1, 2]
    assert (df["sgemm GFLOP/s"] > 0).all()


def test_forward_ratios_where_llama_bench_applies(shared_dir, monkeypatch):
    monkeypatch.setattr(bench.forward, "is_smollm2_135m", lambda path: True)
    df = bench.bench_forward(shared_dir / TINY, None, threads=[1, 2], repeat=1)
    assert list(df.columns)[4:6] == ["pp512 t/s", "tg128 t/s"]
    for _, row in df.iterrows():
        pp, tg = bench.LLAMA_BENCH_TPS[("F16", row["threads"])]
        assert (row["llama pp t/s"], row["llama tg t/s"]) == (pp, tg)
        assert row["pp/llama"] == pytest.approx(row["pp512 t/s"] / pp)
        assert row["tg/llama"] == pytest.approx(row["tg128 t/s"] / tg)


@pytest.mark.slow
def test_forward_ratios_on_smollm2(smollm2_path, tmp_path):
    df = bench.bench_forward(smollm2_path, ["Q8_0"], threads=[2], n_prompt=512, n_gen=2, repeat=1, workdir=tmp_path)
    row = df.iloc[0]
    assert row["llama pp t/s"] == 684 and row["pp/llama"] == pytest.approx(row["pp512 t/s"] / 684)
    assert math.isnan(row["tg/llama"])  # tg2 is not llama-bench's tg128
    assert (tmp_path / f"{smollm2_path.stem}-Q8_0.gguf").is_file()


def test_quantize_table(shared_dir, tmp_path):
    df = bench.bench_quantize(["Q8_0", "Q4_0"], model=shared_dir / TINY, threads=1, process=False)
    assert list(df.columns) == ["type", "threads", "size MB", "wall s", "cpu s", "llama s", "wall/llama",
                                "cpu/1t/llama"]
    assert list(df["type"]) == ["Q8_0", "Q4_0"] and (df["wall s"] > 0).all() and (df["size MB"] > 0).all()
    assert df["llama s"].isna().all()  # tiny-llama is not SmolLM2: no llama-quantize figure
    assert df.loc[0, "size MB"] > df.loc[1, "size MB"]
    with pytest.raises(InputError, match="TYPE or TYPE-imatrix"):
        bench.bench_quantize(["Q8_0-foo"], model=shared_dir / TINY)


def test_quantize_ratios_where_llama_quantize_applies(shared_dir, monkeypatch):
    monkeypatch.setattr(bench.quantize, "is_smollm2_135m", lambda path: True)
    monkeypatch.setattr(bench.quantize, "_quantize_process", bench.quantize._quantize_in_process)  # the real one is slow
    df = bench.bench_quantize(["Q4_K_M"], model=shared_dir / TINY, threads=2)
    row = df.iloc[0]
    assert row["llama s"] == pytest.approx(1.95) and row["wall s"] > 0 and row["cpu s"] > 0
    assert row["wall/llama"] == pytest.approx(row["wall s"] / 1.95)
    assert row["cpu/2t/llama"] == pytest.approx(row["cpu s"] / 2 / 1.95)
    assert "fresh processes" in df.attrs["title"]


@pytest.mark.slow
def test_quantize_in_a_fresh_process(shared_dir):
    df = bench.bench_quantize(["Q8_0"], model=shared_dir / TINY, threads=1)
    assert df.loc[0, "wall s"] > 0 and df.loc[0, "cpu s"] > 0 and df.loc[0, "size MB"] > 0
    # SmolLM2's imatrix does not fit tiny-llama: the child's error comes back as an InputError
    imatrix = shared_dir / "llamacpp" / "smollm2" / "imatrix.gguf"
    with pytest.raises(InputError, match="quantize Q4_K_M in a fresh process failed.*imatrix size"):
        bench.bench_quantize(["Q4_K_M-imatrix"], model=shared_dir / TINY, threads=1, imatrix=imatrix)


def test_quantize_imatrix_of_another_model_is_not_borrowed(shared_dir):
    with pytest.raises(InputError, match="needs --imatrix .*SmolLM2's"):
        bench.bench_quantize(["Q4_K_M-imatrix"], model=shared_dir / TINY, threads=1)


def test_canonical_type_names():
    assert [bench.canonical_type(t) for t in ("q4_k", "Q4_K_M", "Q3_K", "f32", "COPY", "iq4_xs")] == \
        ["Q4_K_M", "Q4_K_M", "Q3_K_M", "F32", "COPY", "IQ4_XS"]


def test_quantize_reference_times(shared_dir):
    assert bench.llama_quantize_seconds("Q4_K_M") == pytest.approx(1.95)
    assert bench.llama_quantize_seconds("Q4_K_M-imatrix") > 0
    assert bench.llama_quantize_seconds("NOPE") is None


def test_render_formats():
    import json

    import pandas as pd

    df = pd.DataFrame([{"type": "Q4_0", "threads": np.int64(2), "pp512 t/s": 123.456, "pp/llama": 0.5, "x": math.nan}])
    df.attrs["title"] = "T"
    md = bench.render(df, "markdown").splitlines()
    assert md[0] == "T" and md[2] == "| type | threads | pp512 t/s | pp/llama | x |"
    assert md[4] == "| Q4_0 | 2 | 123 | 0.50 | n/a |"
    assert json.loads(bench.render(df, "json")) == [{"type": "Q4_0", "threads": 2, "pp512 t/s": 123.456,
                                                      "pp/llama": 0.5, "x": None}]
    assert bench.render(df, "csv").splitlines()[1] == "Q4_0,2,123.456,0.5,"
    assert bench.format_cell(5.123, "q 1t") == "5.12" and bench.format_cell(51.23, "q 1t") == "51.2"


def test_kernels_cpu_clock_and_start():
    df = bench.bench_kernels(["Q8_0"], rows=2, cols=64, threads=[1], repeat=1, clock="cpu")
    assert df.loc[0, "q 1t"] > 0 and "one-thread clock: cpu" in df.attrs["title"]
    with pytest.raises(InputError, match="unknown clock"):
        bench.bench_kernels(["Q8_0"], clock="sundial")


def test_start_table(monkeypatch):
    monkeypatch.setattr(bench.start, "_START_SNIPPET", "print('noise'); print(0.5, 0.25)")
    df = bench.bench_start(repeat=1)
    assert list(df.columns) == ["what", "wall s", "cpu s"] and df.shape == (2, 3)
    assert (df.loc[0, "wall s"], df.loc[0, "cpu s"]) == (0.5, 0.25)
    assert df.loc[1, "wall s"] > 0
