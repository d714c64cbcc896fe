"""The MoE and MLA converters against llama.cpp: ../shared/convert2's manifests, and what they cannot show.

- `MOE2` x 5 outtypes: metadata keys in llama.cpp's order with their values, every tensor's name
  (in order), type, GGUF shape and sha256 (f16 and q8_0 by default, the rest `slow`).
- gpt-oss checkpoints that ship MXFP4 experts (the shared one has bf16 experts): a synthetic one is
  built from the shared checkpoint with seeded random blocks and scales; its conversion is pinned
  to the sha256 of what llama.cpp's converter wrote for the same folder, and its MXFP4 tensors are
  checked against a decoding of OpenAI's layout written here from the format's definition.
- GLM-4.5's NextN layer (the shared checkpoint has none): a synthetic extra layer, pinned the same way.
- Streaming: planning reads no weight, and each expert is read only while its own stacked tensor is
  written (one projection of one layer at a time); 3-D experts are transformed one expert at a time.
- Configs that do not fit their checkpoint are refused in one line, nothing written.
- Slow, with llama.cpp's converter at hand (`LLAMA_CPP_CONVERTER`) and torch: fresh random
  checkpoints of every arch at other sizes, byte-identical to llama.cpp's output.

The pinned hashes were made with the reference tree's `convert_hf_to_gguf.py` (llama-cpp-python
0.3.36's vendored llama.cpp, torch 2.13 CPU) on the folders `_mxfp4_checkpoint` and
`_nextn_checkpoint` build; if the shared checkpoints change, rebuild those folders and re-run it.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from convert_helpers import MOE2, OUTTYPES, assert_manifest_equal, manifest, materialize

from llmtk.converters import convert

DEFAULT_OUTTYPES = ("f16", "q8_0")


@pytest.fixture(scope="module")
def ckpt_root(shared_dir: Path, tmp_path_factory) -> tuple[Path, Path]:
    return shared_dir, tmp_path_factory.mktemp("ckpt2moe")


def _cases() -> list:
    return [pytest.param(arch, outtype, marks=() if outtype in DEFAULT_OUTTYPES else pytest.mark.slow,
                         id=f"{arch}-{outtype}")
            for arch in MOE2 for outtype in OUTTYPES]


@pytest.mark.parametrize(("arch", "outtype"), _cases())
def test_moe_manifest_matches_llama_cpp(ckpt_root, tmp_path: Path, arch: str, outtype: str) -> None:
    shared, root = ckpt_root
    ref = json.loads((shared / "convert2" / arch / f"{outtype}.json").read_text())
    out = convert(materialize(shared, arch, root, "convert2"), tmp_path / ref["file"], outtype, progress=False)
    got = manifest(out)
    assert_manifest_equal(got, ref)


# ---------------------------------------------------------------------------------------------
# synthetic checkpoints built from the shared ones
# ---------------------------------------------------------------------------------------------

def _read_st(path: Path) -> dict[str, tuple[str, list[int], bytes]]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    return {k: (m["dtype"], m["shape"], data[8 + n + m["data_offsets"][0]:8 + n + m["data_offsets"][1]])
            for k, m in sorted(header.items()) if k != "__metadata__"}


def _write_st(path: Path, tensors: dict[str, tuple[str, list[int], bytes]]) -> None:
    header, blobs, off = {}, [], 0
    for k in sorted(tensors):
        dtype, shape, raw = tensors[k]
        header[k] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))


def _derived_folder(shared: Path, arch: str, dest: Path, tensors: dict, config_edit: dict) -> Path:
    src = shared / "convert2" / arch / f"tiny-{arch}"
    dest.mkdir(parents=True)
    _write_st(dest / "model.safetensors", tensors)
    config = json.loads((src / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps({**config, **config_edit}, indent=2))
    for name in ("tokenizer_config.json", "generation_config.json"):
        (dest / name).write_text((src / name).read_text())
    (dest / "tokenizer.json").symlink_to(shared / "convert" / "_tokenizer" / "tokenizer.json")
    return dest


def _mxfp4_checkpoint(shared: Path, root: Path) -> Path:
    """tiny-gpt-oss with its float experts replaced by seeded random MXFP4 blocks in OpenAI's
    layout (blocks (n_expert, rows, n_blocks, 16), E8M0 scales 118..129), as `quant_method: mxfp4`."""
    rng = np.random.default_rng(15)
    tensors = {}
    for name, (dtype, shape, raw) in _read_st(shared / "convert2" / "gpt-oss" / "tiny-gpt-oss" / "model.safetensors").items():
        if name.endswith(("mlp.experts.down_proj", "mlp.experts.gate_up_proj")):
            n_expert, n_in, n_out = shape  # stored for x @ W; MXFP4 rows are the outputs
            blocks = rng.integers(0, 256, size=(n_expert, n_out, n_in // 32, 16), dtype=np.uint8)
            scales = rng.integers(118, 130, size=(n_expert, n_out, n_in // 32), dtype=np.uint8)
            tensors[name + "_blocks"] = ("U8", list(blocks.shape), blocks.tobytes())
            tensors[name + "_scales"] = ("U8", list(scales.shape), scales.tobytes())
        else:
            tensors[name] = (dtype, shape, raw)
    return _derived_folder(shared, "gpt-oss", root / "tiny-gpt-oss-mxfp4", tensors,
                           {"quantization_config": {"quant_method": "mxfp4"}})


def _nextn_checkpoint(shared: Path, root: Path) -> Path:
    """tiny-glm4moe plus one NextN layer (layer 2: a MoE layer and the NextN tensors, seeded
    random bf16 around 1.0), `num_nextn_predict_layers` 1."""
    rng = np.random.default_rng(16)
    tensors = _read_st(shared / "convert2" / "glm4moe" / "tiny-glm4moe" / "model.safetensors")
    n_embd, n_vocab = 32, 49156
    extra = {k.replace("model.layers.1.", "model.layers.2."): s for k, (_, s, _) in tensors.items()
             if k.startswith("model.layers.1.")}
    extra.update({"model.layers.2.eh_proj.weight": [n_embd, 2 * n_embd],
                  "model.layers.2.embed_tokens.weight": [n_vocab, n_embd],
                  "model.layers.2.enorm.weight": [n_embd], "model.layers.2.hnorm.weight": [n_embd],
                  "model.layers.2.shared_head.head.weight": [n_vocab, n_embd],
                  "model.layers.2.shared_head.norm.weight": [n_embd]})
    for name in sorted(extra):
        bits = rng.integers(0x3F70, 0x3F90, size=extra[name], dtype=np.uint16)  # bf16 0.94 .. 1.12
        tensors[name] = ("BF16", extra[name], bits.tobytes())
    return _derived_folder(shared, "glm4moe", root / "tiny-glm4moe-nextn", tensors, {"num_nextn_predict_layers": 1})


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# sha256 of llama.cpp's converter output on the synthetic folders (see the module docstring)
LLAMA_CPP_MXFP4_SHA256 = {
    "bf16": "632e9a5362818fc8c50121a517583aa43c9dc1028923bb62bd756245bd4a2106",
    "q8_0": "845208dc6fcaf93f84a2c195778678c553fec028775f3b1c438576343f9f1d34",
}
LLAMA_CPP_NEXTN_SHA256 = {"f16": "c941dad53d4361f6f461e7c946e3a7e9c63af3278cb13d3cde8fce67fad02b07"}

# E2M1 values of the 4-bit codes, by the OCP Microscaling format's definition
E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def _decode_openai_mxfp4(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Values of OpenAI's layout: byte j of a block holds value 2j (low nibble), 2j+1 (high)."""
    codes = np.stack((blocks & 0x0F, blocks >> 4), axis=-1).reshape(*blocks.shape[:-1], 32)
    values = E2M1[codes] * np.exp2(scales.astype(np.float64) - 127)[..., None]
    return values.reshape(*blocks.shape[:-2], -1)


