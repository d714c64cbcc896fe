"""Importance matrices from text (llama-imatrix) and their statistics (`--show-statistics`).

The importance of a weight column is the mean square of the activations that meet it: during
the forward pass every matrix multiplication `y = x @ W.T` adds `sum_rows x**2` to its weight's
entry and the row count to its count (per expert for MoE). Chunks of `n_ctx` tokens are run
independently, as llama-imatrix does (BOS first when the vocabulary adds one); only `blk.*`
weights are collected, plus `output.weight` with `process_output`.

File formats and --in-file combination live in `llmtk.ggufio.imatrix_file`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import numpy.typing as npt

from llmtk.errors import InputError
from llmtk.ggufio.imatrix_file import Imatrix, ImatrixEntry

from . import logprobs as lp


class ImatrixCollector:
    """The forward-pass hook that accumulates squared activations per weight (collect_imatrix)."""

    def __init__(self, *, process_output: bool = False, n_expert: int = 0, min_rows: int = 16):
        self.im = Imatrix(has_metadata=True)
        self.process_output = process_output
        self.n_expert = n_expert          # experts per MoE weight (rows of its entry)
        self.min_rows = min_rows          # llama.cpp ignores matmuls of fewer than 16 rows

    def wants(self, name: str) -> bool:
        return name.startswith("blk.") or (self.process_output and name == "output.weight")

    def __call__(self, name: str, x: npt.NDArray[np.float32], ids: npt.NDArray[np.int32] | None = None) -> None:
        if not self.wants(name):
            return
        x = np.asarray(x, dtype=np.float32)
        if ids is None and x.ndim == 3:
            # a batched matmul over a 3-D weight (MLA's attn_k_b/attn_v_b, one matrix per head):
            # x (n, n_mat, cols), matrix m sees x[:, m]; one count for all of them, as ggml's
            # MUL_MAT branch of collect_imatrix keeps for a weight that is not routed
            if x.shape[0] < self.min_rows:
                return
            e = self._entry(name, x.shape[-1] * x.shape[1], 1)
            e.sums += np.einsum("nmj,nmj->mj", x, x, dtype=np.float64).astype(np.float32).reshape(-1)
            e.counts += x.shape[0]
        elif ids is None:
            if x.shape[0] < self.min_rows:
                return
            e = self._entry(name, x.shape[-1], 1)
            e.sums += np.einsum("ij,ij->j", x, x, dtype=np.float64).astype(np.float32)
            e.counts += x.shape[0]
        else:
            # x (n, n_used, cols) and ids (n, n_used): each routed row counts for its expert
            n_expert = self.n_expert or int(ids.max()) + 1
            e = self._entry(name, x.shape[-1], n_expert)
            sums = e.sums.reshape(n_expert, -1)
            sq = (x.astype(np.float64) ** 2).reshape(-1, x.shape[-1])
            flat = np.asarray(ids).reshape(-1)
            acc = np.zeros((n_expert, x.shape[-1]), np.float64)
            np.add.at(acc, flat, sq)
            sums += acc.astype(np.float32)
            e.counts += np.bincount(flat, minlength=n_expert)[:n_expert]
        if not np.isfinite(e.sums).all():
            raise InputError(f"non-finite values detected in the activations of {name}")

    def _entry(self, name: str, cols: int, n_mat: int) -> ImatrixEntry:
        e = self.im.entries.get(name)
        if e is None:
            e = self.im.entries[name] = ImatrixEntry(np.zeros(cols * n_mat, np.float32), np.zeros(n_mat, np.int64))
        elif e.sums.size != cols * n_mat:
            raise InputError(f"inconsistent size for {name} ({e.sums.size} vs {cols * n_mat})")
        return e


@dataclass
class ImatrixRun:
    """The collected matrix and llama-imatrix's side product, the chunks' perplexity."""

    imatrix: Imatrix
    n_chunks: int
    ppl: float | None
    ppl_stderr: float | None
    running_ppl: list[float]


def compute_imatrix(model_path: str | Path, text: str, *, n_ctx: int = 512, n_chunks: int = -1,
                    process_output: bool = False, compute_ppl: bool = True, dataset_name: str | None = None,
                    previous: Imatrix | None = None,
                    progress: Callable[[int, int, float | None], None] | None = None) -> ImatrixRun:
    """Run the model over `text` in chunks of `n_ctx` and collect the importance matrix.

    `previous` (from --in-file) is accumulated first, as llama-imatrix does. Also computes the
    perplexity of the second half of every chunk, like llama-imatrix's log."""
    from .runner import ModelRunner

    runner = ModelRunner(model_path)
    tokens = runner.tokenize(text)
    if len(tokens) < 2 * n_ctx:
        raise InputError(f"you need at least {2 * n_ctx} tokens for a context of {n_ctx} tokens; "
                         f"the text tokenizes to only {len(tokens)}")
    n_max = len(tokens) // n_ctx
    n_chunk = n_max if n_chunks < 0 else min(n_chunks, n_max)
    col = ImatrixCollector(process_output=process_output, n_expert=int(getattr(runner.model.hp, "n_expert", 0)))
    if previous is not None:
        col.im.entries, col.im.datasets = previous.entries, list(previous.datasets)
    bos = runner.bos_for_chunks
    nll = nll2 = 0.0
    count = 0
    running: list[float] = []
    for i in range(n_chunk):
        chunk = tokens[i * n_ctx:(i + 1) * n_ctx].copy()
        if bos is not None:
            chunk[0] = bos
        logits = runner.model.forward(chunk, hook=col)
        ppl = None
        if compute_ppl:
            # llama-imatrix's process_logits: perplexity.cpp's log_softmax on numba threads, no
            # float64 copies of the (n_ctx / 2, n_vocab) logits
            first = n_ctx // 2
            lg = np.ascontiguousarray(logits[first:n_ctx - 1], dtype=np.float32)
            tok_nll = np.empty(len(lg), np.float64)
            lp.token_nll(lg, np.ascontiguousarray(tokens[i * n_ctx + first + 1:(i + 1) * n_ctx]), tok_nll,
                         np.empty(len(lg), np.float32), np.empty(len(lg), np.float32))
            del logits, lg
            nll += float(tok_nll.sum())
            nll2 += float((tok_nll ** 2).sum())
            count += len(tok_nll)
            ppl = math.exp(nll / count)
            running.append(ppl)
        if progress:
            progress(i + 1, n_chunk, ppl)
    im = col.im
    if dataset_name:
        im.datasets.append(dataset_name)
    im.chunk_size = n_ctx
    max_count = max((int(e.counts.max()) for e in im.entries.values() if e.counts.size), default=0)
    im.chunk_count = max_count // n_ctx
    im.has_metadata = True
    ppl = stderr = None
    if count:
        mean, mean2 = nll / count, nll2 / count
        ppl = math.exp(mean)
        var = mean2 - mean * mean
        stderr = math.sqrt(var / (count - 1)) * ppl if var > 0 and count > 1 else None
    return ImatrixRun(im, n_chunk, ppl, stderr, running)


