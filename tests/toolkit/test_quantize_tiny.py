"""`llmtk quantize` against every llama-quantize manifest of tiny-qwen2-w256: tensor types, bytes
(sha256) and metadata. Its widths are multiples of 256, so every tensor takes the direct K-quant
and i-quant paths. The cases are the registry's file types that have a manifest; a manifest whose
types llmtk cannot quantize to fails (test_quant_rules checks that every manifest is one of them)."""
from __future__ import annotations

import pytest

from quant_manifest import TINY, check_quantize, mix_params


@pytest.mark.parametrize("stem", mix_params(TINY))
def test_tiny_qwen2_matches_llama_quantize(shared_dir, tmp_path, stem):
    check_quantize(TINY / "tiny-qwen2-f16.gguf", TINY, stem, tmp_path, TINY / "imatrix.gguf")
