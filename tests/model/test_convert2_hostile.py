"""Hostile metadata of the dense architectures' own keys (granite's multipliers, cohere's logit
scale and window, gemma2's soft-capping, LayerNorm epsilons, apertus' per-layer xIELU values)
and tensors (per-head q/k norms): refused with one LlmtkError line naming the file, never a
crash inside the forward pass. The seeds are the ../shared/convert2 fixtures converted by llmtk."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hostile_helpers import assert_refused, assert_runs, drop_kv, parse_gguf, reshape, seed_files, set_kv

from llmtk.model import load_model

from engine import ARR, BOOL, F32, STR, U32  # noqa: E402  (tests/fuzz, put on sys.path by hostile_helpers)


CASES = {
    "granite-no-logit-scale": ("granite", drop_kv("granite.logit_scale"), "granite.logit_scale"),
    "granite-zero-logit-scale": ("granite", set_kv("granite.logit_scale", F32, 0.0), "granite.logit_scale"),
    "granite-rope-finetuned-text": ("granite", set_kv("granite.rope.scaling.finetuned", STR, "yes"),
                                    "rope.scaling.finetuned"),
    "granite-residual-nan": ("granite", set_kv("granite.residual_scale", F32, float("nan")), "residual_scale"),
    "cohere2-no-window": ("cohere2", drop_kv("cohere2.attention.sliding_window"), "sliding_window"),
    "cohere2-zero-window": ("cohere2", set_kv("cohere2.attention.sliding_window", U32, 0), "sliding_window"),
    "command-r-logit-scale-inf": ("command-r", set_kv("command-r.logit_scale", F32, float("inf")), "logit_scale"),
    "olmo2-2d-q-norm": ("olmo2", reshape("blk.0.attn_q_norm.weight", [8, 4]), "attn_q_norm"),
    "starcoder2-no-layernorm-eps": ("starcoder2", drop_kv("starcoder2.attention.layer_norm_epsilon"),
                                    "layer_norm_epsilon"),
    "starcoder2-norm-bias-shape": ("starcoder2", reshape("blk.1.ffn_norm.bias", [16]), "ffn_norm.bias"),
    "gemma2-negative-softcap": ("gemma2", set_kv("gemma2.attn_logit_softcapping", F32, -1.0), "softcapping"),
    "glm4-mrope-sections": ("glm4", set_kv("glm4.rope.dimension_sections", ARR, [2, 2, 0, 0], U32),
                            "rope.dimension_sections"),
    "apertus-xielu-short": ("apertus", set_kv("xielu.alpha_n", ARR, [0.5], F32), "xielu.alpha_n"),
    "apertus-xielu-nan": ("apertus", set_kv("xielu.beta", ARR, [0.5, float("nan")], F32), "xielu.beta"),
    "apertus-xielu-text": ("apertus", set_kv("xielu.eps", STR, "-1e-6"), "xielu.eps"),
    "apertus-xielu-missing": ("apertus", drop_kv("xielu.alpha_p"), "xielu.alpha_p"),
}


@pytest.fixture(scope="module")
def seeds(shared_dir: Path, tmp_path_factory):
    return seed_files(shared_dir, tmp_path_factory.mktemp("hostile2"))


@pytest.mark.parametrize("case", list(CASES))
def test_dense2_metadata_hostile(seeds, tmp_path: Path, case: str) -> None:
    arch, edit, names = CASES[case]
    assert_refused(seeds(arch), edit, tmp_path, names)


@pytest.mark.parametrize("arch", ["granite", "apertus"])
def test_dense2_seed_runs(seeds, tmp_path: Path, arch: str) -> None:
    """The unedited seeds load and run (so each refusal above is the edit's doing)."""
    assert_runs(seeds(arch), tmp_path)


def test_granite_rope_finetuned_false_turns_rope_off(seeds, tmp_path: Path) -> None:
    """granite.rope.scaling.finetuned false: llama.cpp's granite graph skips RoPE in every layer,
    so the logits change, and equal a run with RoPE dropped by hand."""
    toks = np.arange(1, 20, dtype=np.int32)
    p, q = tmp_path / "rope.gguf", tmp_path / "nope.gguf"
    p.write_bytes(parse_gguf(seeds("granite")).pack())
    g = parse_gguf(seeds("granite"))
    set_kv("granite.rope.scaling.finetuned", BOOL, False)(g)
    q.write_bytes(g.pack())
    with load_model(p, threads=1) as a, load_model(q, threads=1) as b:
        assert b.hp.use_rope == [False] * b.hp.n_layer
        with_rope, without = a.forward(toks), b.forward(toks)
        a.hp.use_rope = [False] * a.hp.n_layer
        by_hand = a.forward(toks)
    assert np.abs(with_rope - without).max() > 1e-2
    assert np.array_equal(without, by_hand)


def test_xielu_keys_agree_with_the_gguf_package() -> None:
    gguf = pytest.importorskip("gguf")
    from llmtk.ggufio.constants import Key

    assert (Key.XIELU_ALPHA_N, Key.XIELU_ALPHA_P, Key.XIELU_BETA, Key.XIELU_EPS) == (
        gguf.Keys.xIELU.ALPHA_N, gguf.Keys.xIELU.ALPHA_P, gguf.Keys.xIELU.BETA, gguf.Keys.xIELU.EPS)
