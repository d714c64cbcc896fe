"""Peak memory of a batch forward pass on a synthetic llama-shaped model, to show that it grows with
one layer of the model and not with the whole model (weights stream, nothing float32 is kept).

`write_synthetic_llama` writes a GGUF of random weights with the shapes of a 1B-class model (by
default TinyLlama-1.1B's: n_embd 2048, n_ff 5632, 32 heads, 4 KV heads, vocab 32000) and any
number of layers, one tensor at a time. `forward_memory` runs one batch through it and reports
the peak of NumPy's allocations (traced, so the mapped file does not count) and the process's
peak RSS (which also holds the mapped file's touched pages, as llama.cpp's does).
"""
from __future__ import annotations

import os
import resource
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from llmtk.ggufio.constants import GGMLType, Key

TINYLLAMA_SHAPE = dict(n_embd=2048, n_ff=5632, n_head=32, n_head_kv=4, n_vocab=32000)


def _tensors(n_layer: int, n_embd: int, n_ff: int, n_head: int, n_head_kv: int,
             n_vocab: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(name, NumPy shape) of a llama model's tensors, tied output (token_embd serves both)."""
    head = n_embd // n_head
    yield "token_embd.weight", (n_vocab, n_embd)
    yield "output_norm.weight", (n_embd,)
    for il in range(n_layer):
        b = f"blk.{il}."
        yield b + "attn_norm.weight", (n_embd,)
        yield b + "attn_q.weight", (n_head * head, n_embd)
        yield b + "attn_k.weight", (n_head_kv * head, n_embd)
        yield b + "attn_v.weight", (n_head_kv * head, n_embd)
        yield b + "attn_output.weight", (n_embd, n_head * head)
        yield b + "ffn_norm.weight", (n_embd,)
        yield b + "ffn_gate.weight", (n_ff, n_embd)
        yield b + "ffn_up.weight", (n_ff, n_embd)
        yield b + "ffn_down.weight", (n_embd, n_ff)


def write_synthetic_llama(path: str | os.PathLike, n_layer: int, *, n_embd: int = 2048, n_ff: int = 5632,
                          n_head: int = 32, n_head_kv: int = 4, n_vocab: int = 32000, qtype: str = "F16",
                          seed: int = 0) -> Path:
    """A llama GGUF of seeded random weights (σ 0.02; norms 1) with the given shape, written one
    tensor at a time, 2-D weights in `qtype` (F16, F32 or any type llmtk quantizes to)."""
    from llmtk import kernels
    from llmtk.ggufio import GGUFWriter

    path = Path(path)
    wtype = GGMLType[qtype.upper()]
    dims = dict(n_embd=n_embd, n_ff=n_ff, n_head=n_head, n_head_kv=n_head_kv, n_vocab=n_vocab)
    specs = list(_tensors(n_layer, **dims))
    rng = np.random.default_rng(seed)
    with GGUFWriter(path) as w:
        w.add_kv(Key.ARCHITECTURE, "llama")
        w.add_kv(Key.BLOCK_COUNT.format(arch="llama"), int(n_layer))
        w.add_kv(Key.EMBEDDING_LENGTH.format(arch="llama"), int(n_embd))
        for suffix, value in (("context_length", 4096), ("feed_forward_length", n_ff),
                              ("attention.head_count", n_head), ("attention.head_count_kv", n_head_kv),
                              ("rope.dimension_count", n_embd // n_head)):
            w.add_kv(f"llama.{suffix}", int(value))
        w.add_kv("llama.attention.layer_norm_rms_epsilon", 1e-5)
        w.add_kv("llama.rope.freq_base", 10000.0)
        for name, shape in specs:
            t = wtype if len(shape) == 2 else GGMLType.F32
            w.add_tensor_info(name, shape, t)
        for name, shape in specs:
            if len(shape) == 1:
                w.write_tensor(name, np.ones(shape, np.float32))
                continue
            x = (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02))
            if wtype == GGMLType.F32:
                w.write_tensor(name, x)
            elif wtype == GGMLType.F16:
                w.write_tensor(name, x.astype(np.float16))
            else:
                w.write_tensor(name, kernels.quantize(x, wtype))
    return path


def weights_f32_bytes(path: str | os.PathLike) -> int:
    """Bytes the model's weights would take as float32 (what a dequantized copy of it holds)."""
    from llmtk.ggufio.shards import open_gguf

    with open_gguf(path) as r:
        return sum(4 * int(np.prod(t.shape)) for t in r.tensors.values())


def forward_memory(path: str | os.PathLike, n_tokens: int = 512, *, threads: int | None = None,
                   weight_budget: int | None = None, seed: int = 0) -> dict[str, float]:
    """Run one `n_tokens` batch (random ids, seeded) through the model, after an 8-token warm-up
    pass (numba's cache, module tables), and report in MB: `traced peak MB` (NumPy's allocations
    at their peak during the batch: activations, logits, KV cache and the weights dequantized
    for it), `kept MB` (weights the model keeps between calls: float32 copies within a
    `weight_budget`, decode forms), their sum `batch MB`, `peak RSS MB` (the process's since it
    started: imports and the mapped file's touched pages included) and the batch's `seconds`."""
    from llmtk.model import load_model

    opts = {} if weight_budget is None else {"weight_budget": weight_budget}
    with load_model(path, threads=threads, **opts) as m:
        ids = np.random.default_rng(seed).integers(0, m.n_vocab, size=n_tokens, dtype=np.int32)
        m.forward(ids[:8])
        tracemalloc.start()
        try:
            t0 = time.perf_counter()
            m.forward(ids)
            secs = time.perf_counter() - t0
            traced = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        kept = m.w.used + m.w.decode_used
    return {"traced peak MB": traced / 1e6, "kept MB": kept / 1e6, "batch MB": (traced + kept) / 1e6,
            "peak RSS MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": secs}
