"""llama-quantize's mix on the fourteen dense architectures of ../shared/convert2 (issue 14), for
Q4_K_M and Q2_K: the F16 input is made by llmtk's converter from the tiny checkpoint, then
`llmtk quantize` must give llama-quantize's tensors, types and bytes.

Two sources for llama-quantize's side: the small manifests in `data/` (see its README), checked in
the default suite, and, when a llama.cpp build is present (LLAMA_CPP_BIN), llama-quantize itself
run on the same F16 file, compared in full (metadata too).

What this exercises: the tiny checkpoints have n_embd 32 and FFN width 64, so every K-quant
choice takes tensor_type_fallback (Q4_K -> Q5_0, Q6_K -> Q8_0, Q2_K/Q3_K -> Q4_0, Q5_K -> Q5_1)
and the output/tied embedding goes to Q8_0 (row not a multiple of 256). The role choices stay
visible through the fallback: Q4_K_M's attn_v and ffn_down use_more_bits layers (Q6_K -> Q8_0),
the tied-embedding rule (token_embd as output), untied outputs (olmo2, apertus), per-arch tensor
names and which tensors are never quantized (norms, biases, gemma's zero-centred norms).
Q2_K's attn_v/ffn_down/attn_output lifts (Q3_K/Q4_K) all fall back to Q4_0 like the default.

The slow test_wide_dense_mix_matches_llama_quantize closes that gap: it widens each checkpoint's
config (hidden 256, FFN 512, 4 heads / 1 kv head of 64, 8 layers, per-layer patterns repeated),
makes random weights with transformers, converts with llmtk and runs llama-quantize and llmtk on
the same F16 file for eight mixes, so the K-quant choices are taken directly (n_gqa 4, the
use_more_bits layers of 8, attn_output/ffn_down lifts)."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import shared_path
from llamacpp_tools import llama_tool

# helpers of sibling test folders: tokenizer links (converters), manifest comparison (toolkit)
for _helpers in ("converters", "toolkit"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / _helpers))
from convert_helpers import materialize  # noqa: E402
from quant_manifest import _json_sha, manifest_differences  # noqa: E402

from llmtk.errors import UnsupportedError  # noqa: E402
from llmtk.ggufio import GGUFReader  # noqa: E402

DATA = Path(__file__).parent / "data"
ARCHS = sorted(p.stem for p in DATA.glob("*.json"))
FILE_TYPES = ("Q4_K_M", "Q2_K")


@pytest.fixture(scope="module")
def f16_of(shared_dir, tmp_path_factory):
    """arch -> llmtk's F16 conversion of ../shared/convert2/<arch>/tiny-<arch> (made once)."""
    import llmtk

    root = tmp_path_factory.mktemp("dense-f16")
    made: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in made:
            if not (shared_dir / "convert2" / arch / f"tiny-{arch}").is_dir():
                pytest.skip(f"reference data not found: {shared_path('convert2', arch, f'tiny-{arch}')}")
            ckpt = materialize(shared_dir, arch, root, refset="convert2")
            try:
                made[arch] = llmtk.convert(ckpt, root / f"{arch}-f16.gguf", "f16")
            except UnsupportedError as e:
                pytest.skip(f"llmtk has no converter for {arch} yet: {e}")
        return made[arch]

    return get


def _tensors(path: Path) -> list[list[str]]:
    with GGUFReader(path) as r:
        return [[t.name, t.qtype.name, hashlib.sha256(r.raw(t.name)).hexdigest()] for t in r.tensors.values()]


def test_every_dense_arch_has_manifests():
    assert ARCHS == sorted(["gemma2", "gemma", "granite", "olmo2", "cohere2", "command-r", "starcoder2", "smollm3",
                            "exaone4", "ernie4_5", "seed_oss", "glm4", "apertus", "arcee"])
    for arch in ARCHS:
        assert sorted(json.loads((DATA / f"{arch}.json").read_text())) == sorted(FILE_TYPES)