@pytest.mark.parametrize("outtype", ["bf16", "q8_0"])
def test_gpt_oss_mxfp4_experts_as_llama_cpp_writes_them(shared_dir: Path, tmp_path: Path, outtype: str) -> None:
    from llmtk.ggufio import GGUFReader
    from llmtk.kernels import dequantize

    src = _mxfp4_checkpoint(shared_dir, tmp_path)
    out = convert(src, tmp_path / "out.gguf", outtype, progress=False)
    st = _read_st(src / "model.safetensors")
    with GGUFReader(out) as r:
        # floats keep the MXFP4 experts: llama.cpp names the file type after them
        assert r.kv["general.file_type"] == (38 if outtype == "bf16" else 7)
        names = list(r.tensors)
        # llama.cpp adds the MXFP4 tensors first, per layer down, gate, up
        assert names[:6] == [f"blk.{b}.ffn_{p}_exps.weight" for b in (0, 1) for p in ("down", "gate", "up")]
        for bid in (0, 1):
            stem = f"model.layers.{bid}.mlp.experts."
            for proj, parity in (("down", None), ("gate", 0), ("up", 1)):
                t = r.tensors[f"blk.{bid}.ffn_{proj}_exps.weight"]
                assert t.qtype.name == "MXFP4"
                hf = stem + ("down_proj" if proj == "down" else "gate_up_proj")
                _, bshape, braw = st[hf + "_blocks"]
                _, sshape, sraw = st[hf + "_scales"]
                blocks = np.frombuffer(braw, np.uint8).reshape(bshape)
                scales = np.frombuffer(sraw, np.uint8).reshape(sshape)
                if parity is not None:  # gate and up rows interleave in gate_up_proj
                    blocks, scales = blocks[:, parity::2], scales[:, parity::2]
                want = _decode_openai_mxfp4(blocks, scales)
                got = dequantize(r.raw(t.name), "MXFP4", t.shape)
                np.testing.assert_array_equal(got, want.astype(np.float32))
    assert _sha256(out) == LLAMA_CPP_MXFP4_SHA256[outtype]


