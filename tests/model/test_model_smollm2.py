"""llmtk.model on real weights: SmolLM2-135M (Q4_1) against llama-perplexity's per-chunk PPL.

The references are llama-perplexity's running estimates `[1]12.0796,[2]10.4716,...` for the F16
file (dequantized from this Q4_1, rounded to F16) at -c 512 (../shared/llamacpp/smollm2/
perplexity/base.log); the token ids are llama-tokenize's for the start of the tutorial text.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from llmtk.model import load_model

N_CTX = 512
LLAMA_CPP_RUNNING_PPL = [12.0796, 10.4716, 11.4373, 13.0162]
PPL_REL_TOL = 1e-3  # the bound for F16; Q4_1 vs its F16 rounding differs by ~2e-4


@pytest.fixture(scope="module")
def tutorial_ids(shared_dir):
    cases = json.loads((shared_dir / "llamacpp" / "smollm2" / "tokens.json").read_text())["cases"]
    text = (shared_dir / "text" / "pydoc-tutorial.txt").read_text(encoding="utf-8")
    ids = next(c["ids"] for c in cases if len(c["text"]) > 10000 and text.startswith(c["text"][:200]))
    return np.array(ids, dtype=np.int32)


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    # the references are the F16 file's: this Q4_1 holds the same values, but ggml would multiply
    # it with Q8_1-rounded activations; exact float32 activations reproduce the F16 run
    with load_model(smollm2_path, threads=1, quantize_activations=False) as m:
        yield m


def _running_ppl(model, ids: np.ndarray, n_chunks: int) -> list[float]:
    # llama-perplexity: each chunk scored on its second half, no BOS (add_bos_token is false)
    nll, count, out = 0.0, 0, []
    for c in range(n_chunks):
        chunk = ids[c * N_CTX:(c + 1) * N_CTX]
        logits = model.forward(chunk).astype(np.float64)[N_CTX // 2:N_CTX - 1]
        m = logits.max(axis=1)
        lse = np.log(np.exp(logits - m[:, None]).sum(axis=1)) + m
        nll += float((lse - logits[np.arange(len(logits)), chunk[N_CTX // 2 + 1:]]).sum())
        count += len(logits)
        out.append(float(np.exp(nll / count)))
    return out


def test_smollm2_metadata(smollm2):
    hp = smollm2.hp
    assert (hp.arch, hp.n_vocab, hp.n_embd, hp.n_layer, hp.n_head, hp.n_head_kv) == ("llama", 49152, 576, 30, 9, 3)


def test_smollm2_first_chunk_perplexity_matches_llama_cpp(smollm2, tutorial_ids):
    (ppl,) = _running_ppl(smollm2, tutorial_ids, 1)
    assert abs(ppl / LLAMA_CPP_RUNNING_PPL[0] - 1) < PPL_REL_TOL, ppl


def test_smollm2_incremental_decoding_equals_full_forward(smollm2, tutorial_ids):
    toks = tutorial_ids[:40]
    full = smollm2.forward(toks)
    cache = smollm2.new_cache(64)
    inc = np.concatenate([smollm2.forward(toks[:32], cache)] + [smollm2.forward(toks[i:i + 1], cache)
                                                                 for i in range(32, 40)])
    # sgemv vs sgemm summation order: float32 rounding only
    assert np.abs(inc - full).max() / np.abs(full).max() < 1e-4


@pytest.mark.slow
def test_smollm2_running_perplexity_matches_llama_cpp(smollm2, tutorial_ids):
    got = _running_ppl(smollm2, tutorial_ids, len(LLAMA_CPP_RUNNING_PPL))
    for g, ref in zip(got, LLAMA_CPP_RUNNING_PPL):
        assert abs(g / ref - 1) < PPL_REL_TOL, (got, LLAMA_CPP_RUNNING_PPL)


# the bounds on the final PPL (16 chunks of 512) against llama-perplexity on
# llama-quantize's file of the same type ("Mean PPL(Q)" of perplexity/<TYPE>.log)
TYPE_PPL_REL_TOL = {"F16": 1e-3, "Q8_0": 1e-3, "Q4_K_M": 5e-3}
Q8_0_GAP = pytest.mark.xfail(reason="8-bit activation rounding amplifies float noise: 0.2-0.3% below "
                                    "llama-perplexity (docs/perplexity.md)", strict=False)


@pytest.fixture(scope="module")
def smollm2_f16(smollm2_path, tmp_path_factory):
    """The F16 file the references were quantized from (the Q4_1 dequantized, rounded to F16)."""
    from llmtk.quantize import quantize_model

    out = tmp_path_factory.mktemp("smollm2") / "smollm2-f16.gguf"
    quantize_model(smollm2_path, out, "F16", allow_requantize=True)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("qtype", [pytest.param(t, marks=Q8_0_GAP) if t == "Q8_0" else t for t in sorted(TYPE_PPL_REL_TOL)])
def test_requantized_smollm2_perplexity_matches_llama_cpp(shared_dir, smollm2_f16, tmp_path, qtype):
    from llmtk.quantize import quantize_model
    from llmtk.tokenizer import Tokenizer

    log = (shared_dir / "llamacpp" / "smollm2" / "perplexity" / f"{qtype}.log").read_text()
    ref = float(re.search(r"Mean PPL\(Q\)\s*:\s*([0-9.]+)", log).group(1))
    text = (shared_dir / "text" / "pydoc-tutorial.txt").read_text(encoding="utf-8")
    ids = np.array(Tokenizer.from_gguf(smollm2_f16).encode(text), dtype=np.int32)
    out = smollm2_f16
    if qtype != "F16":
        out = tmp_path / f"smollm2-{qtype}.gguf"
        quantize_model(smollm2_f16, out, qtype)
    with load_model(out, threads=1) as m:
        got = _running_ppl(m, ids, 16)[-1]
    assert abs(got / ref - 1) < TYPE_PPL_REL_TOL[qtype], (qtype, got, ref)
