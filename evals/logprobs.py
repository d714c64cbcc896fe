"""Per-token log-softmax statistics exactly as llama-perplexity computes them.

The numba kernels mirror `tools/perplexity/perplexity.cpp`: float32 logits, a float64 sum of
float32 `expf` terms, and (for the KL-divergence base file) llama.cpp's uint16 quantization of the
log-probabilities, so files written here are read by llama-perplexity and vice versa.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

# magic constant of perplexity.cpp's nearest_int (float32 round-to-nearest-even trick)
_MAGIC = np.float32(12582912.0)


def n_vocab_padded(n_vocab: int) -> int:
    """uint16 slots per token in a KL-divergence base file: 2 floats header + even-padded vocab."""
    return 2 * ((n_vocab + 1) // 2) + 4


@njit(cache=True, parallel=True)
def token_nll(logits, targets, nll, target_logit, target_prob):
    """NLL of each row's target, its logit and probability (perplexity.cpp `log_softmax`)."""
    n, n_vocab = logits.shape
    for i in prange(n):
        row = logits[i]
        max_logit = row[0]
        for j in range(1, n_vocab):
            if row[j] > max_logit:
                max_logit = row[j]
        sum_exp = 0.0
        for j in range(n_vocab):
            sum_exp += np.exp(np.float32(row[j] - max_logit))
        tok = targets[i]
        nll[i] = -(np.float64(np.float32(row[tok] - max_logit)) - np.log(sum_exp))
        target_logit[i] = row[tok]
        target_prob[i] = np.float32(np.exp(np.float32(row[tok] - max_logit)) / np.float32(sum_exp))


@njit(cache=True, parallel=True)
def token_nll_and_logprobs_u16(logits, targets, out_u16, nll):
    """NLL per row and the row's log-probs quantized to uint16 (perplexity.cpp, logits-file path).

    `out_u16` is (n, n_vocab_padded): slots 0..3 hold float32 scale and min_log_prob.
    """
    n, n_vocab = logits.shape
    for i in prange(n):
        row = logits[i]
        max_logit = row[0]
        min_logit = row[0]
        for j in range(1, n_vocab):
            v = row[j]
            if v > max_logit:
                max_logit = v
            if v < min_logit:
                min_logit = v
        min_logit = max(min_logit, np.float32(max_logit - np.float32(16.0)))
        sum_exp = 0.0
        for j in range(n_vocab):
            sum_exp += np.exp(np.float32(row[j] - max_logit))
        log_sum_exp = np.float32(np.log(sum_exp))
        min_log_prob = np.float32(np.float32(min_logit - max_logit) - log_sum_exp)
        scale = np.float32(np.float32(max_logit - min_logit) / np.float32(65535.0))
        header = out_u16[i, :4].view(np.float32)
        header[0] = scale
        header[1] = min_log_prob
        q = out_u16[i, 4:]
        if scale != 0:
            inv_scale = np.float32(np.float32(1.0) / scale)
            for j in range(n_vocab):
                if row[j] > min_logit:
                    val = np.float32(np.float32(inv_scale * np.float32(row[j] - min_logit)) + _MAGIC)
                    q[j] = (val.view(np.int32) & 0x007FFFFF) - 0x00400000
                else:
                    q[j] = 0
        else:
            q[:n_vocab] = 0
        for j in range(n_vocab, q.shape[0]):
            q[j] = 0
        nll[i] = np.float64(np.float32(np.float32(max_logit + log_sum_exp) - row[targets[i]]))


@njit(cache=True, parallel=True)
def token_kld(logits, targets, base_u16, nll, nll_base, kld, p_diff, same_top):
    """Per-token NLL, base NLL, KL(base || model), Δp and top-1 agreement (perplexity.cpp).

    `base_u16` rows are the base model's quantized log-probs as stored in the base file.
    """
    n, n_vocab = logits.shape
    for i in prange(n):
        row = logits[i]
        max_logit = row[0]
        imax = 0
        for j in range(1, n_vocab):
            if row[j] > max_logit:
                max_logit = row[j]
                imax = j
        sum_exp = 0.0
        for j in range(n_vocab):
            sum_exp += np.exp(np.float32(row[j] - max_logit))
        log_sum_exp = np.float32(np.log(sum_exp))
        header = base_u16[i, :4].view(np.float32)
        scale = header[0]
        min_log_prob = header[1]
        q = base_u16[i, 4:]
        tok = targets[i]
        nll_i = np.float32(np.float32(max_logit + log_sum_exp) - row[tok])
        nll_b = -np.float32(np.float32(scale * np.float32(q[tok])) + min_log_prob)
        nll[i] = nll_i
        nll_base[i] = nll_b
        shifted_max = np.float32(max_logit + log_sum_exp)
        s = 0.0
        imax_base = -1
        p_log_base_max = np.float32(0.0)
        for j in range(n_vocab):
            p_log_base = np.float32(np.float32(scale * np.float32(q[j])) + min_log_prob)
            if j == 0 or p_log_base > p_log_base_max:
                p_log_base_max = p_log_base
                imax_base = j
            if p_log_base > np.float32(-16.0):
                p_base = np.exp(p_log_base)
                s += np.float32(p_base * np.float32(np.float32(p_log_base - row[j]) + shifted_max))
        kld[i] = s
        same_top[i] = imax == imax_base
        p_diff[i] = np.float32(np.exp(-nll_i) - np.exp(-nll_b))
