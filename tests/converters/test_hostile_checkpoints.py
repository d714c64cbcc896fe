"""Regression tests of issue 17 for convert's inputs (B8-B12, index.json paths): safetensors
headers, config.json values and weight_map entries built with json/struct in the test."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from llmtk.converters.source import LazyTensor, SafetensorsFile, open_checkpoint
from llmtk.errors import InputError, LlmtkError, ShapeError, UnsupportedError


def _st(tmp_path: Path, header: object, data: bytes = b"\0" * 64, raw_header: bytes | None = None) -> Path:
    h = raw_header if raw_header is not None else json.dumps(header).encode()
    p = tmp_path / "model.safetensors"
    p.write_bytes(struct.pack("<Q", len(h)) + h + data)
    return p


def _refused(p: Path, header: object = None, raw_header: bytes | None = None) -> str:
    with pytest.raises(LlmtkError) as e:
        SafetensorsFile(_st(p, header, raw_header=raw_header) if not isinstance(p, Path) or p.is_dir() else p)
    msg = str(e.value)
    assert "\n" not in msg and "model.safetensors" in msg, msg
    return msg


GOOD = {"dtype": "F32", "shape": [2, 4], "data_offsets": [0, 32]}


@pytest.mark.parametrize("header", [
    {"t": ["F32", [2], [0, 8]]},                                   # an entry that is a list
    {"t": {"dtype": "F32"}},                                       # missing shape and offsets
    {"t": {**GOOD, "dtype": ["F32"]}},                             # dtype as a list
    {"t": {**GOOD, "data_offsets": [0, 16, 32]}},                  # three offsets
    {"t": {**GOOD, "shape": [-2, -4]}},                            # negative dims
    {"t": {**GOOD, "shape": [2**64, 1]}},                          # a 2^64 dim
    {"t": {**GOOD, "shape": [2**32, 2**32], "data_offsets": [0, 0]}},  # np.prod wraps to 0
    {"a": GOOD, "b": {**GOOD, "data_offsets": [16, 48]}},          # overlapping tensors
    {"t": {**GOOD, "data_offsets": [64, 96]}},                     # outside the data region
    {"t": {**GOOD, "shape": [2, True]}},                           # a bool dim
])
def test_b8_safetensors_header_entries(tmp_path, header):
    _refused(tmp_path, header)


def test_b8_safetensors_prod_wraps_to_zero(tmp_path):
    msg = _refused(tmp_path, {"t": {"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 0]}})
    assert "data offsets" in msg


def test_b8_safetensors_deep_nesting(tmp_path):
    _refused(tmp_path, raw_header=b"[" * 100000 + b"]" * 100000)


def test_b8_safetensors_header_length_bounded(tmp_path):
    p = tmp_path / "model.safetensors"
    p.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    _refused(p)


def test_b10_experts_of_different_shapes():
    a = LazyTensor((4, 8), "F32", lambda: np.zeros((4, 8), np.float32))
    b = LazyTensor((5, 8), "F32", lambda: np.zeros((5, 8), np.float32))
    with pytest.raises(ShapeError):
        LazyTensor.stack([a, b])


def _ckpt(tmp_path: Path, config: object, tensors: dict[str, tuple[int, ...]] | None = None,
          index: object = None) -> Path:
    d = tmp_path / "tiny-hostile"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(config) if not isinstance(config, str) else config)
    tensors = tensors or {"model.embed_tokens.weight": (16, 8)}
    header, off = {}, 0
    for name, shape in tensors.items():
        n = int(np.prod(shape)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    _st(d, header, b"\0" * off).rename(d / "model.safetensors")
    if index is not None:
        (d / "model.safetensors.index.json").write_text(json.dumps(index))
    return d


CONFIG = {"architectures": ["LlamaForCausalLM"], "hidden_size": 8, "num_attention_heads": 2,
          "num_key_value_heads": 1, "num_hidden_layers": 1, "intermediate_size": 16, "vocab_size": 16}


def test_b9_zero_size_tensor_in_convert(tmp_path):
    from llmtk.converters.pipeline import convert
    d = _ckpt(tmp_path, CONFIG, {"model.embed_tokens.weight": (0, 8)})
    with pytest.raises(ShapeError) as e:
        convert(d, tmp_path / "out.gguf", "f16")
    assert "no elements" in str(e.value) and not (tmp_path / "out.gguf").exists()


@pytest.mark.parametrize("edit", [
    [1, 2], "\"x\"", {"rope_scaling": "x"}, {"rms_norm_eps": "x"}, {"rms_norm_eps": 1e308},
    {"num_attention_heads": None, "hidden_size": 8, "head_dim": None}, {"hidden_size": "32"}, {"vocab_size": []},
    {"max_position_embeddings": 2**63}, {"num_hidden_layers": True}, {"rope_theta": -1.0},
    {"num_attention_heads": 3},
])
def test_b11_config_values_checked(tmp_path, edit):
    from llmtk.converters.pipeline import convert
    config = edit if not isinstance(edit, dict) else {**CONFIG, **edit}
    if config.get("num_attention_heads", 1) is None if isinstance(config, dict) else False:
        config.pop("num_attention_heads")
    d = _ckpt(tmp_path, config)
    with pytest.raises(LlmtkError) as e:
        convert(d, tmp_path / "out.gguf", "f16")
    assert "\n" not in str(e.value) and str(d) in str(e.value)


def test_b11_weight_map_value_not_a_string(tmp_path):
    d = _ckpt(tmp_path, CONFIG, index={"weight_map": {"model.embed_tokens.weight": 5}})
    with pytest.raises(InputError) as e:
        open_checkpoint(d)
    assert "weight_map" in str(e.value)


@pytest.mark.parametrize("edit", [{"num_hidden_layers": int(1e9)}, {"vocab_size": 2**63}])
def test_b12_unbounded_counts_refused_quickly(tmp_path, edit):
    import time
    from llmtk.converters.pipeline import convert
    d = _ckpt(tmp_path, {**CONFIG, **edit})
    t0 = time.monotonic()
    with pytest.raises(InputError):
        convert(d, tmp_path / "out.gguf", "f16")
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("part", ["/etc/passwd", "../model.safetensors", "a/../../x.safetensors",
                                  "C:\\Windows\\x", "\\\\server\\share\\x"])
def test_index_weight_map_paths_stay_in_the_folder(tmp_path, part):
    d = _ckpt(tmp_path, CONFIG, index={"weight_map": {"model.embed_tokens.weight": part}})
    with pytest.raises(InputError) as e:
        open_checkpoint(d)
    assert "outside the checkpoint folder" in str(e.value)


# found by benchmarks/fuzz.py (safetensors target) after the first fixes
@pytest.mark.parametrize("edit", [
    {"num_hidden_layers": None},                                          # int(None) in the converter
    {"architectures": ["MixtralForCausalLM"], "num_local_experts": None},  # None * n in stack_experts
])
def test_fuzz_null_counts_in_config(tmp_path, edit):
    from llmtk.converters.pipeline import convert
    tensors = {"model.embed_tokens.weight": (16, 8),
               "model.layers.0.block_sparse_moe.experts.0.w1.weight": (16, 8)}
    d = _ckpt(tmp_path, {**CONFIG, **edit}, tensors)
    with pytest.raises(InputError) as e:
        convert(d, tmp_path / "out.gguf", "f16")
    assert "\n" not in str(e.value) and "config.json" in str(e.value)


def test_fuzz_index_names_a_shard_too_long_for_the_system(tmp_path):
    d = _ckpt(tmp_path, CONFIG, index={"weight_map": {"model.embed_tokens.weight": "a" * 5000 + ".safetensors"}})
    with pytest.raises(InputError) as e:
        open_checkpoint(d)
    assert "missing" in str(e.value) and "\n" not in str(e.value)
