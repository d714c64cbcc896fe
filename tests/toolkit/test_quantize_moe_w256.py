"""`llmtk quantize` against every llama-quantize manifest of the MoE/MLA w256 models
(../shared/convert2/<arch>/quantize-w256: qwen2moe, deepseek2, glm4moe, gpt-oss): tensor types,
bytes (sha256) and metadata.

These exercise the MoE side of llama-quantize's mix: stacked expert tensors (ne[2] = n_expert)
quantized expert by expert with their own imatrix slices, the layer taken from the name for
expert FFNs, attn_kv_b counted as attn_v, MLA's attn_k_b rows of 64 falling back from the
256-block types (Q5_0, Q5_1, Q8_0, IQ4_NL, Q4_0), n_expert >= 4 lifting attn_v in the low-bit
mixes, and MXFP4_MOE for gpt-oss. A new folder or manifest is tested without touching this file."""
from __future__ import annotations

import pytest

from conftest import absent_reference, shared_path
from quant_manifest import check_quantize, mix_stems, model_dir, quantize_models

W256 = [m for m in quantize_models() if m.startswith("convert2/")]


def _cases() -> list:
    out = [pytest.param(m, stem, id=f"{m.split('/')[1]}-{stem}") for m in W256 for stem in mix_stems(model_dir(m))]
    return out or absent_reference(shared_path("convert2", "*", "quantize-w256", "quantize"), n_args=2)


@pytest.mark.parametrize("model,stem", _cases())
def test_moe_w256_matches_llama_quantize(shared_dir, tmp_path, model, stem):
    folder = model_dir(model)
    arch = folder.parent.name
    check_quantize(folder / f"tiny-{arch}-w256-f16.gguf", folder, stem, tmp_path, folder / "imatrix.gguf")