# ---------------------------------------------------------------------------------------------
# --show-statistics
# ---------------------------------------------------------------------------------------------

@dataclass
class TensorStats:
    """Statistics of one entry's per-column mean squared activations (llama-imatrix's columns)."""

    tensor: str
    layer: str
    name: str
    values: np.ndarray           # the raw sums, for the cosine similarity with the previous layer
    total: float
    mean: float
    max: float
    min: float
    elements: int
    stddev: float
    active: float
    entropy: float
    zd: float
    cossim: float = 0.0


def _f32sum(a: np.ndarray) -> np.float32:
    """Left-to-right float32 sum, as std::accumulate with a float init does."""
    return np.add.accumulate(a.astype(np.float32), dtype=np.float32)[-1] if a.size else np.float32(0)


def split_name(tensor: str) -> tuple[str, str]:
    """(layer, short name): `blk.3.attn_k.weight` -> ("3", "attn_k"); "-" when not in a block."""
    parts = tensor.split(".")
    layer = next((parts[i + 1] for i in range(len(parts) - 1) if parts[i] == "blk"), "-")
    name = next((parts[i - 1] for i in range(1, len(parts)) if parts[i] == "weight"), tensor)
    return layer, name


def tensor_statistics(im: Imatrix) -> list[TensorStats]:
    """Per-entry statistics in llama-imatrix's order (by short name, then by Σ(Act²) descending)."""
    out: list[TensorStats] = []
    for tensor, e in im.entries.items():
        if not e.counts.size or e.sums.size % e.counts.size:
            continue
        per = np.asarray(e.sums, np.float32).reshape(e.counts.size, -1)
        rows = [per[i] / np.float32(c) for i, c in enumerate(e.counts) if c != 0]
        if not rows:
            continue
        act = np.concatenate(rows).astype(np.float32)
        n = act.size
        if not n:
            continue
        total = _f32sum(act)
        mean = np.float32(total / np.float32(n))
        sq = _f32sum(act * act)
        var = np.float32(sq / np.float32(n)) - mean * mean
        dev = np.float32(math.sqrt(max(0.0, float(var))))
        active = 1.0 - float(np.count_nonzero(np.abs(act) <= np.float32(1e-5))) / n
        entropy = np.float32(0)
        if total > 0:
            p = (act / total).astype(np.float32)
            p = p[p > 0]
            entropy = -_f32sum((p * np.log2(p)).astype(np.float32))
        z = int(np.count_nonzero((act - mean) / dev > 1)) if dev > 0 else 0
        layer, name = split_name(tensor)
        out.append(TensorStats(tensor, layer, name, np.asarray(e.sums, np.float32), float(total), float(mean),
                               float(act.max()), float(act.min()), n, float(dev), active, float(entropy), z / n))
    by_name = {t.tensor: t for t in out}
    for t in out:
        m = re.search(r"blk\.(\d{1,9})\.", t.tensor)
        if not m:
            continue
        prev = by_name.get(t.tensor[:m.start(1)] + str(int(m.group(1)) - 1) + t.tensor[m.end(1):])
        if prev is not None and prev.values.size == t.values.size:
            dp = _f32sum(t.values * prev.values)
            mag = np.float32(math.sqrt(_f32sum(t.values * t.values))) * np.float32(math.sqrt(_f32sum(prev.values * prev.values)))
            t.cossim = float(np.float32(dp / mag)) if mag else float("nan")
    out.sort(key=lambda t: (t.name, -t.total))
    return out


