"""KL-divergence base files: llama-perplexity's layout, read and written, and its statistics."""
from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from llmtk.errors import InputError
from llmtk.evals import logprobs as lp
from llmtk.evals.perplexity import KldBase, KldStats, run_kl_divergence, run_perplexity


def _decoded_logprobs(base: KldBase, chunk: int) -> np.ndarray:
    """The base file's uint16 log-probs of one chunk turned back into float log-probs."""
    rows = np.ascontiguousarray(base.logprobs[chunk])
    head = rows[:, :4].copy().view(np.float32)
    q = rows[:, 4:4 + base.n_vocab].astype(np.float32)
    return (head[:, :1] * q + head[:, 1:2]).astype(np.float32)


@pytest.fixture(scope="module")
def llamacpp_base(shared_dir):
    return KldBase.open(shared_dir / "llamacpp" / "smollm2" / "kld" / "smollm2-f16-c128.kld")


def test_reads_llamacpp_base_file(llamacpp_base):
    b = llamacpp_base
    assert (b.n_ctx, b.n_vocab, b.n_chunk) == (128, 49152, 2)
    assert b.logprobs.shape == (2, 63, lp.n_vocab_padded(49152))
    assert 0 <= b.tokens.min() and b.tokens.max() < b.n_vocab


def test_base_statistics_match_llamacpp_log(llamacpp_base):
    """PPL(base) depends only on the file: llama-perplexity's Q4_K_M.log says 23.652841 ± 5.497051."""
    b = llamacpp_base
    logits_by_chunk = [_decoded_logprobs(b, c) for c in range(b.n_chunk)]
    first = b.n_ctx // 2

    def logits_fn(chunk):
        c = next(i for i in range(b.n_chunk) if np.array_equal(chunk[1:], b.tokens[i * b.n_ctx + 1:(i + 1) * b.n_ctx]))
        out = np.zeros((b.n_ctx, b.n_vocab), np.float32)
        out[first:b.n_ctx - 1] = logits_by_chunk[c]
        return out

    res = run_kl_divergence(logits_fn, b, bos_id=None)  # SmolLM2 adds no BOS
    k = res.kld
    assert k.count == 2 * 63
    assert k.ppl_base == pytest.approx(23.652841, abs=5e-6)
    assert k.ppl_base_stderr == pytest.approx(5.497051, abs=5e-6)
    # the model here *is* the decoded base: same top token, and a divergence only from the file's
    # clipping of log-probs below max-16 (49152 clipped tokens carry ~e^-16 each)
    assert k.mean < 5e-3 and k.same_top_p == 1.0
    assert k.ppl == pytest.approx(k.ppl_base, rel=1e-2)