def test_glm4moe_nextn_layer_kept_as_llama_cpp_keeps_it(shared_dir: Path, tmp_path: Path) -> None:
    from llmtk.ggufio import GGUFReader

    src = _nextn_checkpoint(shared_dir, tmp_path)
    out = convert(src, tmp_path / "out.gguf", "f16", progress=False)
    with GGUFReader(out) as r:
        assert r.kv["glm4moe.block_count"] == 3 and r.kv["glm4moe.nextn_predict_layers"] == 1
        nextn = [n for n in r.tensors if ".nextn." in n]
        assert nextn == [f"blk.2.nextn.{n}.weight" for n in ("eh_proj", "embed_tokens", "enorm", "hnorm",
                                                             "shared_head_head", "shared_head_norm")]
        assert "blk.2.ffn_gate_exps.weight" in r.tensors
    assert _sha256(out) == LLAMA_CPP_NEXTN_SHA256["f16"]


def _convert_recording_reads(hf_dir: Path, out: Path, outtype: str, monkeypatch) -> tuple[list, list]:
    """Convert with every checkpoint read recorded as (tensor, first row, end row), or (tensor,
    None, None) for a whole-tensor load: the reads made while planning, and per written tensor."""
    import dataclasses

    from llmtk.converters import pipeline

    reads: list[tuple[str, int | None, int | None]] = []
    real_open, real_plan = pipeline.open_checkpoint, pipeline.plan_tensors

    def recording_open(path):
        ckpt = real_open(path)
        for name, t in list(ckpt.tensors.items()):
            def load(t=t, name=name):
                reads.append((name, None, None))
                return t.load()

            def rows(a, b, t=t, name=name):
                reads.append((name, a, b))
                return t.rows(a, b)
            ckpt.tensors[name] = dataclasses.replace(t, load=load, rows=rows if t.rows is not None else None)
        return ckpt

    planned: list = []

    def plan(conv, ckpt):
        result = real_plan(conv, ckpt)
        planned.extend(reads)
        reads.clear()
        return result

    written: list = []

    def progress(done, total, i, n, name):
        written.append((name, list(reads)))
        reads.clear()

    monkeypatch.setattr(pipeline, "open_checkpoint", recording_open)
    monkeypatch.setattr(pipeline, "plan_tensors", plan)
    convert(hf_dir, out, outtype, progress=progress)
    return planned, written


