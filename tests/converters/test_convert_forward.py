"""Converted tiny checkpoints run in llmtk's forward pass and match transformers' logits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from convert_helpers import ARCHS, materialize

pytest.importorskip("torch")
pytest.importorskip("transformers")

# keys and values kept in float32 (llama.cpp rounds them to f16 by default): these tests
# compare with transformers or between code paths at float32 tolerances
EXACT_KV = dict(cache_type_k="f32", cache_type_v="f32")

# max |llmtk - transformers| / max |transformers|, both float32 on the same bf16-exact weights
REL_TOL = 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_converted_model_matches_transformers(shared_dir: Path, tmp_path: Path, arch: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from llmtk.converters import convert
    from llmtk.model import load_model

    src = materialize(shared_dir, arch, tmp_path / "ckpt")
    out = convert(src, tmp_path / "m.gguf", "f32", progress=False)
    hf = AutoModelForCausalLM.from_pretrained(src, torch_dtype=torch.float32, attn_implementation="eager").eval()
    if arch == "qwen3moe":
        # llama.cpp's qwen3moe graph always renormalises the top-k router weights (there is no GGUF
        # key for norm_topk_prob); the tiny checkpoint says false, so compare with what llama.cpp runs
        for module in hf.modules():
            if hasattr(module, "norm_topk_prob"):
                module.norm_topk_prob = True
    toks = np.random.default_rng(7).integers(0, 49152, 11).astype(np.int32)
    with torch.no_grad():
        ref = hf(torch.from_numpy(toks.astype(np.int64))[None]).logits[0].float().numpy()
    # exact float32 activations: GELU as transformers computes it, not from ggml-cpu's f16 table
    with load_model(out, quantize_activations=False, **EXACT_KV) as m:
        got = m.forward(toks)
    assert got.shape == ref.shape == (11, 49152)
    scale = np.abs(ref).max()
    assert scale > 0.05  # random tiny models still give clearly non-zero logits
    rel = np.abs(got - ref).max() / scale
    assert rel < REL_TOL, f"{arch}: max |diff| / scale = {rel:.3g}"
