"""`llmtk quantize` against llama-quantize's outputs on SmolLM2 (slow), refusals and options.

Slow: SmolLM2-135M, the F16 base made from the packaged Q4_1 and every manifest made from it
(576-wide rows: most tensors take the shape fallbacks). The fast sweep over the tiny-qwen2
manifests is test_quantize_tiny.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from quant_manifest import (SMOL, TINY, check_quantize, load_manifest, manifest_differences,
                            missing_quantize_kernels, mix_params)

from llmtk.cli import main
from llmtk.ggufio.constants import GGMLType
from llmtk.errors import LlmtkError
from llmtk.ggufio import GGUFReader, GGUFWriter
from llmtk.quantize import quantize_model


@pytest.fixture(scope="module")
def smollm2_f16(shared_dir, smollm2_path, tmp_path_factory) -> Path:
    """smollm2-f16.gguf as llama-quantize made it: --allow-requantize Q4_1 -> F16 (base.json)."""
    out = tmp_path_factory.mktemp("smollm2") / "smollm2-f16.gguf"
    quantize_model(smollm2_path, out, "F16", allow_requantize=True)
    assert manifest_differences(out, load_manifest(SMOL / "quantize" / "base.json")) == []
    return out


@pytest.mark.slow
@pytest.mark.parametrize("stem", mix_params(SMOL))
def test_smollm2_matches_llama_quantize(smollm2_f16, tmp_path, stem):
    check_quantize(smollm2_f16, SMOL, stem, tmp_path, SMOL / "imatrix.gguf")


@pytest.mark.slow
def test_smollm2_legacy_dat_imatrix_gives_the_same_bytes(smollm2_f16, tmp_path):
    man = load_manifest(SMOL / "quantize" / "Q4_K_M-imatrix.json")
    assert missing_quantize_kernels(man) == []
    out = tmp_path / "q.gguf"
    quantize_model(smollm2_f16, out, "Q4_K_M", imatrix=SMOL / "imatrix.dat")
    assert manifest_differences(out, man) == []


# -- refusals and options, on small files -------------------------------------------------------

def _fake_llama(path: Path, width: int = 576, n_layer: int = 2) -> Path:
    """A minimal llama-shaped GGUF with F16 weights `width` wide (for shape-fallback refusals)."""
    rng = np.random.default_rng(0)
    with GGUFWriter(path) as w:
        w.add_kv("general.architecture", "llama")
        w.add_kv("llama.block_count", n_layer)
        w.add_kv("llama.attention.head_count", 4)
        tensors = {"token_embd.weight": (64, width), "output_norm.weight": (width,)}
        for i in range(n_layer):
            tensors[f"blk.{i}.attn_v.weight"] = (64, width)
            tensors[f"blk.{i}.ffn_down.weight"] = (width, 128)
        for name, shape in tensors.items():
            w.add_tensor_info(name, shape, "F32" if len(shape) == 1 else "F16")
        for name, shape in tensors.items():
            a = rng.normal(0, 0.02, shape).astype(np.float32)
            w.write_tensor(name, a if len(shape) == 1 else a.astype(np.float16))
    return path


def test_refuses_q1_0_on_576_wide_rows(tmp_path):
    src = _fake_llama(tmp_path / "m.gguf")
    res = CliRunner().invoke(main, ["quantize", str(src), str(tmp_path / "o.gguf"), "Q1_0"])
    assert res.exit_code == 2 and "no tensor type fallback is defined for type Q1_0" in res.output
    assert not (tmp_path / "o.gguf").exists()


def test_refuses_plain_q2_k_s(shared_dir, tmp_path):
    res = CliRunner().invoke(main, ["quantize", str(TINY / "tiny-qwen2-f16.gguf"), str(tmp_path / "o.gguf"), "Q2_K_S"])
    assert res.exit_code == 2 and "requires an importance matrix" in res.output
    assert list(tmp_path.iterdir()) == []


def test_requantize_needs_allow_requantize(shared_dir, tmp_path):
    q8 = tmp_path / "q8.gguf"
    quantize_model(TINY / "tiny-qwen2-f16.gguf", q8, "Q8_0")
    res = CliRunner().invoke(main, ["quantize", str(q8), str(tmp_path / "o.gguf"), "Q4_0"])
    assert res.exit_code == 2 and "requantizing from type Q8_0 is disabled" in res.output
    res = CliRunner().invoke(main, ["quantize", "--allow-requantize", str(q8), str(tmp_path / "o.gguf"), "F16"])
    assert res.exit_code == 0, res.output
    with GGUFReader(tmp_path / "o.gguf") as r:
        assert {t.qtype for t in r.tensors.values()} == {GGMLType.F16, GGMLType.F32}


def test_dry_run_writes_nothing_and_default_output_name(shared_dir, tmp_path):
    import shutil

    src = tmp_path / "tiny.gguf"
    shutil.copy(TINY / "tiny-qwen2-f16.gguf", src)
    res = CliRunner().invoke(main, ["quantize", "--dry-run", str(src), "Q4_K_M"])
    assert res.exit_code == 0, res.output
    assert "MiB -> " in res.output and "(q6_K)" in res.output and "quant size  =     1.50 MiB (5.65 BPW)" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.gguf"]
    res = CliRunner().invoke(main, ["quantize", str(src), "Q8_0", "1"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "tiny-Q8_0.gguf").is_file()


def test_override_kv_prune_layers_and_tensor_type(shared_dir, tmp_path):
    out = tmp_path / "o.gguf"
    quantize_model(TINY / "tiny-qwen2-f16.gguf", out, "Q8_0", override_kv=["general.name=str:Pruned", "x.n=int:-7"],
                   prune_layers=[0], tensor_types=[("ffn_up", "F16")])
    with GGUFReader(out) as r:
        assert r.kv["general.name"] == "Pruned" and r.kv["x.n"] == 7   # llama.cpp stores |int| as u32
        assert r.kv["qwen2.block_count"] == 1
        assert list(r.kv)[-3:] == ["general.name", "x.n", "qwen2.block_count"]
        names = list(r.tensors)
        assert "blk.0.ffn_up.weight" in names and not any(n.startswith("blk.1.") for n in names)
        assert r.tensors["blk.0.ffn_up.weight"].qtype == GGMLType.F16
        assert r.tensors["blk.0.ffn_gate.weight"].qtype == GGMLType.Q8_0
    with GGUFReader(TINY / "tiny-qwen2-f16.gguf") as src, GGUFReader(out) as r:
        # pruned layer 0: the old blk.1 is the new blk.0, bytes unchanged for a copied tensor
        assert bytes(r.raw("blk.0.attn_norm.weight")) == bytes(src.raw("blk.1.attn_norm.weight"))


def test_include_weights_limits_the_imatrix(shared_dir, tmp_path):
    out = tmp_path / "o.gguf"
    res = quantize_model(TINY / "tiny-qwen2-f16.gguf", out, "Q4_0", imatrix=TINY / "imatrix.gguf",
                         include_weights=["ffn_down"])
    assert res.imatrix_entries == 2
    with GGUFReader(out) as r:
        assert r.kv["quantize.imatrix.entries_count"] == 2
    with pytest.raises(LlmtkError, match="cannot be used together"):
        quantize_model(TINY / "tiny-qwen2-f16.gguf", out, "Q4_0", imatrix=TINY / "imatrix.gguf",
                       include_weights=["a"], exclude_weights=["b"])


def test_copy_keeps_types_and_file_type(shared_dir, tmp_path):
    out = tmp_path / "o.gguf"
    quantize_model(TINY / "tiny-qwen2-f16.gguf", out, "COPY")
    with GGUFReader(TINY / "tiny-qwen2-f16.gguf") as src, GGUFReader(out) as r:
        assert r.kv["general.file_type"] == src.kv["general.file_type"]
        assert {n: t.qtype for n, t in r.tensors.items()} == {n: t.qtype for n, t in src.tensors.items()}


def _split_copy(src: Path, prefix: Path, n_split: int = 2) -> Path:
    """Cut a GGUF into `n_split` parts the way gguf-split names and tags them."""
    from llmtk.ggufio.constants import GGUFValueType as VT

    with GGUFReader(src) as r:
        names = list(r.tensors)
        per = -(-len(names) // n_split)
        for i in range(n_split):
            part = names[i * per:(i + 1) * per]
            with GGUFWriter(f"{prefix}-{i + 1:05d}-of-{n_split:05d}.gguf") as w:
                if i == 0:
                    for k, v in r.kv.items():
                        w.add_kv(k, v, *r.kv_types[k])
                else:
                    w.add_kv("general.architecture", r.kv["general.architecture"])
                w.add_kv("split.no", i, VT.UINT16)
                w.add_kv("split.count", n_split, VT.UINT16)
                w.add_kv("split.tensors.count", len(names), VT.INT32)
                for n in part:
                    w.add_tensor_info(n, r.tensors[n].shape, r.tensors[n].qtype)
                for n in part:
                    w.write_tensor(n, r.raw(n))
    return Path(f"{prefix}-00001-of-{n_split:05d}.gguf")


def test_split_input_merged_or_kept(shared_dir, tmp_path):
    first = _split_copy(TINY / "tiny-qwen2-f16.gguf", tmp_path / "tiny")
    quantize_model(first, tmp_path / "one.gguf", "Q8_0")
    ref = tmp_path / "ref.gguf"
    quantize_model(TINY / "tiny-qwen2-f16.gguf", ref, "Q8_0")
    with GGUFReader(tmp_path / "one.gguf") as a, GGUFReader(ref) as b:
        assert "split.count" not in a.kv
        assert {n: bytes(a.raw(n)) for n in a.tensors} == {n: bytes(b.raw(n)) for n in b.tensors}
    res = quantize_model(first, tmp_path / "kept.gguf", "Q8_0", keep_split=True)
    assert [p.name for p in res.out_paths] == ["kept-00001-of-00002.gguf", "kept-00002-of-00002.gguf"]
    with GGUFReader(res.out_paths[1]) as r:
        # llama-quantize gives the later splits only the split keys
        assert r.kv == {"split.no": 1, "split.count": 2, "split.tensors.count": 26}
    with GGUFReader(res.out_paths[0]) as r:
        assert r.kv["general.file_type"] == 7 and r.kv["split.no"] == 0


def test_cli_type_options_and_tensor_type_file(shared_dir, tmp_path):
    tt = tmp_path / "types.txt"
    tt.write_text("ffn_down=q8_0\nattn_q=F16\n")
    res = CliRunner().invoke(main, ["quantize", "--output-tensor-type", "q4_0", "--tensor-type-file", str(tt),
                                    "--tensor-type", "ATTN_K=Q5_0", str(TINY / "tiny-qwen2-f16.gguf"),
                                    str(tmp_path / "o.gguf"), "Q4_K_M"])
    assert res.exit_code == 0, res.output
    with GGUFReader(tmp_path / "o.gguf") as r:
        t = {n: i.qtype.name for n, i in r.tensors.items()}
    # tied embeddings: --output-tensor-type reaches token_embd; patterns are lower-cased
    assert t["token_embd.weight"] == "Q4_0" and t["blk.1.ffn_down.weight"] == "Q8_0"
    assert t["blk.0.attn_q.weight"] == "F16" and t["blk.0.attn_k.weight"] == "Q5_0"
    res = CliRunner().invoke(main, ["quantize", "--tensor-type", "bad", str(TINY / "tiny-qwen2-f16.gguf"), "Q4_0"])
    assert res.exit_code == 2 and "PATTERN=TYPE" in res.output
