"""Perplexity and KL divergence over a token stream, with llama-perplexity's method and statistics.

The text is tokenized once (BOS as the model says), cut into `n_ctx`-token chunks, each chunk's
first token replaced by BOS, and only the second half of each chunk is scored (`n_ctx - 1 -
n_ctx // 2` tokens), so every scored token has at least half a context behind it. The statistics
and their uncertainties are those `tools/perplexity/perplexity.cpp` prints.
"""
from __future__ import annotations

import math
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from llmtk.errors import InputError
from llmtk.outputs import clean_stale_temps, replace_into, temp_path, writing

from . import logprobs as lp

KLD_MAGIC = b"_logits_"
# tokens int32 (n,) -> logits f32 of their last rows (m, n_vocab): all n rows, or only the scored
# half of a chunk (m >= n - n // 2), which is all llama-perplexity computes
LogitsFn = Callable[[np.ndarray], np.ndarray]


def _scored_logits(logits: np.ndarray, n_ctx: int) -> np.ndarray:
    """Rows n_ctx // 2 .. n_ctx - 2 of a chunk's logits, given all its rows or only its last ones."""
    first = n_ctx // 2
    tail = logits[logits.shape[0] - (n_ctx - first):]
    return np.ascontiguousarray(tail[:n_ctx - 1 - first], dtype=np.float32)


def _exp(x: float) -> float:
    """math.exp, but inf instead of OverflowError (a hostile base file can give huge NLLs)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _mean_and_uncertainty(s: float, s2: float, count: int) -> tuple[float, float]:
    if count < 1:
        return 0.0, 0.0
    f = s / count
    df = s2 / count - f * f
    df = math.sqrt(df / (count - 1)) if df > 0 and count > 10 else 0.0
    return f, df


def _covariance(sa: float, sb: float, sab: float, count: int) -> float:
    if count < 10:
        return 0.0
    return (sab / count - (sa / count) * (sb / count)) / (count - 1)


def _percentile(sorted_values: np.ndarray, fraction: float) -> float:
    """perplexity.cpp's linear-interpolated percentile of an ascending array."""
    if fraction <= 0:
        return float(sorted_values[0])
    if fraction >= 1:
        return float(sorted_values[-1])
    p = np.float32(fraction) * np.float32(len(sorted_values) - 1)
    ip = int(p)
    p = float(p) - ip
    return (1 - p) * float(sorted_values[ip]) + p * float(sorted_values[min(ip + 1, len(sorted_values) - 1)])


