"""Lattice grids of the grid-based i-quants and the lookup tables ggml builds from them at init.

The grids are data: gguf-py's `quants` module stores each one as hex, every coordinate as its
level index into the type's value map, which is all ggml needs too. From the levels we derive

- the dequantization grids (`iq2xxs_grid`, ... in ggml-common.h): value map applied to levels;
- the quantizer tables of `iq2xs_init_impl` / `iq3xs_init_impl`: `kmap[u]` for a packed point `u`
  (`bits` per coordinate, level l stored as is) is its grid index when `u` is on the grid, else
  `-(offset + 1)` into `neighbours`, where `neighbours[offset]` is a count followed by the grid
  indices nearest to `u` (squared distance of the odd points 2l+1), all points of the `nwant`
  smallest distinct distances, ordered by (distance, index) as ggml's qsort leaves them.

The tables are computed on first use (about a second with numba) and kept as an .npz in numba's
cache folder, so later processes load them.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from numba import njit

# ggml's `ksigns_iq2xs`: 7 sign bits plus an 8th that makes the count of set bits even.
KSIGNS = np.array([i | ((bin(i).count("1") & 1) << 7) for i in range(128)], dtype=np.uint8)


@dataclass(frozen=True)
class IQGrid:
    """One lattice: levels (n, dim) int8, dequant values (n, dim), and the quantizer tables."""

    levels: np.ndarray
    values: np.ndarray
    kmap: np.ndarray        # int32 (kmap_size,)
    neighbours: np.ndarray  # uint16, count-prefixed lists
    # For the list at offset o with count c, padded to cp = c rounded up to `pad`: its points'
    # coordinates coordinate-major, tab[qoff[o] + i*cp + j] for point j and coordinate i
    # (float32): the odd values 2l+1 the IQ2/IQ3 searches compare, the levels l for IQ1's. A
    # search then scores `pad` points at once in SIMD lanes, each sum still in C's order.
    tab: np.ndarray
    qoff: np.ndarray        # int64 (neighbours.size,), meaningful at list offsets
    pad: int
    max_list: int           # longest list, padded


@lru_cache(maxsize=None)
def _gguf_levels(name: str) -> tuple[np.ndarray, tuple]:
    """(n, dim) level indices of gguf-py's grid `name`, and its value map."""
    from gguf import quants as gq

    cls = getattr(gq, name)
    n, dim = cls.grid_shape
    hexchars = np.frombuffer(cls.grid_hex, dtype=np.uint8).reshape(-1, 2)
    nib = np.where(hexchars > 0x40, hexchars + 9, hexchars) & 0x0F
    packed = (nib[:, 0] << 4) | nib[:, 1]  # one byte per pair of hex digits
    bits = int(np.ceil(np.log2(len(cls.grid_map))))
    per_byte = 8 // bits
    shifts = np.arange(0, 8, 8 // per_byte, dtype=np.uint8)
    levels = ((packed[:, None] >> shifts[None, :]) & ((1 << bits) - 1)).reshape(n, dim)
    return levels.astype(np.int8), tuple(cls.grid_map)


@njit(cache=True)
def _build_tables(levels, bits, nwant, kmap_size, max_level):
    """kmap and count-prefixed neighbour lists as `iq2xs_init_impl`/`iq3xs_init_impl` build them.

    Only points whose coordinates are all <= max_level are given neighbours: the quantizers clamp
    every level to that range, so no other point is ever looked up (their kmap entry stays -1).
    """
    n, dim = levels.shape
    kmap = np.full(kmap_size, -1, dtype=np.int32)
    for j in range(n):
        u = 0
        for k in range(dim):
            u |= int(levels[j, k]) << (bits * k)
        kmap[u] = j
    npts = (max_level + 1) ** dim
    d2 = np.empty(n, dtype=np.int64)
    # upper bound: every point lists every grid point once plus a count
    buf = np.empty(npts * (n + 1), dtype=np.uint16)
    total = 0
    for p in range(npts):
        u = 0
        rem = p
        pos = np.empty(dim, dtype=np.int64)
        for k in range(dim):
            lv = rem % (max_level + 1)
            rem //= max_level + 1
            u |= lv << (bits * k)
            pos[k] = 2 * lv + 1
        if kmap[u] >= 0:
            continue
        for j in range(n):
            s = 0
            for k in range(dim):
                diff = (2 * int(levels[j, k]) + 1) - pos[k]
                s += diff * diff
            d2[j] = s
        start = total
        total += 1
        cnt = 0
        prev = -1
        for _ in range(nwant):
            cur = -1
            for j in range(n):
                if d2[j] > prev and (cur < 0 or d2[j] < cur):
                    cur = d2[j]
            if cur < 0:
                break
            for j in range(n):
                if d2[j] == cur:
                    buf[total] = j
                    total += 1
                    cnt += 1
            prev = cur
        buf[start] = cnt
        kmap[u] = -(start + 1)
    return kmap, buf[:total].copy()


@njit(cache=True)
def _transpose_lists(levels, neighbours, pad, odd):
    n, dim = levels.shape
    qoff = np.full(neighbours.size, -1, dtype=np.int64)
    total = 0
    longest = 0
    o = 0
    while o < neighbours.size:  # the lists lie back to back: count, then the points
        c = np.int64(neighbours[o])
        cp = (c + pad - 1) // pad * pad
        qoff[o] = total
        total += cp * dim
        longest = max(longest, cp)
        o += 1 + c
    tab = np.zeros(total, dtype=np.float32)
    o = 0
    while o < neighbours.size:
        c = np.int64(neighbours[o])
        cp = (c + pad - 1) // pad * pad
        for j in range(c):
            g = np.int64(neighbours[o + 1 + j])
            for i in range(dim):
                lv = levels[g, i]
                tab[qoff[o] + i * cp + j] = np.float32(2 * lv + 1) if odd else np.float32(lv)
        o += 1 + c
    return tab, qoff, longest


# name in gguf-py, bits per coordinate in kmap indices, kmap size, nwant, max level the quantizer uses
_SPECS = {
    "IQ2_XXS": (2, 43692, 2, 2),
    "IQ2_XS": (2, 43692, 2, 2),
    "IQ2_S": (2, 43692, 1, 2),
    "IQ1_S": (2, 43692, 3, 2),
    "IQ3_XXS": (3, 4096, 2, 7),
    "IQ3_S": (3, 4096, 3, 7),
}


@lru_cache(maxsize=None)
def grid_values(name: str) -> np.ndarray:
    """The dequantization grid of `name` (ggml's iq2xxs_grid, ..., iq1s_grid) as (n, dim)
    uint8, int8 for IQ1_S/IQ1_M; cheap, without the quantizer tables."""
    if name == "IQ1_M":
        name = "IQ1_S"
    levels, value_map = _gguf_levels(name)
    if name == "IQ1_S":
        return (levels.astype(np.int16) - 1).astype(np.int8)  # value map (-1, 0, 1)
    return np.ascontiguousarray(np.asarray(value_map, dtype=np.uint8)[levels])


@lru_cache(maxsize=None)
def grid(name: str) -> IQGrid:
    """The lattice of i-quant `name` with its quantizer tables (IQ1_M shares IQ1_S's), built
    on first use."""
    if name == "IQ1_M":
        return grid("IQ1_S")
    bits, kmap_size, nwant, max_level = _SPECS[name]
    levels, _ = _gguf_levels(name)
    values = grid_values(name)
    pad = 8 if levels.shape[1] == 4 else 16
    path = _cache_path(name, levels)
    tables = _load_cached(path)
    if tables is None:
        kmap, neighbours = _build_tables(levels, bits, nwant, kmap_size, max_level)
        tab, qoff, longest = _transpose_lists(levels, neighbours, pad, name != "IQ1_S")
        tables = {"kmap": kmap, "neighbours": neighbours, "tab": tab, "qoff": qoff,
                  "longest": np.array(longest)}
        _store_cached(path, tables)
    return IQGrid(levels, values, tables["kmap"], tables["neighbours"], tables["tab"],
                  tables["qoff"], pad, int(tables["longest"]))


# Bump when the table layout or the way it is built changes: old cache files are then ignored.
_TABLES_VERSION = 1


def _cache_path(name: str, levels: np.ndarray) -> Path | None:
    """Where the built tables of `name` are kept: numba's cache folder (NUMBA_CACHE_DIR, else
    this package's __pycache__), keyed by the grid so another gguf-py grid cannot be mistaken."""
    import numba

    folder = Path(numba.config.CACHE_DIR) if numba.config.CACHE_DIR else Path(__file__).parent / "__pycache__"
    key = hashlib.sha256(levels.tobytes() + f"{name}/{_SPECS[name]}/{_TABLES_VERSION}".encode()).hexdigest()[:16]
    return folder / f"iq_tables_{name}_{key}.npz"


def _load_cached(path: Path | None) -> dict[str, np.ndarray] | None:
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path) as f:
            return {k: f[k] for k in ("kmap", "neighbours", "tab", "qoff", "longest")}
    except (OSError, ValueError, KeyError):
        return None  # unreadable or partial: rebuild


def _store_cached(path: Path | None, tables: dict[str, np.ndarray]) -> None:
    """Write atomically (temp file + rename); a read-only cache folder just means no cache."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **tables)
        os.replace(tmp, path)
    except OSError:
        pass
