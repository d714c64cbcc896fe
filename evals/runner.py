"""Glue from files to evaluations: load a GGUF model and its tokenizer, read text, run PPL/KLD."""
from __future__ import annotations

import re
import sys
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from llmtk.errors import InputError
from llmtk.ggufio.reader import escape_control

from .perplexity import KldBase, PerplexityResult, run_kl_divergence, run_perplexity

DEFAULT_TEXT = "stdlib-docstrings.txt"


def read_text(path: str | Path | None, dataset: str | None = None) -> tuple[str, str]:
    """(text, its name): a file, `-` for stdin, a `datasets` split, or the text shipped in data/."""
    if dataset:
        return _dataset_text(dataset), f"dataset:{dataset}"
    if path is None:
        from llmtk.resources import data_path

        p = data_path(DEFAULT_TEXT)
        return p.read_text(encoding="utf-8"), p.name
    if str(path) == "-":
        return sys.stdin.read(), "<stdin>"
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: text file not found")
    try:
        return p.read_text(encoding="utf-8"), p.name
    except UnicodeDecodeError as e:
        raise InputError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None


# a hub dataset id (`owner/name` is not possible: `/` starts the split), a config and a split with
# optional slicing (`test[:10%]`); nothing that names a local path, which `load_dataset` would run
# as a loading script or read as data files
_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
_DATASET_CONFIG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
_DATASET_SPLIT = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}(\[[0-9:%+-]{0,32}\])?")


def check_dataset_spec(spec: str) -> tuple[str, str | None, str]:
    """(name, config, split) of `--dataset NAME[:CONFIG][/SPLIT]`, checked before the `datasets`
    library sees it: only hub-style names, never a path (`..`, `/abs`, `./x`, an existing folder)."""
    name, _, split = spec.partition("/")
    name, _, config = name.partition(":")
    split = split or "test"
    if not _DATASET_NAME.fullmatch(name) or ".." in name or Path(name).exists():
        raise InputError(f"--dataset {escape_control(spec)[:80]!r}: {escape_control(name)[:60]!r} is not a dataset "
                         "name (letters, digits, '_', '-', '.'; local files go with -f FILE)")
    if config and not _DATASET_CONFIG.fullmatch(config):
        raise InputError(f"--dataset {escape_control(spec)[:80]!r}: config {escape_control(config)[:60]!r} is not a "
                         "config name")
    if not _DATASET_SPLIT.fullmatch(split):
        raise InputError(f"--dataset {escape_control(spec)[:80]!r}: split {escape_control(split)[:60]!r} is not a split "
                         "name such as test, validation or train[:10%]")
    return name, config or None, split


def _dataset_text(spec: str) -> str:
    """`name[:config][/split]` through the `datasets` library, from its local cache only."""
    name, config, split = check_dataset_spec(spec)
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise InputError("--dataset needs the `datasets` package (pip install datasets) and a locally "
                         "cached dataset; or pass the text with -f FILE") from None
    import os

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # datasets raises many types for a missing cache
        raise InputError(f"dataset {spec!r} is not available locally ({type(e).__name__}: {e}); "
                         "pass the text with -f FILE") from None
    col = "text" if "text" in ds.column_names else ds.column_names[0]
    return "\n".join(str(t) for t in ds[col])


class ModelRunner:
    """A GGUF model with its tokenizer, as a `logits_fn` for the evaluators."""

    def __init__(self, model_path: str | Path, **model_opts):
        from llmtk.model import load_model
        from llmtk.tokenizer import Tokenizer

        self.path = Path(model_path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: model file not found")
        self.model = load_model(self.path, **model_opts)
        self.tokenizer = Tokenizer.from_gguf(self.model.reader)  # the metadata already read

    @property
    def bos_for_chunks(self) -> int | None:
        """The BOS that starts every chunk, or None when the vocab adds none (llama.cpp's add_bos)."""
        tok = self.tokenizer
        return tok.bos_id if getattr(tok, "add_bos", False) and tok.bos_id is not None and tok.bos_id >= 0 else None

    def tokenize(self, text: str) -> np.ndarray:
        # llama-perplexity and llama-imatrix call common_tokenize(ctx, text, add_special=true):
        # special-token text in the input stays literal text
        return np.asarray(self.tokenizer.encode(text, add_special=True, parse_special=False), dtype=np.int32)

    def logits(self, tokens: np.ndarray, first: int = 0) -> np.ndarray:
        """Logits of rows first.. of `tokens` (the model computes no others)."""
        return self.model.forward(np.asarray(tokens, dtype=np.int32), first_logit=first)


def evaluate(model_path: str | Path, text: str | None, *, n_ctx: int = 512, n_chunks: int | None = None,
             kld_base_out: str | Path | None = None, kld_base_in: str | Path | None = None,
             progress: Callable[[int, float], None] | None = None, on_start: Callable[[int], None] | None = None,
             runner: ModelRunner | None = None) -> PerplexityResult:
    """PPL of `model_path` on `text` (or KLD against `kld_base_in`, whose tokens it reads instead)."""
    runner = runner or ModelRunner(model_path)
    if kld_base_in is not None:
        base = KldBase.open(kld_base_in)
        if on_start:
            on_start(base.n_chunk if n_chunks is None or n_chunks < 0 else min(n_chunks, base.n_chunk))
        # only the scored second half of each chunk needs logits, as llama-perplexity asks
        return run_kl_divergence(partial(runner.logits, first=base.n_ctx // 2), base,
                                 bos_id=runner.bos_for_chunks, n_chunks=n_chunks, progress=progress)
    tokens = runner.tokenize(text or "")
    if on_start:
        from .perplexity import chunk_count

        on_start(chunk_count(len(tokens), n_ctx, n_chunks))
    return run_perplexity(partial(runner.logits, first=n_ctx // 2), tokens, n_ctx=n_ctx, n_chunks=n_chunks,
                          bos_id=runner.bos_for_chunks,
                          kld_base_out=kld_base_out, progress=progress)
