"""Edits of converted ../shared/convert2 models for the hostile-metadata tests of the dense and
the MoE/MLA architectures: a metadata value set or dropped, a tensor reshaped, then the edited
file must load and fail with one LlmtkError line naming it (or run, unedited)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from oracle_helpers import converted_gguf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
from engine import parse_gguf  # noqa: E402

Edit = Callable[[Any], None]


def set_kv(key: str, vt: int, value: Any, it: int | None = None) -> Edit:
    """Set metadata `key` to `value` of GGUF value type `vt` (array item type `it`), adding it."""
    def edit(g: Any) -> None:
        for e in g.kv:
            if e[0] == key:
                e[1], e[2], e[3] = vt, it, value
                return
        g.kv.append([key, vt, it, value])
    return edit


def drop_kv(key: str) -> Edit:
    return lambda g: g.kv.remove(next(e for e in g.kv if e[0] == key))


def reshape(name: str, ne: list[int]) -> Edit:
    """Give tensor `name` the GGUF-order shape `ne` (its bytes unchanged)."""
    def edit(g: Any) -> None:
        next(t for t in g.tensors if t[0] == name)[1] = ne
    return edit


def seed_files(shared_dir: Path, root: Path) -> Callable[[str], bytes]:
    """arch -> the bytes of its tiny checkpoint converted to f32 by llmtk, each converted once."""
    done: dict[str, bytes] = {}

    def get(arch: str) -> bytes:
        if arch not in done:
            done[arch] = converted_gguf(shared_dir, arch, root)[1].read_bytes()
        return done[arch]
    return get


def assert_refused(seed: bytes, edits: Edit | list[Edit], tmp_path: Path, needle: str) -> None:
    """The seed with `edits` applied fails to load or run with one LlmtkError line naming the file
    and holding `needle`."""
    from llmtk.errors import LlmtkError
    from llmtk.model import load_model

    g = parse_gguf(seed)
    for edit in edits if isinstance(edits, list) else [edits]:
        edit(g)
    p = tmp_path / "m.gguf"
    p.write_bytes(g.pack())
    with pytest.raises(LlmtkError) as e:
        with load_model(p, threads=1) as m:
            m.forward(np.array([1, 2, 3], np.int32))
    msg = str(e.value)
    assert str(p) in msg and "\n" not in msg and needle in msg, msg


def assert_runs(seed: bytes, tmp_path: Path) -> None:
    """The seed, unedited but re-packed, loads and gives finite logits."""
    from llmtk.model import load_model

    p = tmp_path / "m.gguf"
    p.write_bytes(parse_gguf(seed).pack())
    with load_model(p, threads=1) as m:
        assert np.isfinite(m.forward(np.array([1, 2, 3], np.int32))).all()
