"""PPL and KL divergence of SmolLM2's quantizations against llama-perplexity's own logs (slow).

Reproduces ../shared/llamacpp/smollm2/perplexity/*.log: the F16 base is made from the Q4_1
model with `quantize --allow-requantize F16`, its log-probs saved as a KL-divergence base on the
tutorial text (-c 512 --chunks 16), then each type is quantized by llmtk (with the shared imatrix
for the `-imatrix` logs) and compared with that base. Tolerances (issue 9): PPL within 0.1% for
F16, BF16 and Q8_0 and 0.5% elsewhere; mean KLD within 5% relative (an absolute 2e-5 floor for
the near-lossless types, whose mean KLD is itself a few 1e-5).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import absent_reference, shared_path

from llmtk.quantize.rules import FILE_TYPES

PPL_DIR = shared_path("llamacpp", "smollm2", "perplexity")


def _log_stems() -> list[str]:
    return sorted(p.stem for p in PPL_DIR.glob("*.log") if p.stem != "base")


# the registry's file types, plain and with the imatrix, that have a llama-perplexity log
LOGS = [s for name in FILE_TYPES for s in (name, f"{name}-imatrix") if s in set(_log_stems())]
N_CTX, N_CHUNKS = 512, 16
NEAR_LOSSLESS = {"F16", "BF16", "Q8_0"}
# Known gaps, kept visible instead of loosening the bounds (see docs/perplexity.md): 8-bit block
# rounding of the matmul inputs amplifies float32 differences upstream, so these agree only with
# an implementation that reproduces ggml's float arithmetic bit for bit. llama.cpp itself moves
# Q8_0 from 11.7160 to 11.7023 (0.12%) with -fa off; 1-3 ulp perturbations of llmtk's activations
# spread it over 11.681-11.702.
KNOWN_GAPS = {
    "Q8_0": "8-bit activation rounding amplifies float noise: 0.2-0.3% below llama-perplexity, bound 0.1%",
    # collapsed models (PPL ~1e6, mean KLD 11-12 nats): the same noise amplified further
    "TQ1_0": "collapsed model (PPL ~1e6): PPL 5-13% off, float noise amplified",
    "TQ2_0": "collapsed model (PPL ~1e6): PPL 5-13% off, float noise amplified",
    "Q2_0": "collapsed model (PPL ~3.6e6): PPL 5-11% off, float noise amplified",
}


def parse_log(path: Path) -> dict[str, float]:
    text = path.read_text(encoding="utf-8", errors="replace")
    out = {}
    m = re.search(r"Final estimate: PPL = ([\d.]+) \+/- ([\d.]+)", text)
    if m:
        out["ppl"] = float(m.group(1))
    m = re.search(r"Mean PPL\(Q\)\s+:\s+([\d.]+)", text)
    if m:
        out["ppl"] = float(m.group(1))
    m = re.search(r"Mean PPL\(base\)\s+:\s+([\d.]+)", text)
    if m:
        out["ppl_base"] = float(m.group(1))
    m = re.search(r"Mean\s+KLD:\s+(-?[\d.]+)", text)
    if m:
        out["mean_kld"] = float(m.group(1))
    m = re.search(r"Same top p:\s+([\d.]+)", text)
    if m:
        out["same_top_p"] = float(m.group(1)) / 100
    return out


@pytest.fixture(scope="module")
def smollm2_base(tmp_path_factory, shared_dir, smollm2_path):
    """(F16 model, its KLD base file, its PPL) made the way the shared logs were made."""
    from llmtk.evals.runner import ModelRunner, evaluate
    from llmtk.quantize import quantize_model

    work = tmp_path_factory.mktemp("smollm2-ppl")
    f16 = work / "smollm2-f16.gguf"
    quantize_model(smollm2_path, f16, "F16", allow_requantize=True)
    kld = work / "base.kld"
    text = (shared_dir / "text" / "pydoc-tutorial.txt").read_text(encoding="utf-8")
    res = evaluate(f16, text, n_ctx=N_CTX, n_chunks=N_CHUNKS, kld_base_out=kld, runner=ModelRunner(f16))
    return f16, kld, res


@pytest.mark.slow
def test_base_ppl_matches_llamacpp(smollm2_base, shared_dir):
    ref = parse_log(shared_dir / "llamacpp" / "smollm2" / "perplexity" / "base.log")
    _, _, res = smollm2_base
    assert res.ppl == pytest.approx(ref["ppl"], rel=1e-3)  # 11.6303


def test_every_log_is_a_registered_file_type(shared_dir):
    """Each llama-perplexity log names a file type of the registry (so LOGS tests it), and parses."""
    stems = _log_stems()
    assert stems, f"no llama-perplexity logs in {PPL_DIR}"
    assert [s for s in stems if s not in LOGS] == [], "logs naming a file type llmtk.quantize.rules does not know"
    assert sorted(KNOWN_GAPS) == sorted(set(KNOWN_GAPS) & set(LOGS)), "KNOWN_GAPS names a type without a log"
    for stem in ["base", *stems]:
        keys = {"ppl"} if stem == "base" else {"ppl", "ppl_base", "mean_kld", "same_top_p"}
        assert keys <= parse_log(PPL_DIR / f"{stem}.log").keys(), f"{stem}.log: figures not found"


# a known gap is expected to fail its comparison (AssertionError), never to crash or be unsupported
@pytest.mark.slow
@pytest.mark.parametrize("log_name", [pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN_GAPS[n], raises=AssertionError,
                                                                           strict=False))
                                      if n in KNOWN_GAPS else n for n in LOGS] or absent_reference(PPL_DIR))
def test_quantized_ppl_and_kld_match_llamacpp(log_name, smollm2_base, shared_dir, tmp_path):
    from llmtk.evals.runner import ModelRunner, evaluate
    from llmtk.quantize import quantize_model

    ref = parse_log(shared_dir / "llamacpp" / "smollm2" / "perplexity" / f"{log_name}.log")
    f16, kld, _ = smollm2_base
    qtype, imat = log_name.removesuffix("-imatrix"), log_name.endswith("-imatrix")
    imatrix = shared_dir / "llamacpp" / "smollm2" / "imatrix.gguf" if imat else None
    out = tmp_path / f"{log_name}.gguf"
    quantize_model(f16, out, qtype, imatrix=imatrix)
    res = evaluate(out, None, kld_base_in=kld, runner=ModelRunner(out))
    k = res.kld
    print(f"{log_name}: PPL {k.ppl:.4f} vs {ref['ppl']:.4f} ({k.ppl / ref['ppl'] - 1:+.3%}), "
          f"mean KLD {k.mean:.6f} vs {ref['mean_kld']:.6f} ({k.mean / ref['mean_kld'] - 1:+.1%}), "
          f"same top {k.same_top_p:.4f} vs {ref['same_top_p']:.4f}")
    rel = 1e-3 if qtype in NEAR_LOSSLESS else 5e-3
    assert k.ppl == pytest.approx(ref["ppl"], rel=rel), f"PPL {k.ppl:.4f} vs llama.cpp {ref['ppl']:.4f}"
    assert k.ppl_base == pytest.approx(ref["ppl_base"], rel=1e-3)
    assert k.mean == pytest.approx(ref["mean_kld"], rel=0.05, abs=2e-5), \
        f"mean KLD {k.mean:.6f} vs llama.cpp {ref['mean_kld']:.6f}"
    assert abs(k.same_top_p - ref["same_top_p"]) < 0.01 + 2 * np.sqrt(ref["same_top_p"] * (1 - ref["same_top_p"]) / k.count)