def _median(sorted_values: np.ndarray) -> float:
    n = len(sorted_values)
    if n % 2 == 0:
        return float(np.float32(0.5) * (sorted_values[n // 2] + sorted_values[n // 2 - 1]))
    return float(sorted_values[n // 2])


@dataclass
class KldStats:
    """Every statistic llama-perplexity prints in `--kl-divergence` mode (uncertainties as ±)."""

    ppl: float
    ppl_stderr: float
    ppl_base: float
    ppl_base_stderr: float
    cor_ln_ppl: float
    ln_ppl_ratio: float
    ln_ppl_ratio_stderr: float
    ppl_ratio: float
    ppl_ratio_stderr: float
    ppl_diff: float
    ppl_diff_stderr: float
    mean: float
    mean_stderr: float
    kld_percentiles: dict[str, float]
    median: float
    p99: float
    max: float
    mean_dp: float
    mean_dp_stderr: float
    dp_percentiles: dict[str, float]
    rms_dp: float
    rms_dp_stderr: float
    same_top_p: float
    same_top_p_stderr: float
    count: int

    @classmethod
    def from_tokens(cls, nll: np.ndarray, nll_base: np.ndarray, kld: np.ndarray, p_diff: np.ndarray,
                    same_top: np.ndarray) -> "KldStats":
        n = int(len(nll))
        if n == 0:
            raise InputError("no tokens were scored, so there are no KL-divergence statistics")
        nll64, base64 = nll.astype(np.float64), nll_base.astype(np.float64)
        kld64, dp64 = kld.astype(np.float64), p_diff.astype(np.float64)
        log_ppl = _mean_and_uncertainty(nll64.sum(), (nll64 * nll64).sum(), n)
        log_base = _mean_and_uncertainty(base64.sum(), (base64 * base64).sum(), n)
        cov = _covariance(nll64.sum(), base64.sum(), (nll64 * base64).sum(), n)
        ppl, ppl_base = _exp(log_ppl[0]), _exp(log_base[0])
        ppl_unc, base_unc = ppl * log_ppl[1], ppl_base * log_base[1]
        denom = log_ppl[1] * log_base[1]
        ratio = log_ppl[0] - log_base[0]
        ratio_unc = math.sqrt(max(log_ppl[1] ** 2 + log_base[1] ** 2 - 2.0 * cov, 0.0))
        ppl_cov = ppl * ppl_base * cov
        kl = _mean_and_uncertainty(kld64.sum(), (kld64 * kld64).sum(), n)
        dp = _mean_and_uncertainty(dp64.sum(), (dp64 * dp64).sum(), n)
        dp2 = dp64 * dp64
        mse = _mean_and_uncertainty(dp2.sum(), (dp2 * dp2).sum(), n)
        rms = math.sqrt(mse[0])
        same = float(np.count_nonzero(same_top)) / n
        ks, ds = np.sort(kld.astype(np.float32)), np.sort(p_diff.astype(np.float32))
        kld_pct = {"max": float(ks[-1]), "99.9": _percentile(ks, 0.999), "99.0": _percentile(ks, 0.990),
                   "95.0": _percentile(ks, 0.950), "90.0": _percentile(ks, 0.900), "median": _median(ks),
                   "10.0": _percentile(ks, 0.100), "5.0": _percentile(ks, 0.050), "1.0": _percentile(ks, 0.010),
                   "0.1": _percentile(ks, 0.001), "min": float(ks[0])}
        dp_pct = {"max": float(ds[-1]), "99.9": _percentile(ds, 0.999), "99.0": _percentile(ds, 0.990),
                  "95.0": _percentile(ds, 0.950), "90.0": _percentile(ds, 0.900), "75.0": _percentile(ds, 0.750),
                  "median": _median(ds), "25.0": _percentile(ds, 0.250), "10.0": _percentile(ds, 0.100),
                  "5.0": _percentile(ds, 0.050), "1.0": _percentile(ds, 0.010), "0.1": _percentile(ds, 0.001),
                  "min": float(ds[0])}
        return cls(
            ppl=ppl, ppl_stderr=ppl_unc, ppl_base=ppl_base, ppl_base_stderr=base_unc,
            cor_ln_ppl=cov / denom if denom else 0.0,
            ln_ppl_ratio=ratio, ln_ppl_ratio_stderr=ratio_unc,
            ppl_ratio=_exp(ratio), ppl_ratio_stderr=_exp(ratio) * ratio_unc,
            ppl_diff=ppl - ppl_base,
            ppl_diff_stderr=math.sqrt(max(ppl_unc ** 2 + base_unc ** 2 - 2.0 * ppl_cov, 0.0)),
            mean=kl[0], mean_stderr=kl[1], kld_percentiles=kld_pct, median=kld_pct["median"],
            p99=kld_pct["99.0"], max=kld_pct["max"],
            mean_dp=dp[0], mean_dp_stderr=dp[1], dp_percentiles=dp_pct,
            rms_dp=rms, rms_dp_stderr=0.5 / rms * mse[1] if rms else 0.0,
            same_top_p=same, same_top_p_stderr=math.sqrt(same * (1 - same) / (n - 1)) if n > 1 else 0.0,
            count=n,
        )

    def format_llamacpp(self) -> str:
        """The three statistics sections exactly as llama-perplexity prints them."""
        pm = "±"
        k, d = self.kld_percentiles, self.dp_percentiles
        lines = [
            "====== Perplexity statistics ======",
            f"Mean PPL(Q)                   : {self.ppl:10.6f} {pm} {self.ppl_stderr:10.6f}",
            f"Mean PPL(base)                : {self.ppl_base:10.6f} {pm} {self.ppl_base_stderr:10.6f}",
            f"Cor(ln(PPL(Q)), ln(PPL(base))): {100.0 * self.cor_ln_ppl:6.2f}%",
            f"Mean ln(PPL(Q)/PPL(base))     : {self.ln_ppl_ratio:10.6f} {pm} {self.ln_ppl_ratio_stderr:10.6f}",
            f"Mean PPL(Q)/PPL(base)         : {self.ppl_ratio:10.6f} {pm} {self.ppl_ratio_stderr:10.6f}",
            f"Mean PPL(Q)-PPL(base)         : {self.ppl_diff:10.6f} {pm} {self.ppl_diff_stderr:10.6f}",
            "",
            "====== KL divergence statistics ======",
            f"Mean    KLD: {self.mean:10.6f} {pm} {self.mean_stderr:10.6f}",
            f"Maximum KLD: {k['max']:10.6f}",
        ]
        for key in ("99.9", "99.0", "95.0", "90.0"):
            lines.append(f"{key + '%':<7} KLD: {k[key]:10.6f}")
        lines.append(f"Median  KLD: {k['median']:10.6f}")
        for key in ("10.0", "5.0", "1.0", "0.1"):
            lines.append(f"{key + '%':>5}   KLD: {k[key]:10.6f}")
        lines += [f"Minimum KLD: {k['min']:10.6f}", "", "====== Token probability statistics ======",
                  f"Mean    Δp: {100.0 * self.mean_dp:6.3f} {pm} {100.0 * self.mean_dp_stderr:5.3f} %",
                  f"Maximum Δp: {100.0 * d['max']:6.3f}%"]
        for key in ("99.9", "99.0", "95.0", "90.0", "75.0"):
            lines.append(f"{key + '%':<7} Δp: {100.0 * d[key]:6.3f}%")
        lines.append(f"Median  Δp: {100.0 * d['median']:6.3f}%")
        for key in ("25.0", "10.0", "5.0", "1.0", "0.1"):
            lines.append(f"{key + '%':>5}   Δp: {100.0 * d[key]:6.3f}%")
        lines += [f"Minimum Δp: {100.0 * d['min']:6.3f}%",
                  f"RMS Δp    : {100.0 * self.rms_dp:6.3f} {pm} {100.0 * self.rms_dp_stderr:5.3f} %",
                  f"Same top p: {100.0 * self.same_top_p:6.3f} {pm} {100.0 * self.same_top_p_stderr:5.3f} %"]
        return "\n".join(lines)


@dataclass
class PerplexityResult:
    """What one perplexity (and optionally KL-divergence) run measured."""

    ppl: float
    ppl_stderr: float
    n_ctx: int
    n_chunks: int
    n_tokens_scored: int
    running_ppl: list[float]
    token_nll: np.ndarray = field(repr=False)
    kld: KldStats | None = None
    token_kld: np.ndarray | None = field(default=None, repr=False)
    token_p_diff: np.ndarray | None = field(default=None, repr=False)
    seconds: float = 0.0
    kld_chunks: list[KldStats] = field(default_factory=list, repr=False)   # running, after each chunk

    def kld_chunk_table(self) -> str:
        """llama-perplexity's per-chunk table in `--kl-divergence` mode (running values ± uncertainty)."""
        lines = ["chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              "
                 "Δp RMS            Same top p"]
        for i, k in enumerate(self.kld_chunks, 1):
            lines.append(f"{i:4d}    {k.ppl:9.4f} ± {k.ppl_stderr:9.4f}    {k.ln_ppl_ratio:10.5f} ± "
                         f"{k.ln_ppl_ratio_stderr:10.5f}    {k.mean:10.5f} ± {k.mean_stderr:10.5f}    "
                         f"{100 * k.rms_dp:6.3f} ± {100 * k.rms_dp_stderr:6.3f} %    "
                         f"{100 * k.same_top_p:6.3f} ± {100 * k.same_top_p_stderr:6.3f} %")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        out = {"ppl": self.ppl, "ppl_stderr": self.ppl_stderr, "n_ctx": self.n_ctx, "n_chunks": self.n_chunks,
               "n_tokens_scored": self.n_tokens_scored, "running_ppl": self.running_ppl, "seconds": self.seconds}
        if self.kld is not None:
            out["kld"] = asdict(self.kld)
        return out


def _final_ppl(nll_sum: float, nll2_sum: float, count: int) -> tuple[float, float]:
    nll, nll2 = nll_sum / count, nll2_sum / count
    ppl = math.exp(nll)
    var = nll2 - nll * nll
    return ppl, (math.sqrt(var / (count - 1)) * ppl if var > 0 else 0.0)


def chunk_count(n_tokens: int, n_ctx: int, n_chunks: int | None) -> int:
    n_max = n_tokens // n_ctx
    return n_max if n_chunks is None or n_chunks < 0 else min(n_chunks, n_max)


def _chunks(tokens: np.ndarray, n_ctx: int, n_chunk: int, bos_id: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(model input, targets of the scored positions) per chunk; BOS replaces each chunk's first token."""
    first = n_ctx // 2
    for c in range(n_chunk):
        chunk = tokens[c * n_ctx:(c + 1) * n_ctx].astype(np.int32).copy()
        targets = chunk[first + 1:].copy()
        if bos_id is not None:
            chunk[0] = bos_id
        yield chunk, targets


def run_perplexity(logits_fn: LogitsFn, tokens: np.ndarray, *, n_ctx: int = 512, n_chunks: int | None = None,
                   bos_id: int | None = None, kld_base_out: str | Path | None = None, n_vocab: int | None = None,
                   progress: Callable[[int, float], None] | None = None) -> PerplexityResult:
    """Perplexity of `tokens` in llama-perplexity's chunked method.

    `logits_fn(chunk)` returns logits for every position of a chunk, or for its second half
    only (at least the last `n_ctx - n_ctx // 2` rows). `bos_id` is the BOS to put at
    each chunk's start (None when the vocab adds no BOS). With `kld_base_out`, also write
    llama.cpp's KL-divergence base file (`--kl-divergence-base`).
    """
    import time

    tokens = np.asarray(tokens, dtype=np.int32)
    if n_ctx < 2:
        raise InputError(f"context size {n_ctx} is too small (at least 2)")
    if len(tokens) < 2 * n_ctx:
        raise InputError(f"you need at least {2 * n_ctx} tokens to evaluate perplexity with a context of "
                         f"{n_ctx}; the text tokenizes to only {len(tokens)} tokens")
    n_chunk = chunk_count(len(tokens), n_ctx, n_chunks)
    first = n_ctx // 2
    n_score = n_ctx - 1 - first
    if n_chunk == 0 or n_score < 1:
        raise InputError(f"nothing to score with {n_chunk} chunk(s) of {n_ctx} tokens "
                         "(--chunks must be at least 1, the context at least 3)")
    t0 = time.perf_counter()
    writer = _KldBaseWriter(kld_base_out, n_ctx, n_chunk, tokens) if kld_base_out else None
    nll_all = np.empty(n_chunk * n_score, dtype=np.float64)
    running, nll_sum, nll2_sum, count = [], 0.0, 0.0, 0
    try:
        for c, (chunk, targets) in enumerate(_chunks(tokens, n_ctx, n_chunk, bos_id)):
            logits = _scored_logits(logits_fn(chunk), n_ctx)
            nll = np.empty(n_score, dtype=np.float64)
            if writer is not None:
                if n_vocab is None:
                    n_vocab = logits.shape[1]
                u16 = np.zeros((n_score, lp.n_vocab_padded(logits.shape[1])), dtype=np.uint16)
                lp.token_nll_and_logprobs_u16(logits, targets, u16, nll)
                writer.write_chunk(u16, logits.shape[1])
            else:
                lp.token_nll(logits, targets, nll, np.empty(n_score, np.float32), np.empty(n_score, np.float32))
            nll_all[c * n_score:(c + 1) * n_score] = nll
            nll_sum += float(nll.sum())
            nll2_sum += float((nll * nll).sum())
            count += n_score
            running.append(math.exp(nll_sum / count))
            if progress:
                progress(c + 1, running[-1])
        if writer is not None:
            writer.commit()
    finally:
        if writer is not None:
            writer.abort()
    ppl, err = _final_ppl(nll_sum, nll2_sum, count)
    return PerplexityResult(ppl, err, n_ctx, n_chunk, count, running, nll_all, seconds=time.perf_counter() - t0)


class _KldBaseWriter:
    """Streams llama-perplexity's `--kl-divergence-base` file; atomic (a unique, pid-tagged
    temporary beside it, renamed at the end; stale ones of killed runs removed first)."""

    def __init__(self, path: str | Path, n_ctx: int, n_chunk: int, tokens: np.ndarray):
        self.path = Path(path)
        clean_stale_temps(self.path)
        self.tmp = temp_path(self.path)
        with writing(self.path):
            try:
                self.f = open(self.tmp, "wb")
            except BaseException:
                self.tmp.unlink(missing_ok=True)
                raise
        self.n_ctx, self.n_chunk, self.tokens = n_ctx, n_chunk, tokens
        self.header_done = False

    def write_chunk(self, u16: np.ndarray, n_vocab: int) -> None:
        with writing(self.path):
            if not self.header_done:
                self.f.write(KLD_MAGIC + struct.pack("<iii", self.n_ctx, n_vocab, self.n_chunk))
                self.f.write(self.tokens[:self.n_ctx * self.n_chunk].astype("<i4").tobytes())
                self.header_done = True
            self.f.write(memoryview(np.ascontiguousarray(u16, dtype="<u2")).cast("B"))

    def commit(self) -> None:
        with writing(self.path):
            self.f.close()  # flushes: a full disk shows here
        replace_into(self.tmp, self.path)

    def abort(self) -> None:
        if not self.f.closed:
            try:
                self.f.close()
            except OSError:
                pass
        self.tmp.unlink(missing_ok=True)


@dataclass
class KldBase:
    """A KL-divergence base file (llama-perplexity `--kl-divergence-base`), memory-mapped."""

    path: Path
    n_ctx: int
    n_vocab: int
    n_chunk: int
    tokens: np.ndarray
    logprobs: np.ndarray  # uint16 (n_chunk, n_score, n_vocab_padded)

    @classmethod
    def open(cls, path: str | Path) -> "KldBase":
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: KL-divergence base file not found")
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(20)
        if len(head) < 20 or head[:8] != KLD_MAGIC:
            raise InputError(f"{path}: does not look like a file containing log-probabilities "
                             "(no '_logits_' header; write one with --kl-divergence-base)")
        n_ctx, n_vocab, n_chunk = struct.unpack("<iii", head[8:20])
        # n_ctx 3 is the least that scores a token (the second half of a chunk, less its last)
        if n_ctx < 3 or n_vocab < 1 or n_chunk < 1 or n_ctx > 1 << 24 or n_vocab > 1 << 24:
            raise InputError(f"{path}: implausible header n_ctx={n_ctx} n_vocab={n_vocab} n_chunk={n_chunk} "
                             "(expected n_ctx 3..2^24, n_vocab 1..2^24, n_chunk >= 1)")
        nv = lp.n_vocab_padded(n_vocab)
        n_score = n_ctx - 1 - n_ctx // 2
        need = 20 + 4 * n_ctx * n_chunk + 2 * nv * n_score * n_chunk
        if size < need:
            raise InputError(f"{path}: truncated: {size} bytes, {need} needed for {n_chunk} chunks of "
                             f"{n_ctx} tokens over a vocabulary of {n_vocab}")
        mm = np.memmap(path, dtype=np.uint8, mode="r")
        tokens = mm[20:20 + 4 * n_ctx * n_chunk].view("<i4")
        bad = (tokens < 0) | (tokens >= n_vocab)
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(f"{path}: token {i} is id {int(tokens[i])}, outside the vocabulary of {n_vocab}")
        logprobs = mm[20 + 4 * n_ctx * n_chunk:need].view("<u2").reshape(n_chunk, n_score, nv)
        return cls(path, n_ctx, n_vocab, n_chunk, tokens, logprobs)

    def check_chunk(self, c: int) -> None:
        """Refuse chunk `c` unless every token's scale and min log-prob are what llama-perplexity
        writes: 0 <= scale <= 16/65535 (logits span at most 16) and -16 - ln(n_vocab) <= min <= 0."""
        head = np.ascontiguousarray(self.logprobs[c, :, :4]).view("<f4").reshape(-1, 2)
        scale, lo = head[:, 0].astype(np.float64), head[:, 1].astype(np.float64)
        floor = -16.0 - math.log(self.n_vocab) - 1.0
        ok = np.isfinite(scale) & (scale >= 0) & (scale <= 16.0 / 65535 * 1.001) & np.isfinite(lo) & \
            (lo <= 0) & (lo >= floor)
        if not ok.all():
            t = int(np.argmin(ok))
            raise InputError(f"{self.path}: chunk {c} token {t} has scale {scale[t]} and min log-prob {lo[t]}, "
                             f"expected 0..{16.0 / 65535:.3g} and {floor:.1f}..0 (a corrupt base file?)")


def run_kl_divergence(logits_fn: LogitsFn, base: KldBase, *, bos_id: int | None = None,
                      n_chunks: int | None = None,
                      progress: Callable[[int, float], None] | None = None) -> PerplexityResult:
    """Compare a model against a base file as llama-perplexity `--kl-divergence` does."""
    import time

    n_ctx, first = base.n_ctx, base.n_ctx // 2
    n_score = n_ctx - 1 - first
    n_chunk = base.n_chunk if n_chunks is None or n_chunks < 0 else min(n_chunks, base.n_chunk)
    if n_chunk == 0 or n_score < 1:
        raise InputError(f"{base.path}: nothing to compare with {n_chunk} chunk(s) of {n_ctx} tokens "
                         "(--chunks must be at least 1)")
    size = n_chunk * n_score
    nll, nll_base = np.empty(size, np.float32), np.empty(size, np.float32)
    kld, p_diff = np.empty(size, np.float64), np.empty(size, np.float32)
    same_top = np.empty(size, np.bool_)
    running = []
    chunk_stats: list[KldStats] = []
    t0 = time.perf_counter()
    for c, (chunk, targets) in enumerate(_chunks(np.asarray(base.tokens), n_ctx, n_chunk, bos_id)):
        logits = _scored_logits(logits_fn(chunk), n_ctx)
        if logits.shape[1] != base.n_vocab:
            raise InputError(f"{base.path}: vocabulary of {base.n_vocab} tokens, the model has {logits.shape[1]}")
        base.check_chunk(c)
        if targets.size and (targets.min() < 0 or targets.max() >= logits.shape[1]):
            raise InputError(f"{base.path}: chunk {c} has token ids outside the model's vocabulary of {logits.shape[1]}")
        sl = slice(c * n_score, (c + 1) * n_score)
        lp.token_kld(logits, targets, np.ascontiguousarray(base.logprobs[c]), nll[sl], nll_base[sl],
                     kld[sl], p_diff[sl], same_top[sl])
        done = nll[:sl.stop].astype(np.float64)
        running.append(_exp(done.mean()))
        n = sl.stop
        chunk_stats.append(KldStats.from_tokens(nll[:n], nll_base[:n], kld[:n], p_diff[:n], same_top[:n]))
        if progress:
            progress(c + 1, running[-1])
    stats = KldStats.from_tokens(nll, nll_base, kld, p_diff, same_top)
    return PerplexityResult(stats.ppl, stats.ppl_stderr, n_ctx, n_chunk, size, running,
                            nll.astype(np.float64), kld=stats, token_kld=kld.astype(np.float32),
                            token_p_diff=p_diff, seconds=time.perf_counter() - t0, kld_chunks=chunk_stats)