def test_written_base_file_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    n_ctx, n_vocab = 16, 37
    tokens = rng.integers(0, n_vocab, size=3 * n_ctx + 5).astype(np.int32)
    table = rng.normal(0, 1, size=(n_vocab, n_vocab))  # range < 16: no clipping.astype(np.float32)

    def logits_fn(chunk):
        return table[chunk]

    path = tmp_path / "base.kld"
    res = run_perplexity(logits_fn, tokens, n_ctx=n_ctx, bos_id=0, kld_base_out=path)
    assert res.n_chunks == 3 and res.n_tokens_scored == 3 * (n_ctx - 1 - n_ctx // 2)
    raw = path.read_bytes()
    assert raw[:8] == b"_logits_" and struct.unpack("<iii", raw[8:20]) == (n_ctx, n_vocab, 3)
    nv = lp.n_vocab_padded(n_vocab)
    assert len(raw) == 20 + 4 * n_ctx * 3 + 2 * nv * 3 * (n_ctx - 1 - n_ctx // 2)
    base = KldBase.open(path)
    assert np.array_equal(base.tokens, tokens[:3 * n_ctx])
    same = run_kl_divergence(logits_fn, base, bos_id=0)
    assert same.kld.same_top_p == 1.0 and same.kld.mean < 1e-4  # uint16 rounding only
    assert same.kld.ppl == pytest.approx(res.ppl, rel=1e-6)
    assert same.kld.ppl_base == pytest.approx(res.ppl, rel=1e-3)  # uint16 log-prob rounding

    shifted = run_kl_divergence(lambda ch: table[ch] * np.float32(0.5), base, bos_id=0)
    assert shifted.kld.mean > 0.01 and shifted.kld.ppl_ratio != 1.0


def test_stats_agree_with_plain_numpy():
    rng = np.random.default_rng(1)
    n = 500
    nll = rng.gamma(2.0, 1.0, n).astype(np.float32)
    nll_base = (nll + rng.normal(0, 0.1, n)).astype(np.float32)
    kld = rng.gamma(0.5, 0.05, n)
    dp = rng.normal(0, 0.05, n).astype(np.float32)
    same = rng.random(n) < 0.9
    s = KldStats.from_tokens(nll, nll_base, kld, dp, same)
    assert s.ppl == pytest.approx(math.exp(nll.astype(np.float64).mean()), rel=1e-12)
    assert s.ppl_stderr == pytest.approx(s.ppl * nll.astype(np.float64).std() / math.sqrt(n - 1), rel=1e-9)
    assert s.mean == pytest.approx(kld.mean(), rel=1e-12)
    assert s.median == pytest.approx(np.median(kld.astype(np.float32)), rel=1e-6)
    assert s.p99 == pytest.approx(np.percentile(kld.astype(np.float32), 99.0), rel=1e-5)
    assert s.rms_dp == pytest.approx(math.sqrt((dp.astype(np.float64) ** 2).mean()), rel=1e-9)
    assert s.same_top_p == pytest.approx(same.mean())
    assert s.cor_ln_ppl == pytest.approx(np.corrcoef(nll, nll_base)[0, 1], abs=1e-2)
    text = s.format_llamacpp()
    assert "Mean    KLD:" in text and "Same top p:" in text and "99.0%   KLD:" in text and " 5.0%   KLD:" in text


@pytest.mark.parametrize("content, problem", [
    (b"", "does not look like"),
    (b"_notlog_" + struct.pack("<iii", 16, 10, 1), "does not look like"),
    (b"_logits_" + struct.pack("<iii", 16, 10, 1), "truncated"),
    (b"_logits_" + struct.pack("<iii", -5, 10, 1), "implausible"),
])
def test_bad_base_files_are_clear_errors(tmp_path, content, problem):
    p = tmp_path / "bad.kld"
    p.write_bytes(content)
    with pytest.raises(InputError, match=problem):
        KldBase.open(p)


def test_too_short_text_is_a_clear_error():
    with pytest.raises(InputError, match="at least 1024 tokens"):
        run_perplexity(lambda t: np.zeros((len(t), 4), np.float32), np.zeros(100, np.int32), n_ctx=512)


def test_smollm2_forward_agrees_with_llamacpp_base(llamacpp_base, smollm2_path):
    """Our forward pass of SmolLM2 against llama-perplexity's F16 log-probs (2 chunks of 128).

    The base is llama.cpp's F16 made from the same Q4_1 weights, so only float rounding separates
    them: mean KLD must stay below 1e-4 nats, every top token agree, PPL within 0.1%.
    """
    from llmtk.model import load_model

    # exact float32 activations: ggml would round them to Q8_1 for this Q4_1 file, not for the F16
    with load_model(smollm2_path, quantize_activations=False) as model:
        res = run_kl_divergence(model.forward, llamacpp_base, bos_id=None)
    k = res.kld
    assert k.mean < 1e-4
    assert k.same_top_p == 1.0
    assert k.ppl == pytest.approx(23.652841, rel=1e-3)


def test_kld_chunk_table_has_llama_perplexity_layout(shared_dir):
    """Given the figures of a line of llama-perplexity's per-chunk table, llmtk prints that line."""
    import dataclasses

    from llmtk.evals.perplexity import KldStats, PerplexityResult

    log = (shared_dir / "llamacpp" / "smollm2" / "perplexity" / "Q2_K.log").read_text().splitlines()
    at = next(i for i, line in enumerate(log) if line.startswith("chunk             PPL"))
    rng = np.random.default_rng(0)
    n = 64
    some = KldStats.from_tokens(rng.random(n).astype(np.float32), rng.random(n).astype(np.float32),
                                rng.random(n), rng.random(n).astype(np.float32) - 0.5, rng.random(n) > 0.5)
    chunks = []
    for line in log[at + 1:at + 4]:
        v = [float(x) for x in line.replace("%", "").replace("±", " ").split()[1:]]
        chunks.append(dataclasses.replace(some, ppl=v[0], ppl_stderr=v[1], ln_ppl_ratio=v[2], ln_ppl_ratio_stderr=v[3],
                                          mean=v[4], mean_stderr=v[5], rms_dp=v[6] / 100, rms_dp_stderr=v[7] / 100,
                                          same_top_p=v[8] / 100, same_top_p_stderr=v[9] / 100))
    res = PerplexityResult(1.0, 0.0, 128, 3, 3 * 63, [1.0] * 3, np.zeros(1), kld=some, kld_chunks=chunks)
    assert res.kld_chunk_table().splitlines() == log[at:at + 4]


def test_kld_chunk_table_runs_up_to_the_final_statistics(tmp_path):
    rng = np.random.default_rng(1)
    n_ctx, n_vocab = 16, 37
    tokens = rng.integers(0, n_vocab, size=3 * n_ctx).astype(np.int32)
    table = rng.normal(0, 1, size=(n_vocab, n_vocab)).astype(np.float32)
    path = tmp_path / "base.kld"
    run_perplexity(lambda ch: table[ch], tokens, n_ctx=n_ctx, bos_id=0, kld_base_out=path)
    res = run_kl_divergence(lambda ch: table[ch] * np.float32(0.7), KldBase.open(path), bos_id=0)
    assert len(res.kld_chunks) == 3
    first, last = res.kld_chunks[0], res.kld_chunks[-1]
    assert first.count == n_ctx - 1 - n_ctx // 2 and last.count == res.kld.count
    assert (last.mean, last.same_top_p, last.ppl) == (res.kld.mean, res.kld.same_top_p, res.kld.ppl)
    lines = res.kld_chunk_table().splitlines()
    assert len(lines) == 4 and lines[3].startswith("   3    ")
