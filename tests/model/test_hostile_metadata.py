"""Regression tests of issue 17 for model loading from hostile GGUF metadata: hyperparameters of
the wrong type or range, missing tensors and tensors of the wrong rank are refused before
anything is built, with one LlmtkError naming the file."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from llmtk.errors import LlmtkError
from llmtk.model import load_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
from engine import ARR, F32, STR, U32, parse_gguf, seed_model  # noqa: E402


def _write(tmp_path: Path, edit) -> Path:
    g = parse_gguf(seed_model("llama"))
    edit(g)
    p = tmp_path / "m.gguf"
    p.write_bytes(g.pack())
    return p


def _set(key: str, vt: int, value, it=None):
    def edit(g):
        for e in g.kv:
            if e[0] == key:
                e[1], e[2], e[3] = vt, it, value
    return edit


def _drop_tensor(name: str):
    return lambda g: g.tensors.remove(next(t for t in g.tensors if t[0] == name))


def _reshape(name: str, ne):
    def edit(g):
        next(t for t in g.tensors if t[0] == name)[1] = ne
    return edit


@pytest.mark.parametrize("edit", [
    _set("llama.embedding_length", ARR, [16, 8], U32),        # an array hyperparameter (arch.py TypeError)
    _set("llama.embedding_length", U32, 0),                   # ZeroDivisionError in model.py
    _set("llama.block_count", U32, 2**31),                    # a hang building 2^31 layers
    _set("llama.attention.head_count", STR, "4"),
    _set("llama.attention.layer_norm_rms_epsilon", F32, float("nan")),
    _set("llama.attention.layer_norm_rms_epsilon", F32, -0.0),   # fuzz: ZeroDivisionError in rms_norm
    _set("llama.attention.head_count_kv", U32, 3),
    _drop_tensor("output_norm.weight"),                       # KeyError 'output_norm.weight'
    _reshape("blk.0.attn_norm.weight", [4, 4]),               # a 2-D norm (numba TypingError)
    _reshape("blk.1.ffn_down.weight", [23, 16]),
])
def test_model_metadata_hostile(tmp_path, edit):
    p = _write(tmp_path, edit)
    with pytest.raises(LlmtkError) as e:
        load_model(p, threads=1)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_model_seed_runs(tmp_path):
    p = _write(tmp_path, lambda g: None)
    with load_model(p, threads=1) as m:
        assert m.forward(np.array([1, 2, 3], np.int32)).shape == (3, 32)
