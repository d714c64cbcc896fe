"""llmtk's GGUF reader against real files and against the `gguf` package, in both directions."""
from __future__ import annotations

import filecmp

import gguf
import numpy as np
import pytest

from llmtk.ggufio.constants import GGMLType, GGUFValueType as VT
from llmtk.ggufio import GGUFReader, GGUFWriter, copy_kv

SHARED_FILES = ["convert/llama/tiny-llama-f16.gguf", "llamacpp/tiny-qwen2-w256/tiny-qwen2-f16.gguf"]


def rewrite(src, dst) -> None:
    """Read `src` and write every key and tensor unchanged to `dst`."""
    with GGUFReader(src) as r, GGUFWriter(dst, inputs=[src]) as w:
        copy_kv(r, w)
        for t in r.tensors.values():
            w.add_tensor_info(t.name, t.shape, t.qtype, t.n_bytes)
        for t in r.tensors.values():
            w.write_tensor(t.name, r.raw(t.name))


@pytest.mark.parametrize("rel", SHARED_FILES)
def test_rewrite_without_changes_is_byte_identical(shared_dir, tmp_path, rel):
    src = shared_dir / rel
    rewrite(src, tmp_path / "out.gguf")
    assert filecmp.cmp(src, tmp_path / "out.gguf", shallow=False)


@pytest.mark.parametrize("model", ["smollm2_path", pytest.param("gemma3_path", marks=pytest.mark.slow)])
def test_rewrite_real_model_is_byte_identical(request, tmp_path, model):
    src = request.getfixturevalue(model)
    rewrite(src, tmp_path / "out.gguf")
    assert filecmp.cmp(src, tmp_path / "out.gguf", shallow=False)


def gguf_contents(path):
    """kv (key -> (value, types)) and tensors (name -> (type id, NumPy-order shape, bytes)) by `gguf`."""
    r = gguf.GGUFReader(path)
    kv = {}
    for name, f in r.fields.items():
        if name.startswith("GGUF."):
            continue
        kv[name] = (f.contents(), [int(t) for t in f.types])
    tensors = {t.name: (int(t.tensor_type), tuple(int(d) for d in reversed(t.shape.tolist())),
                        bytes(np.asarray(t.data).view(np.uint8).reshape(-1)))
               for t in r.tensors}
    return kv, tensors


def ours_contents(path):
    with GGUFReader(path) as r:
        kv = {}
        for k, v in r.kv.items():
            vt, it = r.kv_types[k]
            kv[k] = (v.tolist() if isinstance(v, np.ndarray) else v, [int(vt)] + ([int(it)] if it is not None else []))
        tensors = {t.name: (int(t.qtype), t.shape, bytes(r.raw(t.name))) for t in r.tensors.values()}
    return kv, tensors


@pytest.mark.parametrize("rel", SHARED_FILES + ["llamacpp/smollm2/imatrix.gguf"])
def test_reads_shared_files_like_gguf(shared_dir, rel):
    ours_kv, ours_t = ours_contents(shared_dir / rel)
    ref_kv, ref_t = gguf_contents(shared_dir / rel)
    assert ours_kv.keys() == ref_kv.keys()
    for k in ref_kv:
        assert ours_kv[k][1] == ref_kv[k][1], k
        assert ours_kv[k][0] == ref_kv[k][0], k
    assert list(ours_t) == list(ref_t)
    assert ours_t == ref_t


def test_smollm2_reads_like_gguf(smollm2_path):
    ours_kv, ours_t = ours_contents(smollm2_path)
    ref_kv, ref_t = gguf_contents(smollm2_path)
    assert {k: v[1] for k, v in ours_kv.items()} == {k: v[1] for k, v in ref_kv.items()}
    assert ours_kv["tokenizer.ggml.tokens"][0] == ref_kv["tokenizer.ggml.tokens"][0]
    assert {k: (t, s) for k, (t, s, _) in ours_t.items()} == {k: (t, s) for k, (t, s, _) in ref_t.items()}


