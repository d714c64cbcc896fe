"""One obvious call per job for notebooks and scripts; `import llmtk` exposes them lazily.

    import llmtk
    llmtk.convert("hf-dir", "model-f16.gguf")                     # HF safetensors -> GGUF
    llmtk.quantize("model-f16.gguf", "model-q4km.gguf", "Q4_K_M")  # llama-quantize's mixes
    res = llmtk.evaluate("model-q4km.gguf", base="model-f16.gguf")  # PPL, and KLD against a base
    w = llmtk.load_tensor("model-q4km.gguf", "blk.0.attn_q.weight")  # float32 NumPy array

They do what the CLI commands do, with the CLI's defaults (the embedded SmolLM2 and the text
shipped in data/ where a model or text is left out), and return data instead of printing.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from llmtk.evals.perplexity import PerplexityResult
    from llmtk.quantize import QuantizeResult


def convert(hf_dir: str | os.PathLike, out_path: str | os.PathLike | None = None, outtype: str = "f16",
            **options: Any) -> Path:
    """Convert a Hugging Face checkpoint folder to GGUF, tensor-identical to llama.cpp's converter;
    `outtype` is f32/f16/bf16/q8_0/auto or a quantize type (`Q4_K_M`). Returns the path written.
    Options are `llmtk.converters.convert`'s (`imatrix`, `split_max_size`, `vocab_only`, ...)."""
    from llmtk.converters import convert as _convert

    return _convert(hf_dir, out_path, outtype, **options)


def quantize(in_path: str | os.PathLike, out_path: str | os.PathLike | None, ftype: str, *,
             imatrix: str | os.PathLike | None = None, **options: Any) -> "QuantizeResult":
    """Quantize a GGUF model as llama-quantize does (byte-identical); `ftype` is a llama-quantize
    type (`Q4_K_M`, `IQ4_XS`, ...). Requantizing an already quantized model is allowed here.
    Options are `llmtk.quantize.quantize_model`'s (`tensor_types`, `output_tensor_type`, ...)."""
    from llmtk.quantize import quantize_model

    options.setdefault("allow_requantize", True)
    return quantize_model(in_path, out_path, ftype, imatrix=imatrix, **options)


def evaluate(model: str | os.PathLike | None = None, text: str | None = None, *,
             base: str | os.PathLike | None = None, n_ctx: int = 512, n_chunks: int | None = None,
             threads: int | None = None) -> "PerplexityResult":
    """Perplexity of `model` on `text` as llama-perplexity measures it (`res.ppl`, `res.ppl_stderr`,
    `res.running_ppl`); with `base`, also the KL divergence to that model (`res.kld.mean`, `.p99`,
    `.same_top_p`, ...) on the same tokens. `text` is a string (default: the text in data/);
    special-token text in it stays literal, as in llama-perplexity.
    """
    from llmtk.evals.runner import ModelRunner, read_text
    from llmtk.evals.runner import evaluate as _evaluate
    from llmtk.resources import smollm2_path

    model = Path(model) if model is not None else smollm2_path()
    if text is None:
        text, _ = read_text(None)
    if base is None:
        return _evaluate(model, text, n_ctx=n_ctx, n_chunks=n_chunks, runner=ModelRunner(model, threads=threads))
    with tempfile.TemporaryDirectory(prefix="llmtk-evaluate-") as tmp:
        kld = Path(tmp) / "base.kld"
        _evaluate(base, text, n_ctx=n_ctx, n_chunks=n_chunks, kld_base_out=kld,
                  runner=ModelRunner(base, threads=threads))
        return _evaluate(model, None, n_chunks=n_chunks, kld_base_in=kld, runner=ModelRunner(model, threads=threads))


def load_tensor(path: str | os.PathLike, name: str) -> "np.ndarray":
    """One tensor of a GGUF file (any shard of a split model) as float32 NumPy, dequantized as ggml
    does; the shape is NumPy's (GGUF's `ne` reversed)."""
    from llmtk import kernels
    from llmtk.errors import InputError
    from llmtk.ggufio.shards import open_gguf

    with open_gguf(path) as r:
        if name not in r.tensors:
            raise InputError(f"{path}: has no tensor {name!r}")
        info = r.tensors[name]
        return kernels.dequantize(r.raw(name), info.qtype, info.shape)