@pytest.mark.parametrize("ftype", FILE_TYPES)
@pytest.mark.parametrize("arch", ARCHS)
def test_dense_mix_matches_llama_quantize_manifest(f16_of, tmp_path, arch, ftype):
    from llmtk.quantize import quantize_model

    expected = json.loads((DATA / f"{arch}.json").read_text())[ftype]
    out = quantize_model(f16_of(arch), tmp_path / "out.gguf", ftype).out_paths[0]
    assert _tensors(out) == expected


@pytest.mark.parametrize("ftype", FILE_TYPES)
@pytest.mark.parametrize("arch", ARCHS)
def test_dense_mix_matches_llama_quantize_live(f16_of, tmp_path, arch, ftype):
    """Same input, llama-quantize run now: tensors, bytes and metadata."""
    from llmtk.quantize import quantize_model

    tool = llama_tool("llama-quantize")
    f16 = f16_of(arch)
    ref = tmp_path / "ref.gguf"
    subprocess.run([str(tool), str(f16), str(ref), ftype, "2"], check=True, capture_output=True)
    out = quantize_model(f16, tmp_path / "out.gguf", ftype).out_paths[0]
    assert manifest_differences(out, _manifest(ref)) == []


def _manifest(path: Path) -> dict:
    """A GGUF file as the quant_manifest comparison reads a manifest (kv values, tensor hashes)."""
    with GGUFReader(path) as r:
        kv = {}
        for k, v in r.kv.items():
            v = v.tolist() if hasattr(v, "tolist") else v
            kv[k] = {"array_len": len(v), "sha256_of_json": _json_sha(v)} if isinstance(v, list) else v
        tensors = [{"name": t.name, "type": t.qtype.name, "shape": list(t.ne),
                    "sha256": hashlib.sha256(r.raw(t.name)).hexdigest()} for t in r.tensors.values()]
    return {"kv": kv, "tensors": tensors}


WIDE_TYPES = ("Q4_K_M", "Q2_K", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q5_K_M", "Q6_K", "IQ4_XS")


def _widen(config: dict, n_layer: int = 8) -> dict:
    """The checkpoint's config at w256: every row a multiple of 256, four query heads per kv head."""
    c = dict(config, hidden_size=256, num_attention_heads=4, num_key_value_heads=1, num_hidden_layers=n_layer)
    if "intermediate_size" in c:
        c["intermediate_size"] = 512
    if "head_dim" in c:
        c["head_dim"] = 64
    for key in ("layer_types", "no_rope_layers"):
        if isinstance(c.get(key), list):
            c[key] = [config[key][i % len(config[key])] for i in range(n_layer)]
    return c


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_wide_dense_mix_matches_llama_quantize(shared_dir, tmp_path, arch):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import llmtk
    from llmtk.quantize import quantize_model

    tool = llama_tool("llama-quantize")
    tiny = materialize(shared_dir, arch, tmp_path, refset="convert2")
    ckpt = tmp_path / "wide" / f"tiny-{arch}"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text(json.dumps(_widen(json.loads((tiny / "config.json").read_text()))))
    for f in tiny.iterdir():
        if f.name not in ("config.json", "model.safetensors", "peaking.json", "generation_config.json"):
            (ckpt / f.name).symlink_to(f.resolve())
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(ckpt),
                                                          dtype=torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(ckpt, safe_serialization=True)
    try:
        f16 = llmtk.convert(ckpt, tmp_path / "f16.gguf", "f16")
    except UnsupportedError as e:
        pytest.skip(f"llmtk has no converter for {arch} yet: {e}")
    for ftype in WIDE_TYPES:
        ref = tmp_path / f"ref-{ftype}.gguf"
        subprocess.run([str(tool), str(f16), str(ref), ftype, "2"], check=True, capture_output=True)
        out = quantize_model(f16, tmp_path / f"out-{ftype}.gguf", ftype).out_paths[0]
        assert manifest_differences(out, _manifest(ref)) == [], ftype
        ref.unlink()
        out.unlink()
