"""The converter's machinery: checkpoints (sharded, torch), errors, tokenizer fallbacks, naming,
atomic output, one-pass quantization."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from convert_helpers import manifest, materialize

from llmtk.converters import convert
from llmtk.errors import InputError, UnsupportedError


@pytest.fixture(scope="module")
def tiny(shared_dir: Path, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return lambda arch: materialize(shared_dir, arch, root)


def _read_st(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _write_st(path: Path, tensors: dict[str, tuple[str, list[int], bytes]]) -> None:
    header, blobs, off = {}, [], 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def _copy_dir(src: Path, dest: Path, skip: tuple[str, ...] = ()) -> Path:
    dest.mkdir(parents=True)
    for f in src.iterdir():
        if f.name not in skip:
            (dest / f.name).symlink_to(f.resolve())
    return dest


def _tensors(src: Path) -> dict[str, tuple[str, list[int], bytes]]:
    header, data = _read_st(src / "model.safetensors")
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in header.items() if k != "__metadata__"}


def test_sharded_checkpoint_gives_the_same_file(tiny, tmp_path: Path) -> None:
    src = tiny("qwen3")
    ref = convert(src, tmp_path / "ref.gguf", "f16", progress=False)
    dest = _copy_dir(src, tmp_path / "tiny-qwen3", skip=("model.safetensors",))
    tensors = _tensors(src)
    names = list(tensors)  # llama.cpp walks shards in file-name order, names sorted within each
    parts = {"model-00001-of-00002.safetensors": names[:10], "model-00002-of-00002.safetensors": names[10:]}
    for part, ns in parts.items():
        _write_st(dest / part, {n: tensors[n] for n in ns})
    (dest / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {n: p for p, ns in parts.items() for n in ns}}))
    out = convert(dest, tmp_path / "sharded.gguf", "f16", progress=False)
    assert out.read_bytes() == ref.read_bytes()


def test_index_naming_a_missing_tensor_is_an_error(tiny, tmp_path: Path) -> None:
    dest = _copy_dir(tiny("qwen3"), tmp_path / "tiny-qwen3")
    names = list(_tensors(dest))
    index = {n: "model.safetensors" for n in names} | {"model.layers.9.mlp.up_proj.weight": "model.safetensors"}
    (dest / "model.safetensors.index.json").write_text(json.dumps({"weight_map": index}))
    with pytest.raises(InputError, match="disagree"):
        convert(dest, tmp_path / "x.gguf", "f16", progress=False)
    assert not list(tmp_path.glob("*.gguf*"))


def test_unmappable_tensor_is_an_error_naming_it(tiny, tmp_path: Path) -> None:
    src = tiny("llama")
    dest = _copy_dir(src, tmp_path / "tiny-llama", skip=("model.safetensors",))
    tensors = _tensors(src)
    tensors["model.layers.0.mlp.extra_proj.weight"] = ("F32", [2], b"\0" * 8)
    _write_st(dest / "model.safetensors", tensors)
    with pytest.raises(UnsupportedError, match=r"model\.layers\.0\.mlp\.extra_proj\.weight"):
        convert(dest, tmp_path / "x.gguf", "f16", progress=False)


def test_unknown_architecture_names_the_nearest_supported_one(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPTNeoXForCausalLM"]}))
    with pytest.raises(UnsupportedError, match=r"'GPTNeoXForCausalLM' is not supported; nearest supported: \w+"):
        convert(tmp_path, tmp_path / "x.gguf", progress=False)


def test_missing_folder_and_config(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a directory"):
        convert(tmp_path / "nope", tmp_path / "x.gguf", progress=False)
    with pytest.raises(InputError, match="no config.json"):
        convert(tmp_path, tmp_path / "x.gguf", progress=False)


def test_failure_while_writing_leaves_nothing(tiny, tmp_path: Path) -> None:
    """A NaN weight makes Q8_0 quantization fail mid-file: no output and no temp file remain."""
    src = tiny("qwen2")
    dest = _copy_dir(src, tmp_path / "tiny-qwen2", skip=("model.safetensors",))
    tensors = _tensors(src)
    dtype, shape, data = tensors["model.layers.1.mlp.up_proj.weight"]
    tensors["model.layers.1.mlp.up_proj.weight"] = (dtype, shape, b"\xc0\x7f" + data[2:])  # bf16 NaN
    _write_st(dest / "model.safetensors", tensors)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(InputError, match="blk.1.ffn_up.weight.*non-finite"):
        convert(dest, out_dir / "x.gguf", "q8_0", progress=False)
    assert list(out_dir.iterdir()) == []


def test_default_output_name_as_llama_cpp(tiny, tmp_path: Path) -> None:
    out = convert(tiny("llama"), tmp_path, "f16", progress=False)
    assert out == tmp_path / "Tiny-Llama-3.2M-F16.gguf"
    out = convert(tiny("mixtral"), tmp_path / "m-{ftype}.gguf", "auto", progress=False)
    assert out == tmp_path / "m-bf16.gguf"
    assert manifest(out)["kv"]["general.file_type"] == 32  # MOSTLY_BF16: auto found bf16 weights


def test_vocab_only_has_the_tokenizer_and_no_tensors(tiny, shared_dir: Path, tmp_path: Path) -> None:
    out = convert(tiny("qwen2"), tmp_path / "v.gguf", "f16", vocab_only=True, progress=False)
    got = manifest(out)
    ref = json.loads((shared_dir / "convert" / "qwen2" / "f16.json").read_text())["kv"]
    assert got["tensors"] == []
    # llama.cpp counts no parameters without tensors, so it writes no size label
    assert got["kv"] == {k: v for k, v in ref.items() if k != "general.size_label"}


def test_torch_bin_checkpoint_matches_safetensors(tiny, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    src = tiny("phi3")
    ref = convert(src, tmp_path / "ref.gguf", "bf16", progress=False)
    dest = _copy_dir(src, tmp_path / "tiny-phi3", skip=("model.safetensors",))
    state = {}
    for name, (dtype, shape, data) in _tensors(src).items():
        assert dtype == "BF16"
        state[name] = torch.frombuffer(bytearray(data), dtype=torch.bfloat16).reshape(shape)
    torch.save(state, dest / "pytorch_model.bin")
    out = convert(dest, tmp_path / "bin.gguf", "bf16", progress=False)
    assert out.read_bytes() == ref.read_bytes()


def test_one_pass_q4_k_m_equals_convert_then_quantize(tiny, tmp_path: Path) -> None:
    from llmtk.quantize import quantize_model

    one = convert(tiny("qwen3moe"), tmp_path / "one.gguf", "Q4_K_M", progress=False)
    auto = convert(tiny("qwen3moe"), tmp_path / "auto.gguf", "auto", progress=False)
    quantize_model(auto, tmp_path / "two.gguf", "Q4_K_M")
    assert one.read_bytes() == (tmp_path / "two.gguf").read_bytes()
    types = {t["name"]: t["type"] for t in manifest(one)["tensors"]}
    assert types["blk.0.attn_norm.weight"] == "F32" and types["blk.0.ffn_gate_inp.weight"] == "F32"
    assert types["blk.0.attn_q.weight"] == "Q5_0"  # Q4_K's fallback for 32-wide rows


def test_bad_outtype_lists_the_valid_ones(tiny, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="f32, f16, bf16, q8_0, auto.*Q4_K_M"):
        convert(tiny("llama"), tmp_path / "x.gguf", "q3", progress=False)


def test_one_pass_with_imatrix_equals_convert_then_quantize(tiny, tmp_path: Path) -> None:
    """Per-expert imatrix slices included: Q4_K's Q5_0 fallback on 32-wide rows uses the weights."""
    from llmtk.ggufio.imatrix_file import Imatrix, ImatrixEntry, write_imatrix_gguf
    from llmtk.quantize import quantize_model

    src = tiny("qwen3moe")
    auto = convert(src, tmp_path / "auto.gguf", "auto", progress=False)
    rng = np.random.default_rng(3)
    entries = {}
    for t in manifest(auto)["tensors"]:
        if t["name"].endswith(("attn_q.weight", "ffn_up_exps.weight", "ffn_down_exps.weight")):
            n_mat = t["shape"][2] if len(t["shape"]) == 3 else 1
            entries[t["name"]] = ImatrixEntry(rng.uniform(0.1, 5.0, n_mat * t["shape"][0]).astype(np.float32),
                                              np.full(n_mat, 7, dtype=np.int64))
    imat = write_imatrix_gguf(tmp_path / "imatrix.gguf",
                              Imatrix(entries, datasets=["text.txt"], chunk_count=7, chunk_size=512))
    one = convert(src, tmp_path / "one.gguf", "Q4_K_M", imatrix=imat, progress=False)
    quantize_model(auto, tmp_path / "two.gguf", "Q4_K_M", imatrix=imat)
    assert one.read_bytes() == (tmp_path / "two.gguf").read_bytes()
    plain = convert(src, tmp_path / "plain.gguf", "Q4_K_M", progress=False)
    got, ref = manifest(one), manifest(plain)
    assert got["kv"]["quantize.imatrix.entries_count"] == len(entries) == 6
    sha = {t["name"]: t["sha256"] for t in ref["tensors"]}
    # the imatrix changes exactly the tensors it covers whose type uses one (Q8_0 ignores it)
    changed = {t["name"] for t in got["tensors"] if t["sha256"] != sha[t["name"]]}
    assert changed == {t["name"] for t in got["tensors"] if t["name"] in entries and t["type"] != "Q8_0"}
    assert len(changed) >= 4


