"""llama-quantize's per-tensor type choice against every manifest of its outputs (no kernels needed)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from quant_manifest import load_manifest, manifest_tensors

from llmtk.ggufio.constants import GGMLType as T
from llmtk.errors import LlmtkError
from llmtk.quantize.rules import (FILE_TYPES, MixOptions, ModelInfo, llama_order, parse_file_type,
                               plan_types, shape_fallback, use_more_bits)

MODELS = ("smollm2", "tiny-qwen2-w256")
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "llamacpp"


def _manifests() -> list:
    out = []
    for model in MODELS:
        for p in sorted((SHARED / model / "quantize").glob("*.json")):
            if p.stem != "base":
                out.append(pytest.param(model, p.stem, id=f"{model}-{p.stem}"))
    return out or [pytest.param(None, None, marks=pytest.mark.skip(reason=f"no manifests under {SHARED}"))]


def _base(shared_dir: Path, model: str):
    base = load_manifest(shared_dir / "llamacpp" / model / "quantize" / "base.json")
    by_name = {n: (n, ne, t) for n, ne, t in manifest_tensors(base)}
    return ModelInfo.from_kv(base["kv"]), [by_name[n] for n in llama_order(by_name)]


@pytest.mark.parametrize("model,stem", _manifests())
def test_plan_matches_llama_quantize(shared_dir, model, stem):
    info, tensors = _base(shared_dir, model)
    man = load_manifest(shared_dir / "llamacpp" / model / "quantize" / f"{stem}.json")
    plan = plan_types(tensors, info, FILE_TYPES[stem.removesuffix("-imatrix")],
                      has_imatrix=stem.endswith("-imatrix"))
    assert [(c.name, c.dst_type) for c in plan] == [(n, t) for n, _, t in manifest_tensors(man)]
    assert not any(c.requires_imatrix and c.allows_quantization for c in plan) or stem.endswith("-imatrix")


@pytest.mark.parametrize("model", MODELS)
def test_fallback_warnings_match_the_log(shared_dir, model):
    """The shape-fallback warnings, line for line as llama-quantize printed them."""
    info, tensors = _base(shared_dir, model)
    log = (shared_dir / "llamacpp" / model / "quantize" / "Q4_K_M-imatrix.log").read_text()
    expected = [ln for ln in log.splitlines() if ln.startswith("warning: ")]
    plan = plan_types(tensors, info, FILE_TYPES["Q4_K_M"], has_imatrix=True)
    assert [c.fallback for c in plan if c.fallback] == expected


def test_refusals_of_failed_txt(shared_dir):
    """failed.txt: plain Q2_K_S needs an imatrix (first at blk.3.ffn_down), Q1_0 has no fallback for 576."""
    info, tensors = _base(shared_dir, "smollm2")
    failed = (shared_dir / "llamacpp" / "smollm2" / "quantize" / "failed.txt").read_text().split()
    assert {"Q2_K_S", "Q1_0"} <= set(failed)
    plan = plan_types(tensors, info, FILE_TYPES["Q2_K_S"])
    first = next(c for c in plan if c.allows_quantization and c.requires_imatrix)
    assert (first.name, first.dst_type) == ("blk.3.ffn_down.weight", T.Q2_K)
    with pytest.raises(LlmtkError, match="no tensor type fallback is defined for type Q1_0"):
        plan_types(tensors, info, FILE_TYPES["Q1_0"])


def test_use_more_bits_for_30_layers():
    # first and last eighth (0..2, 26..29) and every third layer from 3 on, starting at 5
    assert [i for i in range(30) if use_more_bits(i, 30)] == [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]


def test_parse_file_type_names_aliases_and_numbers():
    assert parse_file_type("q4_k_m").name == "Q4_K_M"
    assert parse_file_type("Q4_K").ftype == parse_file_type("Q4_K_M").ftype == 15
    assert parse_file_type("15").name == "Q4_K"         # the first option with that number
    assert parse_file_type("0").name == "F32" and parse_file_type("copy").name == "COPY"
    assert parse_file_type("model.gguf") is None


def test_shape_fallback_chain():
    assert shape_fallback("w", 576, T.Q4_K)[0] == T.Q5_0
    assert shape_fallback("w", 576, T.IQ2_XS)[0] == T.IQ4_NL
    assert shape_fallback("w", 256, T.Q4_K) == (T.Q4_K, None)
    new, msg = shape_fallback("w", 48, T.Q6_K)           # Q8_0 does not fit 48 either
    assert new == T.F16 and "must use F16" in msg
    assert shape_fallback("w", 48, T.Q4_0)[0] == T.F16
    with pytest.raises(LlmtkError):
        shape_fallback("w", 608, T.NVFP4)               # 64-block type without a fallback


def _toy(n_layer=8, untied=True, width=256):
    kv = {"general.architecture": "llama", "llama.block_count": n_layer,
          "llama.attention.head_count": 8, "llama.attention.head_count_kv": 8}
    names = ["token_embd.weight", "output_norm.weight"] + (["output.weight"] if untied else [])
    for i in range(n_layer):
        names += [f"blk.{i}.{n}.weight" for n in ("attn_q", "attn_k", "attn_v", "attn_output",
                                                   "ffn_gate", "ffn_up", "ffn_down", "attn_norm")]
    tensors = [(n, (width,) if "norm" in n else (width, 512), T.F16) for n in llama_order(names)]
    return ModelInfo.from_kv(kv), tensors


def _types(plan):
    return {c.name: c.dst_type for c in plan}


def test_untied_model_output_and_token_embedding():
    info, tensors = _toy()
    got = _types(plan_types(tensors, info, FILE_TYPES["Q4_K_M"]))
    assert got["output.weight"] == T.Q6_K and got["token_embd.weight"] == T.Q4_K
    got = _types(plan_types(tensors, info, FILE_TYPES["IQ2_XS"], has_imatrix=True))
    assert got["output.weight"] == T.Q5_K and got["token_embd.weight"] == T.Q2_K


def test_counters_pick_layers_for_q4_k_m():
    info, tensors = _toy(n_layer=8)
    got = _types(plan_types(tensors, info, FILE_TYPES["Q4_K_M"]))
    more = [i for i in range(8) if use_more_bits(i, 8)]
    assert [i for i in range(8) if got[f"blk.{i}.ffn_down.weight"] == T.Q6_K] == more
    assert [i for i in range(8) if got[f"blk.{i}.attn_v.weight"] == T.Q6_K] == more


def test_options_pure_overrides_and_leave_output():
    info, tensors = _toy()
    got = _types(plan_types(tensors, info, FILE_TYPES["Q4_K_M"], MixOptions(pure=True)))
    assert {t for n, t in got.items() if "norm" not in n} == {T.Q4_K}
    opts = MixOptions(output_tensor_type=T.Q8_0, token_embedding_type=T.Q4_0,
                      tensor_types=[("attn_v", T.Q8_0), (r"blk\.0\.", T.F16)], quantize_output=True)
    got = _types(plan_types(tensors, info, FILE_TYPES["Q4_K_M"], opts))
    assert got["output.weight"] == T.Q8_0 and got["token_embd.weight"] == T.Q4_0
    assert got["blk.3.attn_v.weight"] == T.Q8_0 and got["blk.0.attn_v.weight"] == T.Q8_0   # first match wins
    assert got["blk.0.ffn_up.weight"] == T.F16 and got["blk.1.ffn_up.weight"] == T.Q4_K
    got = _types(plan_types(tensors, info, FILE_TYPES["Q4_K_M"], MixOptions(quantize_output=False)))
    assert got["output.weight"] == T.F16
    got = _types(plan_types(tensors, info, FILE_TYPES["COPY"], MixOptions(only_copy=True)))
    assert set(got.values()) == {T.F16}


def test_float_file_types_ignore_tensor_type_overrides():
    # llama.cpp applies --tensor-type only when the file type's default type is quantized
    info, tensors = _toy()
    got = _types(plan_types(tensors, info, FILE_TYPES["BF16"], MixOptions(tensor_types=[("attn_v", T.Q8_0)])))
    assert {t for n, t in got.items() if "norm" not in n} == {T.BF16}


def test_every_file_type_has_a_default_and_distinct_name():
    assert len(FILE_TYPES) == 39
    assert all(re.fullmatch(r"[A-Z0-9_]+", n) for n in FILE_TYPES)
