"""llama.cpp's logits oracle (`../shared/convert2/<arch>/logits-topk.npz`) and scoring a model on it.

The oracle is llama-perplexity's KL-divergence base file for an f32 GGUF, cut to the 32 most
probable tokens and the next token's log-prob at each scored position (convert2/README.md):
4 chunks of 64 tokens, each evaluated in one batch on a fresh KV cache (f16, llama.cpp's
default) with its first token replaced by BOS when the vocab adds one; positions 32..62 scored.
Stored log-probs are uint16 steps above a floor (llama-perplexity clamps at max logit - 16), so
a value at or below the floor reads as the floor, and each one is exact to scale/2 <= 1.23e-4.

`score(model, oracle, bos_id)` evaluates the chunks the same way and returns the differences;
the MoE tests import it as well.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Oracle:
    """The arrays of one `logits-topk.npz` (shapes: chunks x scored positions [x 32])."""

    n_ctx: int
    first: int
    tokens: np.ndarray          # (n_chunk, n_ctx) int32, as llama-perplexity tokenized the text
    next_ids: np.ndarray        # (n_chunk, n_scored) the token each scored position predicts
    next_logprob: np.ndarray    # (n_chunk, n_scored)
    topk_ids: np.ndarray        # (n_chunk, n_scored, 32), by decreasing log-prob
    topk_logprobs: np.ndarray   # (n_chunk, n_scored, 32)
    floor: np.ndarray           # (n_chunk, n_scored) the clamped minimum log-prob
    scale: np.ndarray           # (n_chunk, n_scored) the uint16 step

    @classmethod
    def load(cls, path: Path) -> Oracle:
        with np.load(path) as z:
            return cls(n_ctx=int(z["n_ctx"]), first=int(z["first"]), tokens=z["tokens"],
                       next_ids=z["next_ids"], next_logprob=z["next_logprob"], topk_ids=z["topk_ids"],
                       topk_logprobs=z["topk_logprobs"], floor=z["floor"], scale=z["scale"])

    @property
    def n_chunk(self) -> int:
        return int(self.tokens.shape[0])


@dataclass(frozen=True)
class OracleDiff:
    """How far a model's log-probs land from the oracle's at the scored positions."""

    max_topk: float       # max |delta| of the oracle's top-32 log-probs
    max_next: float       # max |delta| of the next token's log-prob
    top1_agreement: float  # share of positions whose most probable token is the oracle's
    n_positions: int

    def __str__(self) -> str:
        return (f"max |d top-32 log-p| {self.max_topk:.3g}, max |d next log-p| {self.max_next:.3g}, "
                f"top-1 agreement {self.top1_agreement:.3f} over {self.n_positions} positions")


def materialize(shared_dir: Path, arch: str, dest_root: Path, refset: str = "convert2") -> Path:
    """tests/converters/convert_helpers.py's `materialize`: a shared checkpoint rebuilt with links."""
    import sys

    helpers = str(Path(__file__).resolve().parents[1] / "converters")
    if helpers not in sys.path:
        sys.path.insert(0, helpers)
    from convert_helpers import materialize as rebuild

    return rebuild(shared_dir, arch, dest_root, refset)


def converted_gguf(shared_dir: Path, arch: str, root: Path) -> tuple[Path, Path]:
    """(checkpoint folder, f32 GGUF converted by llmtk) of `../shared/convert2/<arch>/tiny-<arch>`.

    The checkpoint is rebuilt under `root` with links, its tokenizer link files (a relative path
    written as text) resolved, the folder name kept (llama.cpp derives general.name from it).
    Skips when the reference folder is absent or llmtk has no converter for the checkpoint's class.
    """
    import json

    import pytest
    from llmtk.converters import ARCHITECTURES, convert

    src = shared_dir / "convert2" / arch / f"tiny-{arch}"
    if not src.is_dir():
        pytest.skip(f"reference data not found: {src}")
    hf_class = json.loads((src / "config.json").read_text())["architectures"][0]
    if hf_class not in ARCHITECTURES:
        pytest.skip(f"llmtk has no converter for {hf_class} ({arch}) yet")
    dest = materialize(shared_dir, arch, root / "ckpt", "convert2")
    return dest, convert(dest, root / f"{arch}.gguf", "f32", progress=False)


def converted_once(shared_dir: Path, root: Path) -> Callable[[str], tuple[Path, Path]]:
    """arch -> `converted_gguf(shared_dir, arch, root)`, each arch converted once (a module
    fixture's getter)."""
    done: dict[str, tuple[Path, Path]] = {}

    def get(arch: str) -> tuple[Path, Path]:
        if arch not in done:
            done[arch] = converted_gguf(shared_dir, arch, root)
        return done[arch]
    return get


def bos_for_chunks(gguf_path: Path) -> int | None:
    """The BOS llama-perplexity puts at each chunk's start, or None when the vocab adds none."""
    from llmtk.tokenizer import Tokenizer

    tok = Tokenizer.from_gguf(gguf_path)
    return tok.bos_id if tok.add_bos and tok.bos_id is not None and tok.bos_id >= 0 else None


def chunk_logprobs(model: Any, oracle: Oracle, chunk: int, bos_id: int | None) -> np.ndarray:
    """float64 log-probs (n_scored, n_vocab) of `model` at the oracle's scored positions of `chunk`,
    the chunk evaluated as one batch on a fresh cache like llama-perplexity."""
    tokens = oracle.tokens[chunk].astype(np.int32).copy()
    if bos_id is not None:
        tokens[0] = bos_id
    logits = model.forward(tokens).astype(np.float64)[oracle.first:oracle.n_ctx - 1]
    m = logits.max(axis=1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))


def score(model: Any, oracle: Oracle, bos_id: int | None, chunks: list[int] | None = None,
          tie_tol: float = 1e-3) -> OracleDiff:
    """Compare `model` with the oracle on `chunks` (default all). Our log-probs are clamped at the
    oracle's floor as llama-perplexity's encoding clamps them; a top-1 counts as agreeing when it
    is the oracle's or the oracle gives it the top log-prob within `tie_tol` (a near tie)."""
    chunks = list(range(oracle.n_chunk)) if chunks is None else chunks
    d_topk = d_next = 0.0
    agree = total = 0
    for c in chunks:
        lp = chunk_logprobs(model, oracle, c, bos_id)
        floor = oracle.floor[c][:, None].astype(np.float64)
        ours_topk = np.maximum(np.take_along_axis(lp, oracle.topk_ids[c].astype(np.int64), axis=1), floor)
        d_topk = max(d_topk, float(np.abs(ours_topk - oracle.topk_logprobs[c]).max()))
        ours_next = np.maximum(np.take_along_axis(lp, oracle.next_ids[c][:, None].astype(np.int64), axis=1), floor)
        d_next = max(d_next, float(np.abs(ours_next[:, 0] - oracle.next_logprob[c]).max()))
        top1 = lp.argmax(axis=1)
        for i, t in enumerate(top1):
            ids = oracle.topk_ids[c, i]
            hit = t == ids[0] or (t in ids and oracle.topk_logprobs[c, i, 0] - oracle.topk_logprobs[c, i][ids == t][0]
                                  <= tie_tol)
            agree += bool(hit)
            total += 1
    return OracleDiff(d_topk, d_next, agree / total, total)
