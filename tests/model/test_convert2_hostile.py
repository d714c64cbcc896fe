"""Hostile metadata of the dense architectures' own keys (granite's multipliers, cohere's logit
scale and window, gemma2's soft-capping, LayerNorm epsilons, apertus' per-layer xIELU values)
and tensors (per-head q/k norms): refused with one LlmtkError line naming the file, never a
crash inside the forward pass. The seeds are the ../shared/convert2 fixtures converted by llmtk."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from llmtk.errors import LlmtkError
from llmtk.model import load_model
from oracle_helpers import converted_gguf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
from engine import ARR, BOOL, F32, STR, U32, parse_gguf


def _set(key: str, vt: int, value, it=None):
    def edit(g):
        for e in g.kv:
            if e[0] == key:
                e[1], e[2], e[3] = vt, it, value
                return
        g.kv.append([key, vt, it, value])
    return edit


def _drop(key: str):
    return lambda g: g.kv.remove(next(e for e in g.kv if e[0] == key))


def _reshape(name: str, ne):
    def edit(g):
        next(t for t in g.tensors if t[0] == name)[1] = ne
    return edit


CASES = {
    "granite-no-logit-scale": ("granite", _drop("granite.logit_scale"), "granite.logit_scale"),
    "granite-zero-logit-scale": ("granite", _set("granite.logit_scale", F32, 0.0), "granite.logit_scale"),
    "granite-rope-finetuned-text": ("granite", _set("granite.rope.scaling.finetuned", STR, "yes"),
                                    "rope.scaling.finetuned"),
    "granite-residual-nan": ("granite", _set("granite.residual_scale", F32, float("nan")), "residual_scale"),
    "cohere2-no-window": ("cohere2", _drop("cohere2.attention.sliding_window"), "sliding_window"),
    "cohere2-zero-window": ("cohere2", _set("cohere2.attention.sliding_window", U32, 0), "sliding_window"),
    "command-r-logit-scale-inf": ("command-r", _set("command-r.logit_scale", F32, float("inf")), "logit_scale"),
    "olmo2-2d-q-norm": ("olmo2", _reshape("blk.0.attn_q_norm.weight", [8, 4]), "attn_q_norm"),
    "starcoder2-no-layernorm-eps": ("starcoder2", _drop("starcoder2.attention.layer_norm_epsilon"),
                                    "layer_norm_epsilon"),
    "starcoder2-norm-bias-shape": ("starcoder2", _reshape("blk.1.ffn_norm.bias", [16]), "ffn_norm.bias"),
    "gemma2-negative-softcap": ("gemma2", _set("gemma2.attn_logit_softcapping", F32, -1.0), "softcapping"),
    "glm4-mrope-sections": ("glm4", _set("glm4.rope.dimension_sections", ARR, [2, 2, 0, 0], U32),
                            "rope.dimension_sections"),
    "apertus-xielu-short": ("apertus", _set("xielu.alpha_n", ARR, [0.5], F32), "xielu.alpha_n"),
    "apertus-xielu-nan": ("apertus", _set("xielu.beta", ARR, [0.5, float("nan")], F32), "xielu.beta"),
    "apertus-xielu-text": ("apertus", _set("xielu.eps", STR, "-1e-6"), "xielu.eps"),
    "apertus-xielu-missing": ("apertus", _drop("xielu.alpha_p"), "xielu.alpha_p"),
}


@pytest.fixture(scope="module")
def seeds(shared_dir: Path, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile2")
    done: dict[str, bytes] = {}

    def get(arch: str) -> bytes:
        if arch not in done:
            done[arch] = converted_gguf(shared_dir, arch, root)[1].read_bytes()
        return done[arch]
    return get


@pytest.mark.parametrize("case", list(CASES))
def test_dense2_metadata_hostile(seeds, tmp_path: Path, case: str) -> None:
    arch, edit, names = CASES[case]
    g = parse_gguf(seeds(arch))
    edit(g)
    p = tmp_path / "m.gguf"
    p.write_bytes(g.pack())
    with pytest.raises(LlmtkError) as e, load_model(p, threads=1) as m:
        m.forward(np.array([1, 2, 3], np.int32))
    msg = str(e.value)
    assert str(p) in msg and "\n" not in msg and names in msg, msg


@pytest.mark.parametrize("arch", ["granite", "apertus"])
def test_dense2_seed_runs(seeds, tmp_path: Path, arch: str) -> None:
    """The unedited seeds load and run (so each refusal above is the edit's doing)."""
    p = tmp_path / "m.gguf"
    p.write_bytes(parse_gguf(seeds(arch)).pack())
    with load_model(p, threads=1) as m:
        assert np.isfinite(m.forward(np.array([1, 2, 3], np.int32))).all()


def test_granite_rope_finetuned_false_turns_rope_off(seeds, tmp_path: Path) -> None:
    """granite.rope.scaling.finetuned false: llama.cpp's granite graph skips RoPE in every layer,
    so the logits change, and equal a run with RoPE dropped by hand."""
    toks = np.arange(1, 20, dtype=np.int32)
    p, q = tmp_path / "rope.gguf", tmp_path / "nope.gguf"
    p.write_bytes(parse_gguf(seeds("granite")).pack())
    g = parse_gguf(seeds("granite"))
    _set("granite.rope.scaling.finetuned", BOOL, False)(g)
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
