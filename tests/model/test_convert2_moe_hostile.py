"""Hostile metadata and tensors of the MoE/MLA architectures' own keys (expert groups, gating
function, weight normalisation, MLA sizes, YaRN's original context, selection bias, sinks):
refused with one LlmtkError line naming the file, never a crash inside the forward pass. The
seeds are the ../shared/convert2 fixtures converted by llmtk."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hostile_helpers import assert_refused, assert_runs, drop_kv, parse_gguf, reshape, seed_files, set_kv

from llmtk.model import load_model

from engine import STR, U32  # noqa: E402  (tests/fuzz, put on sys.path by hostile_helpers)



CASES = {
    "groups-not-dividing": ("deepseek2-v3", set_kv("deepseek2.expert_group_count", U32, 3), "expert_group_count"),
    "groups-all-used": ("deepseek2-v3", [set_kv("deepseek2.expert_group_count", U32, 2),
                                         set_kv("deepseek2.expert_group_used_count", U32, 2)],
                        "expert_group_used_count"),
    "groups-as-many-as-experts": ("glm4moe", set_kv("glm4moe.expert_group_count", U32, 4), "expert_group_count"),
    "gating-func-unknown": ("glm4moe", set_kv("glm4moe.expert_gating_func", U32, 9), "expert_gating_func"),
    "dots1-no-gating-func": ("dots1", drop_kv("dots1.expert_gating_func"), "expert_gating_func"),
    "weights-norm-text": ("dots1", set_kv("dots1.expert_weights_norm", STR, "yes"), "expert_weights_norm"),
    "mla-two-kv-heads": ("deepseek2", set_kv("deepseek2.attention.head_count_kv", U32, 2), "head_count_kv"),
    "mla-no-kv-rank": ("deepseek2", drop_kv("deepseek2.attention.kv_lora_rank"), "kv_lora_rank"),
    "mla-no-mla-lengths": ("deepseek2", drop_kv("deepseek2.attention.key_length_mla"), "key_length_mla"),
    "mla-k-b-shape": ("deepseek2", reshape("blk.1.attn_k_b.weight", [8, 16, 2]), "attn_k_b"),
    "yarn-no-original-ctx": ("gpt-oss", [drop_kv("gpt-oss.rope.scaling.original_context_length"),
                                         drop_kv("gpt-oss.context_length")], "original_context_length"),
    "sinks-shape": ("gpt-oss", reshape("blk.0.attn_sinks.weight", [3]), "attn_sinks"),
    "probs-bias-shape": ("glm4moe", reshape("blk.1.exp_probs_b.bias", [5]), "exp_probs_b"),
    "shexp-gate-shape": ("qwen2moe", reshape("blk.0.ffn_gate_inp_shexp.weight", [32, 2]), "ffn_gate_inp_shexp"),
    "nextn-all-layers": ("glm4moe", set_kv("glm4moe.nextn_predict_layers", U32, 2), "nextn_predict_layers"),
}


@pytest.fixture(scope="module")
def seeds(shared_dir: Path, tmp_path_factory):
    return seed_files(shared_dir, tmp_path_factory.mktemp("hostile-moe2"))


@pytest.mark.parametrize("case", list(CASES))
def test_moe2_metadata_hostile(seeds, tmp_path: Path, case: str) -> None:
    arch, edits, names = CASES[case]
    assert_refused(seeds(arch), edits, tmp_path, names)


@pytest.mark.parametrize("arch", ["deepseek2-v3", "glm4moe", "dots1", "gpt-oss", "qwen2moe"])
def test_moe2_seed_runs(seeds, tmp_path: Path, arch: str) -> None:
    """The unedited seeds load and run (so each refusal above is the edit's doing)."""
    assert_runs(seeds(arch), tmp_path)


def test_qwen2moe_shared_gate_stored_1d(seeds, tmp_path: Path) -> None:
    """llama-quantize writes qwen2moe's ffn_gate_inp_shexp as {n_embd} where the converter wrote
    {n_embd, 1}; both load and give the same logits."""
    toks = np.array([5, 17, 2000, 9], np.int32)
    g = parse_gguf(seeds("qwen2moe"))
    p2 = tmp_path / "2d.gguf"
    p2.write_bytes(g.pack())
    for t in g.tensors:
        if t[0].endswith("ffn_gate_inp_shexp.weight"):
            t[1] = [t[1][0]]
    p1 = tmp_path / "1d.gguf"
    p1.write_bytes(g.pack())
    with load_model(p2, threads=1) as m2, load_model(p1, threads=1) as m1:
        assert m1.reader.tensors["blk.0.ffn_gate_inp_shexp.weight"].shape == (32,)
        np.testing.assert_array_equal(m1.forward(toks), m2.forward(toks))