def test_experts_are_read_only_while_their_stack_is_written(ckpt_root, tmp_path: Path, monkeypatch) -> None:
    """Bounded memory: no weight is read while planning, and between two written tensors only the
    experts of the stacked tensor being written are read, each once, by row ranges (qwen2moe: 4
    experts x 3 projections x 2 layers, merged per projection and layer)."""
    shared, root = ckpt_root
    planned, written = _convert_recording_reads(materialize(shared, "qwen2moe", root, "convert2"),
                                                tmp_path / "out.gguf", "q8_0", monkeypatch)
    assert planned == []
    stacks = {name: srcs for name, srcs in written if "_exps." in name}
    assert len(stacks) == 6
    for name, srcs in stacks.items():
        bid, proj = name.split(".")[1], name.split(".")[2].removeprefix("ffn_").removesuffix("_exps")
        rows = 32 if proj == "down" else 64
        assert srcs == [(f"model.layers.{bid}.mlp.experts.{x}.{proj}_proj.weight", 0, rows) for x in range(4)], name


@pytest.mark.parametrize("mxfp4", [False, True])
def test_stacked_experts_are_transformed_one_expert_at_a_time(shared_dir: Path, tmp_path: Path, monkeypatch,
                                                              mxfp4: bool) -> None:
    """gpt-oss's 3-D experts (transposed and de-interleaved, or MXFP4 blocks repacked) are read one
    expert's rows at a time, never loaded whole."""
    src = (_mxfp4_checkpoint(shared_dir, tmp_path) if mxfp4
           else materialize(shared_dir, "gpt-oss", tmp_path, "convert2"))
    shapes = {k: shape for k, (_, shape, _) in _read_st(src / "model.safetensors").items()}
    planned, written = _convert_recording_reads(src, tmp_path / "out.gguf", "bf16", monkeypatch)
    assert planned == []
    n_checked = 0
    for name, srcs in written:
        if "_exps.weight" not in name:
            continue
        assert srcs and all(a is not None for _, a, _ in srcs), f"{name} loaded a whole checkpoint tensor"
        for src_name, a, b in srcs:
            rows_per_expert = int(np.prod(shapes[src_name][1:-1]))  # rows: every axis but the last
            assert b - a == rows_per_expert and a % rows_per_expert == 0, (name, src_name, a, b)
            n_checked += 1
    assert n_checked == 6 * 4 * (2 if mxfp4 else 1)  # 6 tensors x 4 experts (x blocks and scales)


@pytest.mark.parametrize(("arch", "edit", "error", "said"), [
    ("deepseek2", {"v_head_dim": 16}, "ShapeError", "kv_b_proj.weight has shape [64, 16], expected [4 x (8 + 16)"),
    ("deepseek2", {"kv_lora_rank": "16"}, "InputError", "'kv_lora_rank' is '16', expected an integer"),
    ("glm4moe", {"num_nextn_predict_layers": 3}, "InputError", "num_nextn_predict_layers is 3, expected 0..2"),
    ("dots1", {"n_routed_experts": 3}, "InputError", "expert tensor"),
])
def test_moe_config_that_does_not_fit_the_checkpoint_is_refused_in_one_line(
        shared_dir: Path, tmp_path: Path, arch: str, edit: dict, error: str, said: str) -> None:
    import llmtk.errors

    tensors = _read_st(shared_dir / "convert2" / arch / f"tiny-{arch}" / "model.safetensors")
    src = _derived_folder(shared_dir, arch, tmp_path / f"tiny-{arch}", tensors, edit)
    with pytest.raises(getattr(llmtk.errors, error)) as e:
        convert(src, tmp_path / "out.gguf", "f16", progress=False)
    assert said in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out.gguf").exists()


