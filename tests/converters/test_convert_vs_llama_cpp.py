"""Slow: fresh random checkpoints of every architecture, converted by llmtk and by llama.cpp's own
`convert_hf_to_gguf.py` (from /work/ref, run with torch), must be byte-identical.

Widths are chosen so that some rows (intermediate 100) are not a multiple of Q8_0's 32-value
block and take the converter's F16 fallback. Skips without the llama.cpp sources or torch.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from convert_helpers import ARCHS, DENSE2

REFERENCE = Path(os.environ.get("LLAMA_CPP_CONVERTER",
                                "/work/ref/llama_cpp_python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py"))

pytestmark = pytest.mark.slow

CONFIGS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(tie_word_embeddings=False)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=None)),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", dict(num_local_experts=4, num_experts_per_tok=2)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=32)),
    "qwen3moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM", dict(num_experts=4, num_experts_per_tok=2,
                                                               moe_intermediate_size=48, head_dim=32)),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(pad_token_id=0)),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(head_dim=32, query_pre_attn_scalar=32)),
    # RoPE scaling variants: Llama-3 factors as a rope_freqs tensor, Phi-3 LongRoPE factor tensors
    # and attention factor, Qwen2 YaRN keys, Gemma 3 linear scaling
    "llama-rope3": ("LlamaConfig", "LlamaForCausalLM", dict(rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 256})),
    "phi3-longrope": ("Phi3Config", "Phi3ForCausalLM", dict(
        pad_token_id=0, original_max_position_embeddings=256, rope_scaling={
            "type": "longrope", "long_factor": [1.0 + i / 8 for i in range(8)],
            "short_factor": [1.0 - i / 32 for i in range(8)]})),
    "qwen2-yarn": ("Qwen2Config", "Qwen2ForCausalLM", dict(rope_scaling={
        "type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256})),
    "gemma3-linear": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(
        head_dim=32, query_pre_attn_scalar=32, rope_scaling={"rope_type": "linear", "factor": 8.0},
        final_logit_softcapping=30.0)),
    # the dense architectures of ../shared/convert2 (DENSE2), at other widths than its checkpoints
    "arcee": ("ArceeConfig", "ArceeForCausalLM", dict(head_dim=16)),
    "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM", dict(pad_token_id=2)),
    "seed_oss": ("SeedOssConfig", "SeedOssForCausalLM", dict(head_dim=32, attention_bias=True)),
    "granite": ("GraniteConfig", "GraniteForCausalLM", dict(attention_multiplier=0.25, embedding_multiplier=4.0,
                                                            residual_multiplier=0.5, logits_scaling=2.0)),
    "glm4": ("Glm4Config", "Glm4ForCausalLM", dict(head_dim=16, pad_token_id=2, vocab_size=49156)),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", dict(tie_word_embeddings=False)),
    "exaone4": ("Exaone4Config", "Exaone4ForCausalLM", dict(sliding_window=16, layer_types=[
        "sliding_attention", "full_attention"], rope_scaling={
        "rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 256})),
    "apertus": ("ApertusConfig", "ApertusForCausalLM", dict(tie_word_embeddings=False)),
    "starcoder2": ("Starcoder2Config", "Starcoder2ForCausalLM", dict()),
    "command-r": ("CohereConfig", "CohereForCausalLM", dict(logit_scale=0.25, use_qk_norm=True)),
    "cohere2": ("Cohere2Config", "Cohere2ForCausalLM", dict(head_dim=16, rotary_pct=0.5, sliding_window=16,
                                                            layer_types=["sliding_attention", "full_attention"])),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", dict(head_dim=16, vocab_size=4096)),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=16,
                                                         vocab_size=4096)),
    "ernie4_5": ("Ernie4_5Config", "Ernie4_5ForCausalLM", dict(head_dim=16, vocab_size=4096)),
}
# tokenizer files other than SmolLM2's BPE tokenizer.json + tiny-llama's tokenizer_config.json
_TOKENIZER_FILES = {
    "glm4": {"tokenizer_config.json": ("convert2", "glm4", "tiny-glm4", "tokenizer_config.json")},
    **{arch: {"tokenizer.model": ("convert2", "_spm", "tokenizer.model"),
              "tokenizer_config.json": ("convert2", arch, f"tiny-{arch}", "tokenizer_config.json")}
       for arch in ("gemma", "gemma2", "ernie4_5")},
}


def _build(arch: str, dest: Path, shared: Path) -> None:
    import torch
    import transformers

    cfg_name, model_name, extra = CONFIGS[arch]
    cfg = getattr(transformers, cfg_name)(**{
        **dict(vocab_size=49152, hidden_size=64, intermediate_size=100, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=1024), **extra})
    torch.manual_seed(1)
    model = getattr(transformers, model_name)(cfg).to(torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(dest, safe_serialization=True)
    files = _TOKENIZER_FILES.get(arch, {})
    if "tokenizer.model" not in files:
        files = {"tokenizer.json": ("convert", "_tokenizer", "tokenizer.json"),
                 "tokenizer_config.json": ("convert", "llama", "tiny-llama", "tokenizer_config.json"), **files}
    for name, parts in files.items():
        (dest / name).symlink_to(shared.joinpath(*parts))


@pytest.mark.parametrize("outtype", ["bf16", "q8_0"])
@pytest.mark.parametrize("arch", ARCHS + ["llama-rope3", "phi3-longrope", "qwen2-yarn", "gemma3-linear"] + DENSE2)
def test_byte_identical_to_llama_cpp(shared_dir: Path, tmp_path: Path, arch: str, outtype: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    if not REFERENCE.is_file():
        pytest.skip(f"llama.cpp's converter not found at {REFERENCE} (set LLAMA_CPP_CONVERTER)")
    from llmtk.converters import convert

    src = tmp_path / f"rand-{arch}"
    _build(arch, src, shared_dir)
    env = dict(os.environ)
    if not (src / "tokenizer.model").exists():
        stub = tmp_path / "stub"  # the reference imports sentencepiece even for BPE-only folders
        stub.mkdir()
        (stub / "sentencepiece.py").write_text("class SentencePieceProcessor:\n    pass\n")
        env["PYTHONPATH"] = str(stub)
    else:
        pytest.importorskip("sentencepiece")
    ref = tmp_path / "ref.gguf"
    res = subprocess.run([sys.executable, str(REFERENCE), str(src), "--outfile", str(ref), "--outtype", outtype],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    out = convert(src, tmp_path / "mine.gguf", outtype, progress=False)
    assert out.read_bytes() == ref.read_bytes()


def _llama_hf_folder(dest: Path, shared: Path) -> None:
    """A Llama folder whose tokenizer is a byte-fallback BPE tokenizer.json (no tokenizer.model),
    with a TemplateProcessing post-processor and a non-special added token."""
    import json
    import struct

    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

    dest.mkdir()
    src = shared / "convert" / "llama" / "tiny-llama"
    cfg = json.loads((src / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps({**cfg, "vocab_size": 300}))
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for t in ("\u2581", "a", "b", "\u2581a", "ab", "\u2581ab", "c", "\u2581c", "\u2581abc", "bc", "abc"):
        vocab.setdefault(t, len(vocab))
    merges = [("\u2581", "a"), ("a", "b"), ("\u2581a", "b"), ("\u2581", "c"), ("b", "c"), ("ab", "c"), ("\u2581ab", "c")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<s>", "</s>", "<unk>")])
    tok.add_tokens([AddedToken("<extra_1>", special=False, normalized=False)])
    tok.add_special_tokens([AddedToken("<|im_start|>", special=True, normalized=False)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    tok.save(str(dest / "tokenizer.json"))
    (dest / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False, "legacy": False}))
    raw = (src / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header, data = json.loads(raw[8:8 + n]), raw[8 + n:]
    out, blobs, off = {}, [], 0
    for k, v in header.items():
        if k == "__metadata__":
            continue
        b, shape = data[v["data_offsets"][0]:v["data_offsets"][1]], v["shape"]
        if k in ("lm_head.weight", "model.embed_tokens.weight"):  # cut to the 300-token vocabulary
            shape, b = [300, shape[1]], b[:300 * shape[1] * 2]
        out[k] = {"dtype": v["dtype"], "shape": shape, "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(out).encode()
    (dest / "model.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def test_llama_hf_bpe_vocab_byte_identical(shared_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    if not REFERENCE.is_file():
        pytest.skip(f"llama.cpp's converter not found at {REFERENCE}")
    from llmtk.converters import convert

    src = tmp_path / "tiny-hf"
    _llama_hf_folder(src, shared_dir)
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "sentencepiece.py").write_text("class SentencePieceProcessor:\n    pass\n")
    ref = tmp_path / "ref.gguf"
    res = subprocess.run([sys.executable, str(REFERENCE), str(src), "--outfile", str(ref), "--outtype", "f16"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(stub)})
    assert res.returncode == 0, res.stderr[-3000:]
    out = convert(src, tmp_path / "mine.gguf", "f16", progress=False)
    assert out.read_bytes() == ref.read_bytes()


def _spm_folder(arch: str, dest: Path, shared: Path, model: Path, n_vocab: int) -> None:
    """tiny-<arch> with a trained SentencePiece tokenizer.model (no tokenizer.json), config's
    vocab_size above the model's pieces (padding), added tokens in tokenizer_config.json."""
    import json
    import struct

    src = shared / "convert" / arch / f"tiny-{arch}"
    dest.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps({**cfg, "vocab_size": n_vocab}))
    (dest / "tokenizer.model").write_bytes(model.read_bytes())
    (dest / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True,
        "add_eos_token": False, "tokenizer_class": "LlamaTokenizer",
        "added_tokens_decoder": {"3": {"content": "<ctrl>", "special": True},
                                 "4": {"content": "<extra_0>", "special": False},
                                 str(n_vocab - 3): {"content": "<|x|>", "special": True}}}))
    raw = (src / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header, data = json.loads(raw[8:8 + n]), raw[8 + n:]
    out, blobs, off = {}, [], 0
    for k, v in header.items():
        if k == "__metadata__":
            continue
        b, shape = data[v["data_offsets"][0]:v["data_offsets"][1]], v["shape"]
        if k in ("lm_head.weight", "model.embed_tokens.weight"):
            shape, b = [n_vocab, shape[1]], b[:n_vocab * shape[1] * 2]
        out[k] = {"dtype": v["dtype"], "shape": shape, "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(out).encode()
    (dest / "model.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


@pytest.mark.parametrize("arch", ["llama", "gemma3", "phi3"])
def test_sentencepiece_vocab_byte_identical(shared_dir: Path, tmp_path: Path, arch: str) -> None:
    """llmtk parses tokenizer.model by hand; llama.cpp reads it with the sentencepiece package,
    which this test needs (to train a small model and to run the reference)."""
    spm = pytest.importorskip("sentencepiece")
    if not REFERENCE.is_file():
        pytest.skip(f"llama.cpp's converter not found at {REFERENCE}")
    from llmtk.converters import convert

    corpus = tmp_path / "corpus.txt"
    corpus.write_text((shared_dir / "README.md").read_text() * 3)
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "spm"), vocab_size=400,
                                   model_type="bpe", byte_fallback=True, user_defined_symbols=["<extra_0>"],
                                   control_symbols=["<ctrl>"], minloglevel=2)
    src = tmp_path / f"tiny-{arch}"
    _spm_folder(arch, src, shared_dir, tmp_path / "spm.model", 404)
    ref = tmp_path / "ref.gguf"
    res = subprocess.run([sys.executable, str(REFERENCE), str(src), "--outfile", str(ref), "--outtype", "f16"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    out = convert(src, tmp_path / "mine.gguf", "f16", progress=False)
    assert out.read_bytes() == ref.read_bytes()
