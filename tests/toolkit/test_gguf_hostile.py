"""Hostile and truncated GGUF files, built byte by byte: each must give one clean GGUFFormatError."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st

from gguf_bytes import ARR, BOOL, F32_T, I32, Q4_0_T, STR, U32, gguf, kv, kv_str, kv_u32, s, tinfo, valid_small
from llmtk.errors import GGUFFormatError, LlmtkError
from llmtk.ggufio import GGUFReader

ARCH = kv_str("general.architecture", "llama")
F32x4 = b"\x00" * 16

HOSTILE: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "empty file"),
    "wrong_magic": (b"GGML" + bytes(20), "not a GGUF file"),
    "short_magic": (b"GG", "not a GGUF file"),
    "version_1": (gguf(version=1), "unsupported GGUF version 1"),
    "version_4": (gguf(version=4), "unsupported GGUF version 4"),
    "big_endian": (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "big-endian"),
    "truncated_header": (b"GGUF" + struct.pack("<IQ", 3, 0), "truncated header"),
    "absurd_kv_count": (gguf([ARCH], n_kv=2**62), "metadata count"),
    "absurd_tensor_count": (gguf([ARCH], n_tensors=2**61), "tensor count"),
    "truncated_kv_key": (gguf(n_kv=1, alignment=1) + struct.pack("<Q", 30) + b"general.arch", "exceeds"),
    "truncated_kv_value": (gguf([kv("llama.block_count", U32, b"\x02\x00")], alignment=1), "truncated value"),
    "absurd_string_length": (gguf([kv("general.name", STR, struct.pack("<Q", 2**60) + b"abc")]), "length 1152921504606846976"),
    "invalid_utf8_key": (gguf([kv(b"general.\xff\xfe", U32, bytes(4))]), "invalid UTF-8"),
    "invalid_utf8_value": (gguf([kv_str("general.name", b"caf\xc3")]), "invalid UTF-8"),
    "empty_key": (gguf([kv_u32("", 1)]), "empty key"),
    "duplicate_key": (gguf([ARCH, ARCH]), "duplicate metadata key 'general.architecture'"),
    "unknown_value_type": (gguf([kv("general.x", 13, bytes(8))]), "unknown value type 13"),
    "nested_array": (gguf([kv("general.x", ARR, struct.pack("<IQ", ARR, 1))]), "nested array"),
    "absurd_array_count": (gguf([kv("general.x", ARR, struct.pack("<IQ", I32, 2**62))]), "claims"),
    "truncated_array": (gguf([kv("general.x", ARR, struct.pack("<IQ", I32, 8) + bytes(8))], alignment=1), "claims 8 INT32 items"),
    "bool_not_0_1": (gguf([kv("general.flag", BOOL, b"\x02")]), "bool value 2"),
    "alignment_wrong_type": (gguf([kv("general.alignment", I32, struct.pack("<i", 64))]), "expected UINT32"),
    "alignment_not_power_of_2": (gguf([kv_u32("general.alignment", 48)]), "not a power of 2"),
    "alignment_zero": (gguf([kv_u32("general.alignment", 0)]), "not a power of 2"),
    "truncated_tensor_info": (gguf([ARCH], n_tensors=1, alignment=1) + s("w") + struct.pack("<I", 2), "truncated shape"),
    "too_many_dims": (gguf([ARCH], [tinfo("w", [1, 1, 1, 1, 1], F32_T, 0)], F32x4), "5 dimensions"),
    "unknown_ggml_type": (gguf([ARCH], [tinfo("w", [4], 99, 0)], F32x4), "unknown ggml type id 99"),
    "removed_ggml_type": (gguf([ARCH], [tinfo("w", [32], 4, 0)], bytes(64)), "Q4_2"),
    "row_not_multiple_of_block": (gguf([ARCH], [tinfo("w", [33], Q4_0_T, 0)], bytes(64)), "not a multiple of Q4_0 block size 32"),
    "negative_dim": (gguf([ARCH], [tinfo("w", [4, -1], F32_T, 0)], F32x4), "< 0"),
    "element_count_overflow": (gguf([ARCH], [tinfo("w", [2**40, 2**40], F32_T, 0)], F32x4), "2^63"),
    "data_past_eof": (gguf([ARCH], [tinfo("w", [1024], F32_T, 0)], F32x4), "past the end of the file"),
    "offset_past_eof": (gguf([ARCH], [tinfo("w", [4], F32_T, 2**40)], F32x4), "past the end of the file"),
    "data_section_past_eof": (gguf([ARCH], [tinfo("w", [4], F32_T, 0)])[:-8], "past the end of the file"),
    "misaligned_offset": (gguf([ARCH], [tinfo("w", [4], F32_T, 4)], bytes(64)), "not a multiple of the alignment 32"),
    "overlapping_tensors": (gguf([ARCH], [tinfo("a", [16], F32_T, 0), tinfo("b", [4], F32_T, 32)], bytes(64)), "overlap"),
    "duplicate_tensor": (gguf([ARCH], [tinfo("w", [4], F32_T, 0), tinfo("w", [4], F32_T, 32)], bytes(64)), "duplicate tensor name 'w'"),
    "tensor_name_too_long": (gguf([ARCH], [tinfo("x" * 64, [4], F32_T, 0)], F32x4), "64 bytes long"),
    "control_chars_in_name": (gguf([ARCH], [tinfo("a\nb\x1b", [4], F32_T, 0), tinfo("a\nb\x1b", [4], F32_T, 32)], bytes(64)), "'a\\nb\\x1b'"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_file_gives_one_line_error(tmp_path, case):
    data, expected = HOSTILE[case]
    path = tmp_path / f"{case}.gguf"
    path.write_bytes(data)
    with pytest.raises(GGUFFormatError) as info:
        GGUFReader(path)
    msg = str(info.value)
    assert "\n" not in msg and "\r" not in msg
    assert msg.startswith(f"{path}: ")
    assert expected in msg


def test_valid_small_file_reads(tmp_path):
    path = tmp_path / "ok.gguf"
    path.write_bytes(valid_small())
    with GGUFReader(path) as r:
        assert r.kv == {"general.architecture": "llama", "llama.block_count": 2}
        assert r.array("b").tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
        assert r.tensors["b"].shape == (2, 4)


def test_version_2_reads(tmp_path):
    path = tmp_path / "v2.gguf"
    data = bytearray(valid_small())
    data[4:8] = struct.pack("<I", 2)
    path.write_bytes(bytes(data))
    with GGUFReader(path) as r:
        assert r.version == 2 and r.array("a").tolist() == [1, 2, 3, 4]


def test_every_truncation_is_a_format_error(tmp_path):
    data = valid_small()
    path = tmp_path / "t.gguf"
    for n in range(len(data)):
        path.write_bytes(data[:n])
        with pytest.raises(GGUFFormatError, match=r"^" + str(path).replace(".", r"\.") + ": "):
            GGUFReader(path)


@settings(max_examples=300, deadline=None)
@given(flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4))
def test_corrupted_bytes_never_crash(tmp_path_factory, flips):
    """Random byte changes either still parse or raise GGUFFormatError, never anything else."""
    data = bytearray(valid_small())
    for pos, val in flips:
        data[pos % len(data)] = val
    path = tmp_path_factory.mktemp("fuzz") / "f.gguf"
    path.write_bytes(bytes(data))
    try:
        GGUFReader(path).close()
    except GGUFFormatError as e:
        assert "\n" not in str(e)


def test_missing_file_and_directory_are_input_errors(tmp_path):
    with pytest.raises(LlmtkError, match="no such file"):
        GGUFReader(tmp_path / "nope.gguf")
    with pytest.raises(LlmtkError, match="is a directory"):
        GGUFReader(tmp_path)