def make_with_gguf(path, alignment=None):
    """A file with every value type and several tensor types, written by `gguf.GGUFWriter`."""
    w = gguf.GGUFWriter(str(path), "llama")
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_float32("t.f32", 0.1)
    w.add_uint64("t.u64", 2**64 - 1)
    w.add_int64("t.i64", -(2**63))
    w.add_float64("t.f64", 1e300)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo\nwörld ✓")
    w.add_array("t.strs", ["a", "", "ü"])
    w.add_key_value("t.f32s", [0.5, -1.25, 3.0], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.FLOAT32)
    w.add_key_value("t.i32s", [1, -2, 3], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32)
    w.add_key_value("t.bools", [True, False], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.BOOL)
    rng = np.random.default_rng(0)
    w.add_tensor("w.f32", rng.standard_normal((3, 8)).astype(np.float32))
    w.add_tensor("w.f16", rng.standard_normal((5,)).astype(np.float16))
    w.add_tensor("w.i32", np.arange(6, dtype=np.int32).reshape(2, 3))
    q = rng.integers(0, 256, size=(4, 34), dtype=np.uint8)  # 4 rows of one Q8_0 block
    w.add_tensor("w.q8_0", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    bf = rng.integers(0, 2**16, size=(2, 4), dtype=np.uint16)
    w.add_tensor("w.bf16", bf.view(np.uint8), raw_dtype=gguf.GGMLQuantizationType.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"w.f32": None, "q": q, "bf": bf}


@pytest.mark.parametrize("alignment", [None, 64])
def test_reads_gguf_package_output(tmp_path, alignment):
    path = tmp_path / "g.gguf"
    made = make_with_gguf(path, alignment)
    with GGUFReader(path) as r:
        assert r.alignment == (alignment or 32)
        assert r.kv["t.u8"] == 200 and r.kv_types["t.u8"] == (VT.UINT8, None)
        assert r.kv["t.u64"] == 2**64 - 1 and r.kv["t.i64"] == -(2**63)
        assert r.kv["t.f32"] == np.float32(0.1) and r.kv["t.f64"] == 1e300
        assert r.kv["t.bool"] is True and r.kv["t.str"] == "héllo\nwörld ✓"
        assert r.kv["t.strs"] == ["a", "", "ü"] and r.kv_types["t.strs"] == (VT.ARRAY, VT.STRING)
        assert r.kv["t.f32s"].dtype == np.float32 and r.kv["t.f32s"].tolist() == [0.5, -1.25, 3.0]
        assert r.kv["t.bools"].tolist() == [True, False]
        assert r.tensors["w.q8_0"].qtype == GGMLType.Q8_0 and r.tensors["w.q8_0"].shape == (4, 32)
        assert np.array_equal(r.array("w.q8_0"), made["q"])
        assert r.array("w.bf16").dtype == np.uint16 and np.array_equal(r.array("w.bf16"), made["bf"])
        assert r.array("w.i32").tolist() == [[0, 1, 2], [3, 4, 5]]
        assert r.array("w.f16").dtype == np.float16 and r.array("w.f16").shape == (5,)
        assert all(t.offset % r.alignment == 0 for t in r.tensors.values())
        assert np.shares_memory(r.array("w.f32"), r.raw("w.f32"))  # a view, not a copy
    ours_kv, ours_t = ours_contents(path)
    ref_kv, ref_t = gguf_contents(path)
    assert ours_t == ref_t
    assert {k: v[1] for k, v in ours_kv.items()} == {k: v[1] for k, v in ref_kv.items()}
    # our rewrite of a gguf-written file is byte-identical
    rewrite(path, tmp_path / "again.gguf")
    assert filecmp.cmp(path, tmp_path / "again.gguf", shallow=False)


def test_gguf_package_reads_ours(tmp_path):
    path = tmp_path / "ours.gguf"
    rng = np.random.default_rng(1)
    f32 = rng.standard_normal((3, 8)).astype(np.float32)
    q4 = rng.integers(0, 256, size=(2, 2 * 18), dtype=np.uint8)  # 2 rows of 64 Q4_0 values
    with GGUFWriter(path) as w:
        w.add_kv("general.architecture", "llama")
        w.add_kv("t.u16", 7, VT.UINT16)
        w.add_kv("t.f64", 2.5, VT.FLOAT64)
        w.add_kv("t.strs", ["x", "yy"])
        w.add_kv("t.i64s", np.array([1, -5], dtype=np.int64))
        w.add_tensor_info("a", f32.shape, "F32")
        w.add_tensor_info("b", (2, 64), GGMLType.Q4_0, q4.nbytes)
        w.write_tensor("a", f32)
        w.write_tensor("b", q4)
    r = gguf.GGUFReader(path)
    assert r.fields["general.architecture"].contents() == "llama"
    assert r.fields["t.u16"].types == [gguf.GGUFValueType.UINT16] and r.fields["t.u16"].contents() == 7
    assert r.fields["t.f64"].contents() == 2.5
    assert r.fields["t.strs"].contents() == ["x", "yy"]
    assert r.fields["t.i64s"].contents() == [1, -5]
    ta, tb = r.tensors
    assert ta.name == "a" and np.array_equal(np.asarray(ta.data).reshape(3, 8), f32)
    assert tb.tensor_type == gguf.GGMLQuantizationType.Q4_0 and tb.shape.tolist() == [64, 2]
    assert bytes(np.asarray(tb.data).reshape(-1)) == q4.tobytes()


def test_release_drops_resident_pages_and_keeps_the_data(tmp_path):
    # a streaming pass releases each tensor after use; the bytes must read the same afterwards
    import os
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs Linux's /proc/self/status (RssFile) to see resident pages")
    rng = np.random.default_rng(0)
    big = rng.standard_normal((256, 1024)).astype(np.float32)   # 1 MiB: whole pages inside
    path = tmp_path / "r.gguf"
    with GGUFWriter(path) as w:
        w.add_tensor_info("big", big.shape, GGMLType.F32)
        w.write_tensor("big", big)

    def resident_kb() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("RssFile:"))

    with GGUFReader(path) as r:
        assert float(np.asarray(r.array("big"), np.float64).sum()) == pytest.approx(float(big.sum(dtype=np.float64)))
        before = resident_kb()
        r.release("big", 0, 512 * 1024)   # the first half
        r.release("big")
        after = resident_kb()
        np.testing.assert_array_equal(r.array("big"), big)
    assert after <= before - 768   # at least 3/4 of the MiB left this process's memory