def test_mxfp4_blocks_without_scales_are_refused(shared_dir: Path, tmp_path: Path) -> None:
    from llmtk.errors import InputError

    src = _mxfp4_checkpoint(shared_dir, tmp_path)
    tensors = {k: v for k, v in _read_st(src / "model.safetensors").items() if not k.endswith("down_proj_scales")}
    _write_st(src / "model.safetensors", tensors)
    with pytest.raises(InputError, match="MXFP4 blocks without scales"):
        convert(src, tmp_path / "out.gguf", "bf16", progress=False)


# ---------------------------------------------------------------------------------------------
# slow: fresh random checkpoints of other sizes than the shared ones, against llama.cpp itself
# ---------------------------------------------------------------------------------------------

REFERENCE = Path(os.environ.get("LLAMA_CPP_CONVERTER",
                                "/work/ref/llama_cpp_python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py"))
_YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256, "beta_fast": 32.0, "beta_slow": 1.0}
# 3 layers, hidden 64, 6-8 experts, expert widths of 100 (rows that take Q8_0's F16 fallback)
FRESH: dict[str, tuple[str, str, dict]] = {
    "qwen2moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM", dict(
        num_experts=6, num_experts_per_tok=2, moe_intermediate_size=100, shared_expert_intermediate_size=80)),
    "olmoe": ("OlmoeConfig", "OlmoeForCausalLM", dict(num_experts=6, num_experts_per_tok=3, num_key_value_heads=4)),
    "granitemoe": ("GraniteMoeConfig", "GraniteMoeForCausalLM", dict(
        num_local_experts=6, embedding_multiplier=12.0, attention_multiplier=0.125, residual_multiplier=0.22,
        logits_scaling=8.0, tie_word_embeddings=True)),
    "phimoe": ("PhimoeConfig", "PhimoeForCausalLM", dict(
        num_local_experts=6, original_max_position_embeddings=512, lm_head_bias=True, attention_bias=True)),
    "dots1": ("Dots1Config", "Dots1ForCausalLM", dict(
        n_routed_experts=6, n_shared_experts=2, num_experts_per_tok=2, first_k_dense_replace=1,
        moe_intermediate_size=100, intermediate_size=96, num_key_value_heads=4, scoring_func="sigmoid",
        routed_scaling_factor=2.0, norm_topk_prob=True)),
    "ernie4_5-moe": ("Ernie4_5_MoeConfig", "Ernie4_5_MoeForCausalLM", dict(
        vocab_size=4096, intermediate_size=192, moe_num_experts=6, moe_k=2, moe_num_shared_experts=1,
        moe_layer_start_index=1, moe_layer_end_index=2, bos_token_id=2, eos_token_id=1, pad_token_id=0)),
    "glm4moe": ("Glm4MoeConfig", "Glm4MoeForCausalLM", dict(
        n_routed_experts=6, num_experts_per_tok=2, first_k_dense_replace=1, moe_intermediate_size=100,
        intermediate_size=96, head_dim=16, use_qk_norm=True, attention_bias=True, vocab_size=49156,
        pad_token_id=2, routed_scaling_factor=1.5)),
    "llama4": ("Llama4TextConfig", "Llama4ForCausalLM", dict(
        num_local_experts=6, intermediate_size_mlp=96, num_hidden_layers=4, interleave_moe_layer_step=2,
        head_dim=16, no_rope_layers=[1, 1, 1, 0])),
    "gpt-oss": ("GptOssConfig", "GptOssForCausalLM", dict(
        num_local_experts=6, num_experts_per_tok=2, intermediate_size=96, head_dim=16, sliding_window=16,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_scaling={**_YARN, "factor": 32.0, "original_max_position_embeddings": 64, "truncate": False})),
    "deepseek2": ("DeepseekV2Config", "DeepseekV2ForCausalLM", dict(
        n_routed_experts=6, n_shared_experts=2, num_experts_per_tok=2, first_k_dense_replace=1,
        moe_intermediate_size=100, intermediate_size=96, q_lora_rank=None, kv_lora_rank=32, qk_nope_head_dim=16,
        qk_rope_head_dim=16, v_head_dim=16, num_key_value_heads=4, topk_method="greedy", n_group=1, topk_group=1,
        rope_scaling={**_YARN, "mscale": 0.707, "mscale_all_dim": 0.707})),
    "deepseek2-v3": ("DeepseekV3Config", "DeepseekV3ForCausalLM", dict(
        n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, first_k_dense_replace=1,
        moe_intermediate_size=100, intermediate_size=96, q_lora_rank=24, kv_lora_rank=32, qk_nope_head_dim=16,
        qk_rope_head_dim=16, v_head_dim=16, num_key_value_heads=4, n_group=4, topk_group=2,
        rope_scaling={**_YARN, "mscale": 1.0, "mscale_all_dim": 1.0})),
}


