"""llama-quantize's per-tensor type choice against every manifest of its outputs (no kernels needed)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import absent_reference
from quant_manifest import (LLAMACPP, file_type_of, load_manifest, manifest_stems, manifest_tensors, mix_stems,
                            model_dir, quantize_models)

from llmtk.ggufio.constants import GGMLType as T
from llmtk.errors import LlmtkError
from llmtk.quantize.rules import (FILE_TYPES, MixOptions, ModelInfo, llama_order, parse_file_type,
                               plan_types, shape_fallback, use_more_bits)

# every folder of ../shared with llama-quantize manifests (llamacpp/smollm2, llamacpp/tiny-qwen2-w256,
# convert2/<moe arch>/quantize-w256), as paths relative to it
MODELS = quantize_models()
# file types with no llama-quantize reference in any model folder, and why; a new file type in the
# registry must get a manifest in ../shared or a line here
UNREFERENCED = {
    "Q3_K": "alias of Q3_K_M (same general.file_type and mix)",
    "Q4_K": "alias of Q4_K_M (same general.file_type and mix)",
    "Q5_K": "alias of Q5_K_M (same general.file_type and mix)",
    "F32": "not made for the reference set",
    "COPY": "copies tensors unchanged (test_quantize_model.py::test_copy_keeps_types_and_file_type)",
}


def _manifests() -> list:
    out = [pytest.param(model, stem, id=f"{model}-{stem}") for model in MODELS for stem in mix_stems(model_dir(model))]
    return out or absent_reference(LLAMACPP / "*" / "quantize", n_args=2)


def _models() -> list:
    return MODELS or absent_reference(LLAMACPP / "*" / "quantize")


def _base(shared_dir: Path, model: str):
    base = load_manifest(model_dir(model) / "quantize" / "base.json")
    by_name = {n: (n, ne, t) for n, ne, t in manifest_tensors(base)}
    return ModelInfo.from_kv(base["kv"]), [by_name[n] for n in llama_order(by_name)]


def _failed(model: str) -> list[str]:
    """The requests llama-quantize refused for `model` (`failed.txt`: "<TYPE> failed" lines)."""
    path = model_dir(model) / "quantize" / "failed.txt"
    return [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []


@pytest.mark.parametrize("model", _models())
def test_every_manifest_is_a_registered_file_type(shared_dir, model):
    """Each manifest (and refusal) names a type of FILE_TYPES, so the registry-driven sweeps test it."""
    stems = manifest_stems(model_dir(model))
    assert stems, f"no manifests in {model_dir(model) / 'quantize'}"
    unknown = [s for s in stems + _failed(model) if file_type_of(s)[0] not in FILE_TYPES]
    assert unknown == [], f"manifests of {model} name file types llmtk.quantize.rules does not know"
    assert sorted(mix_stems(model_dir(model))) == stems


def test_every_file_type_has_a_reference(shared_dir):
    """Each file type of the registry has a manifest or a refusal in some model folder, or says why not."""
    assert MODELS, f"no llama-quantize manifests under {LLAMACPP}"
    covered = {file_type_of(s)[0] for m in MODELS for s in manifest_stems(model_dir(m)) + _failed(m)}
    assert sorted(set(FILE_TYPES) - covered - set(UNREFERENCED)) == []
    assert sorted(set(UNREFERENCED) - set(FILE_TYPES)) == []        # no stale lines
    assert sorted(set(UNREFERENCED) & covered) == []                # a reference appeared: test it


@pytest.mark.parametrize("model,stem", _manifests())
def test_plan_matches_llama_quantize(shared_dir, model, stem):
    info, tensors = _base(shared_dir, model)
    man = load_manifest(model_dir(model) / "quantize" / f"{stem}.json")
    name, with_imatrix = file_type_of(stem)
    plan = plan_types(tensors, info, FILE_TYPES[name], has_imatrix=with_imatrix)
    assert [(c.name, c.dst_type) for c in plan] == [(n, t) for n, _, t in manifest_tensors(man)]
    assert not any(c.requires_imatrix and c.allows_quantization for c in plan) or with_imatrix


@pytest.mark.parametrize("model", _models())
def test_fallback_warnings_match_the_log(shared_dir, model):
    """The shape-fallback warnings, line for line as llama-quantize printed them."""
    info, tensors = _base(shared_dir, model)
    log = (model_dir(model) / "quantize" / "Q4_K_M-imatrix.log").read_text()
    expected = [ln for ln in log.splitlines() if ln.startswith("warning: ")]
    plan = plan_types(tensors, info, FILE_TYPES["Q4_K_M"], has_imatrix=True)
    assert [c.fallback for c in plan if c.fallback] == expected


def _logged_manifests() -> list:
    out = [pytest.param(model, stem, id=f"{model}-{stem}") for model in MODELS for stem in mix_stems(model_dir(model))
           if (model_dir(model) / "quantize" / f"{stem}.log").is_file()]
    return out or absent_reference(LLAMACPP / "*" / "quantize" / "*.log", n_args=2)


@pytest.mark.parametrize("model,stem", _logged_manifests())
def test_fallback_warnings_match_every_log(shared_dir, model, stem):
    """Each run's shape-fallback warnings and their count (e.g. deepseek2's attn_k_b rows of 64
    under the 256-block types), as llama-quantize logged them."""
    info, tensors = _base(shared_dir, model)
    log = (model_dir(model) / "quantize" / f"{stem}.log").read_text()
    name, with_imatrix = file_type_of(stem)
    plan = plan_types(tensors, info, FILE_TYPES[name], has_imatrix=with_imatrix)
    assert [c.fallback for c in plan if c.fallback] == [ln for ln in log.splitlines() if ln.startswith("warning: ")]
    counts = re.findall(r"WARNING: (\d+) of (\d+) tensor\(s\) required fallback quantization", log)
    n_fallback = sum(c.fallback is not None for c in plan)
    assert counts == ([(str(n_fallback), str(len(plan)))] if n_fallback else [])


def test_refusals_of_failed_txt(shared_dir):
    """failed.txt: plain Q2_K_S needs an imatrix (first at blk.3.ffn_down), Q1_0 has no fallback for 576."""
    info, tensors = _base(shared_dir, "llamacpp/smollm2")
    failed = (model_dir("llamacpp/smollm2") / "quantize" / "failed.txt").read_text().split()
    assert {"Q2_K_S", "Q1_0"} <= set(failed)
    plan = plan_types(tensors, info, FILE_TYPES["Q2_K_S"])
    first = next(c for c in plan if c.allows_quantization and c.requires_imatrix)
    assert (first.name, first.dst_type) == ("blk.3.ffn_down.weight", T.Q2_K)
    with pytest.raises(LlmtkError, match="no tensor type fallback is defined for type Q1_0"):
        plan_types(tensors, info, FILE_TYPES["Q1_0"])


def _refusals() -> list:
    out = [pytest.param(model, name, id=f"{model}-{name}") for model in MODELS for name in _failed(model)]
    return out or absent_reference(LLAMACPP / "*" / "quantize" / "failed.txt", n_args=2)


@pytest.mark.parametrize("model,name", _refusals())
def test_every_refusal_of_llama_quantize_is_refused(shared_dir, model, name):
    """Each request llama-quantize refused (failed.txt, without an imatrix) is refused by the plan:
    an error, or a tensor that needs an imatrix (quantize_model then refuses, see test_quantize_model)."""
    info, tensors = _base(shared_dir, model)
    try:
        plan = plan_types(tensors, info, FILE_TYPES[name])
    except LlmtkError:
        return
    assert any(c.allows_quantization and c.requires_imatrix for c in plan), f"{name} on {model} was accepted"


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


def test_written_shapes_drop_trailing_ones():
    """gguf writes ggml_n_dims dimensions: a converter's [256, 1] gate comes back as [256]."""
    from llmtk.quantize.rules import ggml_dims

    assert ggml_dims((256, 1)) == (256,) and ggml_dims((256, 1, 1)) == (256,)
    assert ggml_dims((256, 4, 1)) == (256, 4) and ggml_dims((64, 1, 4)) == (64, 1, 4) and ggml_dims((8,)) == (8,)
