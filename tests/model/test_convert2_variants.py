"""Dense architectures at sizes the ../shared/convert2 fixtures do not reach, against transformers.

The fixtures have 2 layers, so what llama.cpp does only from layer 3 or 64 on is never run by
them: smollm3's NoPE every 4th layer, cohere2's default sliding pattern of 4 with RoPE only on
the sliding layers, exaone4's sliding window and NoPE global layers (its 64-layer model), and
command-r's per-head LayerNorm q/k norms (Command R+, 64 layers). Each case builds a random
transformers model from the fixture's config with the overrides below (sliding windows of 8, so
40 tokens cross them), saves it, converts it with llmtk, and compares the logits, float32 both,
over the whole sequence and, after a 30-token prompt, token by token through the KV cache.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_convert2_oracle import EXACT, REL_TOL, _what_llama_cpp_runs

pytest.importorskip("torch")
pytest.importorskip("transformers")

VARIANTS = {
    "smollm3-4l": ("smollm3", dict(num_hidden_layers=4, no_rope_layers=None, layer_types=None)),
    "cohere2-4l": ("cohere2", dict(num_hidden_layers=4, sliding_window=8,
                                   layer_types=["sliding_attention"] * 3 + ["full_attention"])),
    "exaone4-64l": ("exaone4", dict(num_hidden_layers=64, sliding_window=8,
                                    layer_types=["sliding_attention" if il % 4 < 3 else "full_attention"
                                                 for il in range(64)])),
    "command-r-64l-qknorm": ("command-r", dict(num_hidden_layers=64, use_qk_norm=True)),
    "gemma2-3l": ("gemma2", dict(num_hidden_layers=3, sliding_window=8, layer_types=None)),
    # queries 10x larger: attention logits of tens, where the soft-capping at 50 bends them
    "gemma2-capped": ("gemma2", dict(num_hidden_layers=2, sliding_window=8, layer_types=None,
                                     _scale={"q_proj": 10.0})),
    "glm4-quarter-rotary": ("glm4", dict(head_dim=16, partial_rotary_factor=0.25)),
}
N_TOKENS = 40
N_PROMPT = 30


def _perturb(model, seed: int, zero_centred: bool) -> None:
    """Weights that give clearly non-uniform logits: norms near 1 (0 for gemma's zero-centred
    ones), biases small, matrices with unit-variance outputs."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_((0.0 if zero_centred else 1.0) + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias") or p.ndim < 2:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))


def _checkpoint(shared_dir: Path, arch: str, overrides: dict, dest: Path):
    """(transformers model, folder) of a random model of `arch` with `overrides`, saved with the
    fixture's tokenizer files beside it."""
    import torch
    import transformers

    src = shared_dir / "convert2" / arch / f"tiny-{arch}"
    if not src.is_dir():
        pytest.skip(f"reference data not found: {src}")
    # the config's own __init__ fills what an override sets to None (layer types, NoPE layers)
    d = json.loads((src / "config.json").read_text())
    overrides = dict(overrides)
    scales = overrides.pop("_scale", {})
    d.update(overrides)
    cfg = transformers.AutoConfig.for_model(d.pop("model_type"), **{k: v for k, v in d.items() if v is not None})
    _what_llama_cpp_runs(arch, cfg)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="eager")
    _perturb(model.float().eval(), 0, zero_centred=cfg.model_type.startswith("gemma"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            for part, k in scales.items():
                if part in name:
                    p.mul_(k)
    dest.mkdir(parents=True)
    model.save_pretrained(dest)
    for f in src.iterdir():
        if f.name.startswith("tokenizer"):
            target = f
            if f.stat().st_size < 256 and f.name in ("tokenizer.json", "tokenizer.model"):
                target = (f.parent / f.read_text().strip()).resolve()
            (dest / f.name).symlink_to(target)
    return model, cfg, dest


@pytest.mark.parametrize("case", list(VARIANTS))
def test_variant_matches_transformers(shared_dir: Path, tmp_path: Path, case: str) -> None:
    import torch
    from llmtk.converters import ARCHITECTURES, convert
    from llmtk.model import load_model

    arch, overrides = VARIANTS[case]
    model, cfg, folder = _checkpoint(shared_dir, arch, overrides, tmp_path / f"tiny-{arch}")
    if cfg.architectures[0] not in ARCHITECTURES:
        pytest.skip(f"llmtk has no converter for {cfg.architectures[0]} yet")
    gguf = convert(folder, tmp_path / "m.gguf", "f32", progress=False)
    toks = np.random.default_rng(3).integers(0, cfg.vocab_size, N_TOKENS).astype(np.int32)
    with torch.no_grad():
        ref = model(torch.from_numpy(toks.astype(np.int64))[None]).logits[0].float().numpy()
    with load_model(gguf, **EXACT) as m:
        full = m.forward(toks)
        # a prompt, then token by token through the cache (the deep cases decode slowly)
        cache = m.new_cache(N_TOKENS)
        steps = np.concatenate([m.forward(toks[:N_PROMPT], cache)] +
                               [m.forward(toks[i:i + 1], cache) for i in range(N_PROMPT, N_TOKENS)])
    scale = np.abs(ref).max()
    assert scale > 0.5
    rel = np.abs(full - ref).max() / scale
    assert rel < REL_TOL, f"{case}: full sequence, max |diff| / scale = {rel:.3g}"
    rel_steps = np.abs(steps - ref).max() / scale
    assert rel_steps < REL_TOL, f"{case}: token by token, max |diff| / scale = {rel_steps:.3g}"