def test_split_output_as_llama_cpp_shards(tiny, tmp_path: Path) -> None:
    src = tiny("llama")
    whole = manifest(convert(src, tmp_path / "whole.gguf", "f16", progress=False))
    first = convert(src, tmp_path / "m.gguf", "f16", progress=False, split_max_size="3M")
    assert first == tmp_path / "m-00001-of-00003.gguf"
    shards = [manifest(tmp_path / f"m-0000{i}-of-00003.gguf") for i in (1, 2, 3)]
    # output.weight and token_embd.weight are 3.1 MB each: one per shard, the rest in the third
    assert [len(s["tensors"]) for s in shards] == [1, 1, 19]
    assert [t for s in shards for t in s["tensors"]] == whole["tensors"]
    split = {"split.no": 0, "split.count": 3, "split.tensors.count": 21}
    assert shards[0]["kv"] == {**whole["kv"], **split}
    assert shards[2]["kv"] == {**split, "split.no": 2}
    assert not (tmp_path / "m.gguf").exists()


def test_bad_split_size(tiny, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="invalid split size '2X'"):
        convert(tiny("llama"), tmp_path / "x.gguf", "f16", progress=False, split_max_size="2X")


def test_fused_expert_layout_gives_the_same_file(tiny, tmp_path: Path) -> None:
    """Qwen3-MoE experts saved fused (`mlp.experts.gate_up_proj` (n_expert, 2 n_ff, n_embd) and
    `mlp.experts.down_proj`, as newer transformers do) convert like the per-expert layout."""
    src = tiny("qwen3moe")
    ref = convert(src, tmp_path / "ref.gguf", "bf16", progress=False)
    tensors = _tensors(src)
    fused = {k: v for k, v in tensors.items() if ".experts." not in k}
    for bid in range(2):
        def experts(w: str) -> list[bytes]:
            return [tensors[f"model.layers.{bid}.mlp.experts.{x}.{w}.weight"] for x in range(4)]
        gate, up, down = experts("gate_proj"), experts("up_proj"), experts("down_proj")
        n_ff, n_embd = gate[0][1]
        fused[f"model.layers.{bid}.mlp.experts.gate_up_proj"] = (
            "BF16", [4, 2 * n_ff, n_embd], b"".join(g[2] + u[2] for g, u in zip(gate, up)))
        fused[f"model.layers.{bid}.mlp.experts.down_proj"] = ("BF16", [4, *down[0][1]], b"".join(d[2] for d in down))
    dest = _copy_dir(src, tmp_path / "tiny-qwen3moe", skip=("model.safetensors",))
    _write_st(dest / "model.safetensors", dict(sorted(fused.items())))
    out = convert(dest, tmp_path / "fused.gguf", "bf16", progress=False)
    assert out.read_bytes() == ref.read_bytes()
