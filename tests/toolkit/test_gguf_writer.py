"""llmtk's GGUF writer: atomic output, in-place protection, declared order and sizes, value types."""
from __future__ import annotations

import os

import numpy as np
import pytest

from llmtk.ggufio.constants import GGMLType, GGUFValueType as VT
from llmtk.errors import InputError, LlmtkError, ShapeError
from llmtk.ggufio import GGUFReader, GGUFWriter, infer_value_type

F32 = np.arange(8, dtype=np.float32)


def small(path, **kw) -> GGUFWriter:
    w = GGUFWriter(path, **kw)
    w.add_kv("general.architecture", "llama")
    w.add_tensor_info("a", (8,), "F32")
    w.add_tensor_info("b", (2, 8), "F32")
    return w


def test_writes_and_reads_back(tmp_path):
    with small(tmp_path / "o.gguf") as w:
        w.write_tensor("a", F32)
        w.write_tensor("b", np.stack([F32, -F32]))
    with GGUFReader(tmp_path / "o.gguf") as r:
        assert r.version == 3 and list(r.tensors) == ["a", "b"]
        assert r.array("b")[1].tolist() == (-F32).tolist()
    assert [p.name for p in tmp_path.iterdir()] == ["o.gguf"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_leaves_nothing(tmp_path, exc):
    dest = tmp_path / "o.gguf"
    with pytest.raises(exc):
        with small(dest) as w:
            w.write_tensor("a", F32)
            raise exc()
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_keeps_existing_destination(tmp_path):
    dest = tmp_path / "o.gguf"
    dest.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with small(dest) as w:
            raise KeyboardInterrupt
    assert dest.read_bytes() == b"old" and list(tmp_path.iterdir()) == [dest]


def test_missing_tensor_at_finish_is_an_error_and_leaves_nothing(tmp_path):
    w = small(tmp_path / "o.gguf")
    w.write_tensor("a", F32)
    with pytest.raises(InputError, match="'b' was declared but never written"):
        w.finish()
    assert list(tmp_path.iterdir()) == []


def test_tensor_written_in_parts_equals_written_whole(tmp_path):
    with small(tmp_path / "whole.gguf") as w:
        w.write_tensor("a", F32)
        w.write_tensor("b", np.stack([F32, -F32]))
    with small(tmp_path / "parts.gguf") as w:
        w.write_tensor_parts("a", iter([F32[:3], F32[3:].tobytes()]))
        w.write_tensor_parts("b", (row for row in np.stack([F32, -F32])))
    assert (tmp_path / "parts.gguf").read_bytes() == (tmp_path / "whole.gguf").read_bytes()


@pytest.mark.parametrize(("parts", "said"), [([F32[:4]], "has 16 bytes"), ([F32, F32[:1]], "has over 36 bytes")])
def test_tensor_parts_must_add_up_to_its_size(tmp_path, parts, said):
    w = small(tmp_path / "o.gguf")
    with pytest.raises(ShapeError, match=f"{said} of data, expected 32"):
        w.write_tensor_parts("a", iter(parts))
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_out_of_order_and_wrong_size(tmp_path):
    w = small(tmp_path / "o.gguf")
    with pytest.raises(InputError, match="out of order; expected 'a'"):
        w.write_tensor("b", np.zeros(16, np.float32))
    with pytest.raises(ShapeError, match="has 16 bytes of data, expected 32"):
        w.write_tensor("a", F32[:4])
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_declaration_errors(tmp_path):
    w = GGUFWriter(tmp_path / "o.gguf")
    with pytest.raises(ShapeError, match="declared 10 bytes, but Q4_0 \\(2, 64\\) takes 72"):
        w.add_tensor_info("q", (2, 64), "Q4_0", 10)
    with pytest.raises(ShapeError, match="not a multiple of Q4_K block size 256"):
        w.add_tensor_info("q", (2, 64), "Q4_K")
    with pytest.raises(ShapeError, match="at most 4"):
        w.add_tensor_info("q", (1, 1, 1, 1, 1), "F32")
    with pytest.raises(LlmtkError, match="unknown ggml type"):
        w.add_tensor_info("q", (4,), "Q9_9")
    with pytest.raises(InputError, match="longer than 63 bytes"):
        w.add_tensor_info("x" * 64, (4,), "F32")
    w.add_tensor_info("q", (4,), "F32")
    with pytest.raises(InputError, match="duplicate tensor name 'q'"):
        w.add_tensor_info("q", (4,), "F32")
    w.add_kv("k", 1)
    with pytest.raises(InputError, match="duplicate metadata key 'k'"):
        w.add_kv("k", 2)
    w.write_tensor("q", np.zeros(4, np.float32))
    with pytest.raises(InputError, match="after the header was written"):
        w.add_kv("late", 1)
    w.abort()


def test_refuses_to_overwrite_input_unless_in_place(tmp_path):
    src = tmp_path / "m.gguf"
    with small(src) as w:
        w.write_tensor("a", F32)
        w.write_tensor("b", np.zeros((2, 8), np.float32))
    with pytest.raises(InputError, match="same file as the input; use --in-place"):
        GGUFWriter(src, inputs=[src])
    with GGUFReader(src) as r, GGUFWriter(src, inputs=[src], in_place=True) as w:
        w.add_kv("general.architecture", "llama")
        w.add_kv("general.name", "edited")
        for t in r.tensors.values():
            w.add_tensor_info(t.name, t.shape, t.qtype)
        for t in r.tensors.values():
            w.write_tensor(t.name, r.raw(t.name))  # reading the old map while the new file is written
    with GGUFReader(src) as r:
        assert r.kv["general.name"] == "edited" and r.array("a").tolist() == F32.tolist()


def test_output_folder_must_exist(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        GGUFWriter(tmp_path / "no" / "o.gguf")


@pytest.mark.parametrize("value,vtype,item", [
    (True, VT.BOOL, None), (5, VT.INT32, None), (-(2**40), VT.INT64, None), (2**63, VT.UINT64, None),
    (0.5, VT.FLOAT32, None), ("s", VT.STRING, None), (np.uint16(3), VT.UINT16, None),
    (np.float64(1.5), VT.FLOAT64, None), (["a", "b"], VT.ARRAY, VT.STRING), ([1, 2], VT.ARRAY, VT.INT32),
    ([1, 2.5], VT.ARRAY, VT.FLOAT32), ([True], VT.ARRAY, VT.BOOL),
    (np.zeros(3, np.int8), VT.ARRAY, VT.INT8), (np.zeros(3, np.float64), VT.ARRAY, VT.FLOAT64),
])
def test_value_type_inference(value, vtype, item):
    assert infer_value_type(value) == (vtype, item)


@pytest.mark.parametrize("value,vtype,item,match", [
    (300, VT.UINT8, None, "out of range for UINT8"),
    (-1, VT.UINT32, None, "out of range for UINT32"),
    ("x", VT.INT32, None, "not a valid INT32"),
    (2, VT.BOOL, None, "not a bool"),
    (5, VT.STRING, None, "expected a string"),
    ([1, 300], VT.ARRAY, VT.UINT8, "out of range for UINT8"),
    ("\ud800", VT.STRING, None, "UTF-8"),
    ([], None, None, "empty array"),
])
def test_bad_values_are_input_errors(tmp_path, value, vtype, item, match):
    w = GGUFWriter(tmp_path / "o.gguf")
    with pytest.raises(InputError, match=match):
        w.add_kv("k", value, vtype, item)


def test_every_value_type_round_trips_with_its_type(tmp_path):
    values = {VT.UINT8: 255, VT.INT8: -128, VT.UINT16: 65535, VT.INT16: -32768, VT.UINT32: 2**32 - 1,
              VT.INT32: -(2**31), VT.FLOAT32: 0.25, VT.BOOL: False, VT.STRING: "ok",
              VT.UINT64: 2**64 - 1, VT.INT64: -(2**63), VT.FLOAT64: 0.1}
    with GGUFWriter(tmp_path / "o.gguf") as w:
        for vt, v in values.items():
            w.add_kv(f"s.{vt.name}", v, vt)
            w.add_kv(f"a.{vt.name}", [v, v], VT.ARRAY, vt)
    with GGUFReader(tmp_path / "o.gguf") as r:
        for vt, v in values.items():
            assert r.kv_types[f"s.{vt.name}"] == (vt, None) and r.kv[f"s.{vt.name}"] == v
            assert r.kv_types[f"a.{vt.name}"] == (VT.ARRAY, vt)
            assert list(r.kv[f"a.{vt.name}"]) == [v, v]


def test_custom_alignment(tmp_path):
    with GGUFWriter(tmp_path / "o.gguf", alignment=64) as w:
        w.add_tensor_info("a", (3,), "F32")
        w.add_tensor_info("b", (5,), "F16")
        w.write_tensor("a", np.ones(3, np.float32))
        w.write_tensor("b", np.ones(5, np.float16))
    with GGUFReader(tmp_path / "o.gguf") as r:
        assert r.alignment == 64 and r.kv_types["general.alignment"] == (VT.UINT32, None)
        assert [t.offset % 64 for t in r.tensors.values()] == [0, 0]
        assert r.tensors["b"].qtype == GGMLType.F16 and r.array("b").tolist() == [1.0] * 5
        assert os.path.getsize(tmp_path / "o.gguf") % 64 == 0
    with pytest.raises(InputError, match="contradicts"):
        GGUFWriter(tmp_path / "x.gguf", alignment=64).add_kv("general.alignment", 32)


def test_writes_big_endian_and_bytes_data_as_given(tmp_path):
    with GGUFWriter(tmp_path / "o.gguf") as w:
        w.add_tensor_info("be", (2,), "I32")
        w.add_tensor_info("raw", (2,), "F16")
        w.write_tensor("be", np.array([1, 2], dtype=">i4"))
        w.write_tensor("raw", b"\x00\x3c\x00\xc0")
    with GGUFReader(tmp_path / "o.gguf") as r:
        assert bytes(r.raw("be")) == b"\x00\x00\x00\x01\x00\x00\x00\x02"
        assert r.array("raw").tolist() == [1.0, -2.0]


def test_empty_file_has_no_tensors(tmp_path):
    with GGUFWriter(tmp_path / "o.gguf") as w:
        w.add_kv("general.architecture", "llama")
    with GGUFReader(tmp_path / "o.gguf") as r:
        assert r.tensors == {} and r.kv == {"general.architecture": "llama"}