def _build_fresh(arch: str, dest: Path, shared: Path) -> None:
    import torch
    import transformers

    cfg_name, model_name, extra = FRESH[arch]
    cfg = getattr(transformers, cfg_name)(**{
        **dict(vocab_size=49152, hidden_size=64, intermediate_size=100, num_hidden_layers=3, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False), **extra})
    torch.manual_seed(7)
    model = getattr(transformers, model_name)(cfg).to(torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(dest, safe_serialization=True)
    tiny = shared / "convert2" / arch / f"tiny-{arch}"
    if arch == "ernie4_5-moe":
        (dest / "tokenizer.model").symlink_to(shared / "convert2" / "_spm" / "tokenizer.model")
    else:
        (dest / "tokenizer.json").symlink_to(shared / "convert" / "_tokenizer" / "tokenizer.json")
    (dest / "tokenizer_config.json").write_text((tiny / "tokenizer_config.json").read_text())
    if arch == "phimoe":  # transformers names the class PhimoeForCausalLM, llama.cpp PhiMoEForCausalLM
        config = json.loads((dest / "config.json").read_text())
        (dest / "config.json").write_text(json.dumps({**config, "architectures": ["PhiMoEForCausalLM"]}, indent=2))


@pytest.mark.slow
@pytest.mark.parametrize("outtype", ["bf16", "q8_0"])
@pytest.mark.parametrize("arch", sorted(FRESH))
def test_moe_byte_identical_to_llama_cpp_on_fresh_checkpoints(shared_dir: Path, tmp_path: Path, arch: str,
                                                              outtype: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("sentencepiece")  # the reference imports it for every vocabulary
    if not REFERENCE.is_file():
        pytest.skip(f"llama.cpp's converter not found at {REFERENCE} (set LLAMA_CPP_CONVERTER)")
    src = tmp_path / f"rand-{arch}"
    _build_fresh(arch, src, shared_dir)
    ref = tmp_path / "ref.gguf"
    env = {**os.environ, "PYTHONPATH": str(REFERENCE.parent / "gguf-py")}
    res = subprocess.run([sys.executable, str(REFERENCE), str(src), "--outfile", str(ref), "--outtype", outtype],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    out = convert(src, tmp_path / "mine.gguf", outtype, progress=False)
    assert out.read_bytes() == ref.read_bytes()
