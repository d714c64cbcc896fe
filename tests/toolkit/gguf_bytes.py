"""Hand-built GGUF bytes for hostile-file tests: every field packed with `struct`, nothing validated."""
from __future__ import annotations

import struct

U32, I32, F32, BOOL, STR, ARR, U64 = 4, 5, 6, 7, 8, 9, 10  # GGUF value type ids
F32_T, F16_T, Q4_0_T = 0, 1, 2                              # ggml type ids


def s(x: str | bytes) -> bytes:
    """A GGUF string: u64 length, then the bytes."""
    b = x.encode() if isinstance(x, str) else x
    return struct.pack("<Q", len(b)) + b


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def kv_u32(key: str, v: int) -> bytes:
    return kv(key, U32, struct.pack("<I", v))


def kv_str(key: str, v: str | bytes) -> bytes:
    return kv(key, STR, s(v))


def tinfo(name: str | bytes, ne: list[int], ggml_type: int, offset: int) -> bytes:
    return (s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d & (2**64 - 1)) for d in ne)
            + struct.pack("<IQ", ggml_type, offset))


def gguf(kvs: list[bytes] = (), tinfos: list[bytes] = (), data: bytes = b"", *, version: int = 3,
         n_kv: int | None = None, n_tensors: int | None = None, magic: bytes = b"GGUF",
         alignment: int = 32) -> bytes:
    """Header + metadata + tensor infos, zero padding to `alignment`, then `data`."""
    head = magic + struct.pack("<IQQ", version, len(tinfos) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(tinfos)
    return body + b"\x00" * (-len(body) % alignment) + data


def valid_small() -> bytes:
    """A small valid file: two metadata entries and two F32 tensors (4 and 8 values)."""
    return gguf([kv_str("general.architecture", "llama"), kv_u32("llama.block_count", 2)],
                [tinfo("a", [4], F32_T, 0), tinfo("b", [4, 2], F32_T, 32)],
                struct.pack("<4f", 1, 2, 3, 4) + b"\x00" * 16 + struct.pack("<8f", *range(8)))