HEADER = "\t".join((" Layer", "       Tensor", "          Σ(Act²)", "  Min", "            Max", "           μ",
                    "   σ", " % Active", "N", "   Entropy", "E (norm)", "ZD", "  CosSim"))


def format_statistics(im: Imatrix, source: str) -> str:
    """The text llama-imatrix --show-statistics prints (without its log prefixes)."""
    ts = tensor_statistics(im)
    if not ts:
        raise InputError(f"cannot compute statistics for {source}")
    lines = [f"Computing statistics for {source} ({len(ts)} tensors)", "", HEADER, "=" * 169]
    weighted: dict[int, list] = {}
    for t in ts:
        try:
            blk = int(t.layer)
        except ValueError:
            blk = -1
        # llama-imatrix divides by log2(1) = 0 for one-column entries: NaN, not an exception
        e_norm = 100.0 * (t.entropy / math.log2(t.elements)) if t.elements > 1 else float("nan")
        lines.append(f"{t.layer:>5}\t{t.name:<20}\t{t.total:10.2f}\t{t.min:8.4f}\t{t.max:11.4f}\t{t.mean:6.2f}\t"
                     f"{t.stddev:6.2f}\t{t.active * 100:8.2f}%\t{t.elements:6d}\t{t.entropy:10.4f}\t"
                     f"{e_norm:6.2f}%\t{100 * t.zd:10.2f}%\t{t.cossim:8.4f}")
        w = weighted.setdefault(blk, [np.float32(0)] * 3 + [0])
        w[0] += np.float32(t.elements * t.total)
        w[1] += np.float32(t.elements * t.zd)
        w[2] += np.float32(t.elements * t.cossim)
        w[3] += t.elements
    layers = sum(1 for b in weighted if b >= 0)
    lines += ["", f"Computing weighted average statistics per layer ({layers} layers)", "",
              "\t".join(("  Layer", "     μΣ(Act²)", "      μZD", "μCosSim")), "=" * 48]
    for blk in sorted(weighted):
        bias, zd, cs, n = weighted[blk]
        if blk >= 0 and n:
            lines.append(f"{blk:5d}\t{bias / n:14.2f}\t{100 * zd / n:10.4f}%\t{cs / n:6.4f}")
    return "\n".join(lines) + "\n"
