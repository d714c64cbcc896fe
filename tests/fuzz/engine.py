"""A small seeded, structure-aware mutation fuzzer for llmtk's parsers, run out of process.

Each target has seeds (valid inputs built here with `struct`/`json`, or a tiny checkpoint from
../shared), mutators that know the format (GGUF metadata and tensor infos, safetensors/config
JSON values, .dat entries, KLD headers and per-token scales) plus plain byte mutations, and a
`run(folder)` that feeds the case to the library the way a command does. Cases run in a worker
process under an address-space cap (resource.setrlimit) with a per-case timeout; the parent
counts outcomes:

    ok          the input was accepted
    llmtk       one LlmtkError with a one-line message (the promise kept)
    other       any other exception (a bug: the detail names it)
    badmsg      an LlmtkError whose message spans lines (B6)
    timeout     the case ran past the per-case limit (a hang)
    memory      MemoryError or the worker died under the memory cap (an unbounded allocation)
    crash       the worker died otherwise

`python tests/fuzz/engine.py --worker` is the worker; `benchmarks/fuzz.py` and
`tests/fuzz/test_fuzz_fast.py` drive `Fuzzer`.
"""
from __future__ import annotations

import json
import math
import os
import random
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ["LLMTK_SHARED"]) if os.environ.get("LLMTK_SHARED") else ROOT.parent / "shared"
OUTCOMES = ("ok", "llmtk", "other", "badmsg", "timeout", "memory", "crash")
MEMORY_CAP = 3 << 30  # bytes of address space a worker may map (numba and NumPy need ~1 GiB)

# --------------------------------------------------------------------------------------------
# GGUF as data: [(key, vtype, item_type, value)], [(name, ne, ggml_type, offset)], data bytes
# --------------------------------------------------------------------------------------------

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_FMT = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?", U64: "Q", I64: "q", F64: "d"}


def _s(b: str | bytes) -> bytes:
    b = b.encode("utf-8", "surrogatepass") if isinstance(b, str) else b
    return struct.pack("<Q", len(b)) + b


def _val(vt: int, v: Any) -> bytes:
    if vt == STR:
        return _s(v)
    fmt = _FMT[vt]
    if vt in (F32, F64):
        try:
            return struct.pack("<" + fmt, float(v))
        except (OverflowError, ValueError, TypeError):
            return struct.pack("<" + fmt, math.inf)
    mask = (1 << (8 * struct.calcsize(fmt))) - 1
    v = int(v) & mask
    if fmt.islower() and v >> (8 * struct.calcsize(fmt) - 1):
        v -= mask + 1
    return struct.pack("<" + fmt, bool(v) if vt == BOOL else v)


@dataclass
class Gguf:
    kv: list[list] = field(default_factory=list)        # [key, vtype, item_type, value]
    tensors: list[list] = field(default_factory=list)   # [name, ne, ggml_type, offset]
    data: bytes = b""
    alignment: int = 32

    def pack(self) -> bytes:
        out = [b"GGUF", struct.pack("<IQQ", 3, len(self.tensors), len(self.kv))]
        for key, vt, it, v in self.kv:
            out.append(_s(key) + struct.pack("<I", vt))
            if vt == ARR:
                out.append(struct.pack("<IQ", it, len(v)) + b"".join(_val(it, x) for x in v))
            else:
                out.append(_val(vt, v))
        for name, ne, t, off in self.tensors:
            out.append(_s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d & (2**64 - 1)) for d in ne)
                       + struct.pack("<IQ", t & 0xFFFFFFFF, off & (2**64 - 1)))
        body = b"".join(out)
        return body + b"\0" * (-len(body) % self.alignment) + self.data

    def add_tensor(self, name: str, arr: Any, ggml_type: int = 0) -> None:
        import numpy as np
        raw = np.ascontiguousarray(arr, dtype=np.float32 if ggml_type == 0 else np.float16).tobytes()
        off = len(self.data)
        self.tensors.append([name, list(reversed(arr.shape)), ggml_type, off])
        self.data += raw + b"\0" * (-len(raw) % self.alignment)


def parse_gguf(raw: bytes) -> Gguf | None:
    """The seed's structure (the seeds are valid files llmtk's reader accepts)."""
    import numpy as np

    with tempfile.NamedTemporaryFile(suffix=".gguf") as f:
        f.write(raw)
        f.flush()
        from llmtk.ggufio import GGUFReader
        with GGUFReader(f.name) as r:
            g = Gguf(alignment=r.alignment)
            for k, v in r.kv.items():
                vt, it = r.kv_types[k]
                g.kv.append([k, int(vt), None if it is None else int(it),
                             v.tolist() if isinstance(v, np.ndarray) else v])
            for t in r.tensors.values():
                g.tensors.append([t.name, list(t.ne), int(t.qtype), t.offset - r.data_offset])
            g.data = raw[r.data_offset:]
    return g


# --------------------------------------------------------------------------------------------
# Mutators
# --------------------------------------------------------------------------------------------

INTS = [0, 1, 2, 3, -1, -2, 7, 255, 256, 65535, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53, 2**62, 2**63 - 1,
        2**63, 2**64 - 1, 10**9, 10**18]
FLOATS = [0.0, -0.0, 1.0, -1.0, 1e-45, 3e38, -3e38, 1e308, math.inf, -math.inf, math.nan, 65504.0, 1e18]


def bytes_mutate(rng: random.Random, b: bytes, n: int = 0) -> bytes:
    a = bytearray(b)
    for _ in range(n or rng.randint(1, 4)):
        if not a:
            a += bytes([rng.randrange(256)])
            continue
        op = rng.randrange(6)
        i = rng.randrange(len(a))
        if op == 0:
            a[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            a[i] = rng.randrange(256)
        elif op == 2:  # an interesting integer over 4 or 8 aligned bytes
            w = rng.choice((4, 8))
            i -= i % w
            v = rng.choice(INTS) & ((1 << (8 * w)) - 1)
            a[i:i + w] = v.to_bytes(w, "little")[:len(a) - i]
        elif op == 3:  # an interesting float
            i -= i % 4
            a[i:i + 4] = struct.pack("<f", rng.choice(FLOATS[:5] + [math.inf, math.nan]))[:len(a) - i]
        elif op == 4:
            del a[rng.randrange(len(a)):][:0 if rng.random() < 0.5 else None]
            if rng.random() < 0.5:
                del a[i:]
        else:
            a[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(a)


def json_value(rng: random.Random) -> Any:
    c = rng.randrange(12)
    if c == 0:
        return None
    if c == 1:
        return rng.choice(["x", "", "F32", "BF16", "\n\x1b[31m", "../../etc/passwd", "/etc/passwd", "a" * 300])
    if c == 2:
        return rng.choice(INTS)
    if c == 3:
        return rng.choice([1e308, -1e308, 0.5, 1e-300, -3.5, 3e38])
    if c == 4:
        return [rng.choice(INTS) for _ in range(rng.randint(0, 3))]
    if c == 5:
        return {}
    if c == 6:
        return rng.choice([True, False])
    if c == 7:
        return [[[[[[]]]]]]
    if c == 8:
        return rng.randint(-3, 70)
    if c == 9:
        return [0, 0]
    if c == 10:
        return float(rng.choice([0.0, 1.0, 2.0, 4.0]))
    return rng.choice(INTS[:10])


def json_mutate(rng: random.Random, doc: Any, n: int = 0) -> Any:
    """Replace, delete or add values at random paths of a JSON document (a deep copy)."""
    doc = json.loads(json.dumps(doc))
    for _ in range(n or rng.randint(1, 3)):
        paths: list[tuple[Any, Any]] = []

        def walk(node: Any, depth: int) -> None:
            if depth > 6:
                return
            if isinstance(node, dict):
                for k in list(node)[:200]:
                    paths.append((node, k))
                    walk(node[k], depth + 1)
            elif isinstance(node, list):
                for i in range(min(len(node), 8)):
                    paths.append((node, i))
                    walk(node[i], depth + 1)
        walk(doc, 0)
        if not paths:
            return json_value(rng)
        parent, key = rng.choice(paths)
        op = rng.randrange(10)
        if op < 7:
            parent[key] = json_value(rng)
        elif op == 7 and isinstance(parent, dict):
            del parent[key]
        elif op == 8 and isinstance(parent, dict):
            parent[rng.choice(["shape", "dtype", "data_offsets", "num_hidden_layers", "vocab_size",
                               "__metadata__", "x"])] = json_value(rng)
        else:
            v = parent[key]
            if isinstance(v, int) and not isinstance(v, bool):
                parent[key] = v + rng.choice([-1, 1, 2, 1 << 32])
    return doc


def gguf_mutate(rng: random.Random, g: Gguf, keys_of_interest: list[str] = ()) -> bytes:
    """Mutate metadata values and types, tensor names, shapes, types and offsets, then pack
    (sometimes followed by byte mutations of the packed file)."""
    import copy
    g = copy.deepcopy(g)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(12)
        if op <= 4 and g.kv:
            cands = [e for e in g.kv if any(k in e[0] for k in keys_of_interest)] if keys_of_interest else []
            e = rng.choice(cands if cands and rng.random() < 0.8 else g.kv)
            c = rng.randrange(8)
            if c == 0:
                e[1], e[2], e[3] = STR, None, rng.choice(["x", "", "32", "\n\x1b"])
            elif c == 1:
                e[1], e[2], e[3] = ARR, rng.choice([U32, I32, F32, STR]), [1, 2] if rng.random() < 0.5 else []
                if e[2] == STR:
                    e[3] = ["a"]
            elif c == 2:
                e[1], e[2], e[3] = F32, None, rng.choice(FLOATS)
            elif c == 3:
                e[1], e[2], e[3] = rng.choice([U32, I32, U64, I64]), None, rng.choice(INTS)
            elif c == 4:
                g.kv.remove(e)
            elif c == 5:
                e[1], e[2], e[3] = BOOL, None, 1
            elif c == 6 and e[1] == ARR and e[3]:
                if e[2] == STR:
                    e[3] = e[3][:rng.randrange(len(e[3]) + 1)]
                else:
                    e[3] = [rng.choice(INTS) if e[2] not in (F32, F64) else rng.choice(FLOATS) for _ in e[3]]
            else:
                e[1], e[2], e[3] = F64, None, rng.choice(FLOATS)
        elif op <= 8 and g.tensors:
            t = rng.choice(g.tensors)
            c = rng.randrange(7)
            if c == 0:
                g.tensors.remove(t)
            elif c == 1 and t[1]:
                t[1][rng.randrange(len(t[1]))] = rng.choice(INTS)
            elif c == 2:
                t[1] = t[1] + [1] if rng.random() < 0.5 else t[1][:-1]
            elif c == 3:
                t[2] = rng.choice([0, 1, 2, 8, 12, 14, 24, 26, 30, 39, 4, 1000])
            elif c == 4:
                t[3] = rng.choice([0, 32, t[3] + 32, 2**63, len(g.data)])
            elif c == 5:
                t[0] = rng.choice(["output_norm.weight", "token_embd.weight", "blk.0.attn_norm.weight",
                                   "x\n\x1b[2J", "blk.99999.ffn_up.weight", t[0] + "_"])
            else:
                t[1] = list(reversed(t[1]))
        elif op == 9:
            g.kv.append([rng.choice(keys_of_interest or ["general.alignment"]) if keys_of_interest else
                         "general.alignment", U32, None, rng.choice([0, 1, 3, 64, 2**31])])
        elif op == 10:
            g.data = g.data[:rng.randrange(len(g.data) + 1)]
        else:
            g.kv.append(["x" * rng.randint(1, 8), rng.choice([U8, STR, ARR]), STR, ["a"] * 3])
            if g.kv[-1][1] == U8:
                g.kv[-1][2], g.kv[-1][3] = None, 7
            elif g.kv[-1][1] == STR:
                g.kv[-1][2], g.kv[-1][3] = None, "v"
    raw = g.pack()
    return bytes_mutate(rng, raw) if rng.random() < 0.2 else raw


# --------------------------------------------------------------------------------------------
# Seeds
# --------------------------------------------------------------------------------------------

def seed_gguf_small() -> bytes:
    import numpy as np
    g = Gguf(kv=[["general.architecture", STR, None, "llama"], ["llama.block_count", U32, None, 2],
                 ["tokenizer.ggml.tokens", ARR, STR, ["a", "b", "c"]],
                 ["llama.rope.freq_base", F32, None, 10000.0]])
    g.add_tensor("a", np.arange(4, dtype=np.float32))
    g.add_tensor("b", np.arange(8, dtype=np.float32).reshape(2, 4))
    g.add_tensor("c", np.ones((3, 64), np.float32), 1)
    return g.pack()


def seed_model(arch: str = "llama", seed: int = 0) -> bytes:
    """A tiny random model of `arch` (n_embd 16, 4 heads / 2 kv heads, 2 layers, vocab 32)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    E, H, KV, D, FF, V, NL = 16, 4, 2, 4, 24, 32, 2
    n_exp = 4 if arch == "qwen3moe" else 0
    a = arch
    kv = [["general.architecture", STR, None, a], [f"{a}.block_count", U32, None, NL],
          [f"{a}.context_length", U32, None, 128], [f"{a}.embedding_length", U32, None, E],
          [f"{a}.feed_forward_length", U32, None, FF], [f"{a}.attention.head_count", U32, None, H],
          [f"{a}.attention.head_count_kv", U32, None, KV], [f"{a}.rope.freq_base", F32, None, 10000.0],
          [f"{a}.attention.layer_norm_rms_epsilon", F32, None, 1e-5], [f"{a}.rope.dimension_count", U32, None, D]]
    if arch == "gemma3":
        kv += [[f"{a}.attention.sliding_window", U32, None, 8], [f"{a}.attention.key_length", U32, None, D],
               [f"{a}.attention.value_length", U32, None, D]]
    if n_exp:
        kv += [[f"{a}.expert_count", U32, None, n_exp], [f"{a}.expert_used_count", U32, None, 2],
               [f"{a}.expert_feed_forward_length", U32, None, FF]]
    g = Gguf(kv=kv)
    w = lambda *s: (rng.standard_normal(s) * 0.2).astype(np.float32)  # noqa: E731
    g.add_tensor("token_embd.weight", w(V, E))
    g.add_tensor("output_norm.weight", 1 + w(E))
    for il in range(NL):
        p = f"blk.{il}."
        g.add_tensor(p + "attn_norm.weight", 1 + w(E))
        g.add_tensor(p + "attn_q.weight", w(H * D, E))
        g.add_tensor(p + "attn_k.weight", w(KV * D, E))
        g.add_tensor(p + "attn_v.weight", w(KV * D, E))
        g.add_tensor(p + "attn_output.weight", w(E, H * D))
        g.add_tensor(p + "ffn_norm.weight", 1 + w(E))
        if arch in ("qwen3", "qwen3moe", "gemma3"):
            g.add_tensor(p + "attn_q_norm.weight", 1 + w(D))
            g.add_tensor(p + "attn_k_norm.weight", 1 + w(D))
        if arch == "gemma3":
            g.add_tensor(p + "post_attention_norm.weight", 1 + w(E))
            g.add_tensor(p + "post_ffw_norm.weight", 1 + w(E))
        if n_exp:
            g.add_tensor(p + "ffn_gate_inp.weight", w(n_exp, E))
            g.add_tensor(p + "ffn_gate_exps.weight", w(n_exp, FF, E))
            g.add_tensor(p + "ffn_up_exps.weight", w(n_exp, FF, E))
            g.add_tensor(p + "ffn_down_exps.weight", w(n_exp, E, FF))
        else:
            g.add_tensor(p + "ffn_gate.weight", w(FF, E), 1)
            g.add_tensor(p + "ffn_up.weight", w(FF, E))
            g.add_tensor(p + "ffn_down.weight", w(E, FF))
    return g.pack()


def _gpt2_byte_chars() -> list[str]:
    """GPT-2's byte-to-unicode table: the 256 single-byte tokens of a byte-level BPE vocab."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def seed_tokenizer(kind: str) -> bytes:
    """Tokenizer metadata only (what `Tokenizer.from_gguf` reads): a small byte-level BPE
    (`gpt2`, pre `llama3` or `qwen2`), a SentencePiece (`llama`) vocab with byte tokens, or a
    WordPiece (`bert`) vocab; each a few hundred tokens with merges/scores/types."""
    T = "tokenizer.ggml."
    if kind in ("gpt2", "qwen2"):
        chars = _gpt2_byte_chars()
        sp = chars[32]
        merges = [f"{sp} t", "h e", f"{sp}t he", "i n", f"{sp} a", "e r", "o n", "r e"]
        tokens = chars + ["".join(m.split(" ")) for m in merges] + ["<|endoftext|>", "<|im_start|>"]
        types = [1] * (len(tokens) - 2) + [3, 3]
        kv = [[T + "model", STR, None, "gpt2"], [T + "pre", STR, None, "llama3" if kind == "gpt2" else "qwen2"],
              [T + "tokens", ARR, STR, tokens], [T + "token_type", ARR, I32, types],
              [T + "merges", ARR, STR, merges], [T + "bos_token_id", U32, None, len(tokens) - 2],
              [T + "eos_token_id", U32, None, len(tokens) - 2], [T + "add_bos_token", BOOL, None, 1]]
    elif kind == "llama":
        pieces = ["\u2581the", "\u2581a", "in", "er", "\u2581Hello", "\u2581w", "or", "ld", "\u2581"]
        tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces + list("abcdefghij")
        types = [2, 3, 3] + [6] * 256 + [1] * (len(pieces) + 10)
        scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-float(i) for i in range(len(pieces) + 10)]
        kv = [[T + "model", STR, None, "llama"], [T + "pre", STR, None, "default"],
              [T + "tokens", ARR, STR, tokens], [T + "scores", ARR, F32, scores], [T + "token_type", ARR, I32, types],
              [T + "bos_token_id", U32, None, 1], [T + "eos_token_id", U32, None, 2],
              [T + "unknown_token_id", U32, None, 0], [T + "add_bos_token", BOOL, None, 1],
              [T + "add_space_prefix", BOOL, None, 1]]
    else:  # bert
        tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz0123456789") + \
            ["\u2581hello", "\u2581world", "##s", "##ing"]
        types = [3, 2, 3, 3, 3] + [1] * (len(tokens) - 5)
        kv = [[T + "model", STR, None, "bert"], [T + "pre", STR, None, "jina-v2-en"],
              [T + "tokens", ARR, STR, tokens], [T + "token_type", ARR, I32, types],
              [T + "bos_token_id", U32, None, 2], [T + "seperator_token_id", U32, None, 3],
              [T + "unknown_token_id", U32, None, 1], [T + "padding_token_id", U32, None, 0]]
    return Gguf(kv=[["general.architecture", STR, None, "llama"], *kv]).pack()


def seed_imatrix_gguf() -> bytes:
    import numpy as np
    g = Gguf(kv=[["general.type", STR, None, "imatrix"], ["imatrix.datasets", ARR, STR, ["text.txt"]],
                 ["imatrix.chunk_count", U32, None, 4], ["imatrix.chunk_size", U32, None, 512]])
    rng = np.random.default_rng(1)
    for name, n_mat, cols in (("blk.0.attn_q.weight", 1, 64), ("blk.1.attn_q.weight", 1, 64),
                              ("blk.0.ffn_up_exps.weight", 3, 32)):
        g.add_tensor(name + ".in_sum2", rng.random((n_mat, cols)).astype(np.float32) * 100 if n_mat > 1
                     else rng.random(cols).astype(np.float32) * 100)
        g.add_tensor(name + ".counts", np.full((n_mat, 1) if n_mat > 1 else (1,), 2048, np.float32))
    return g.pack()


def seed_imatrix_dat() -> bytes:
    import numpy as np
    rng = np.random.default_rng(2)
    entries = [("blk.0.attn_q.weight", 4, 64), ("blk.1.attn_q.weight", 4, 64), ("blk.0.ffn_down.weight", 4, 32)]
    out = [struct.pack("<i", len(entries))]
    for name, ncall, nval in entries:
        b = name.encode()
        out += [struct.pack("<i", len(b)), b, struct.pack("<ii", ncall, nval),
                (rng.random(nval).astype("<f4") * ncall).tobytes()]
    ds = b"text.txt"
    out += [struct.pack("<ii", 4, len(ds)), ds]
    return b"".join(out)


def seed_kld(n_vocab: int = 24, n_ctx: int = 8, n_chunk: int = 2, seed: int = 3) -> bytes:
    """A KL-divergence base file written by llmtk's own writer over random logits."""
    import numpy as np
    from llmtk.evals.perplexity import run_perplexity

    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, n_vocab, n_ctx * n_chunk).astype(np.int32)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "base.kld"
        run_perplexity(lambda c: (rng.standard_normal((len(c), n_vocab)) * 3).astype(np.float32), tokens,
                       n_ctx=n_ctx, kld_base_out=out)
        return out.read_bytes()


def seed_checkpoint(arch: str = "llama") -> dict[str, bytes] | None:
    src = SHARED / "convert" / arch / f"tiny-{arch}"
    if not src.is_dir():
        return None
    files = {}
    for f in src.iterdir():
        target = f
        if f.name == "tokenizer.json" and f.stat().st_size < 256:
            target = (f.parent / f.read_text().strip()).resolve()
        files[f.name] = target.read_bytes()
    return files


# --------------------------------------------------------------------------------------------
# Targets: seeds, a mutator over one seed, and what runs on the mutated files in the worker
# --------------------------------------------------------------------------------------------

def _split_st(raw: bytes) -> tuple[dict, bytes]:
    n = struct.unpack_from("<Q", raw)[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _join_st(header: Any, data: bytes) -> bytes:
    h = json.dumps(header, allow_nan=True).encode()
    return struct.pack("<Q", len(h)) + h + data


def mutate_checkpoint(rng: random.Random, files: dict[str, bytes]) -> dict[str, bytes]:
    files = dict(files)
    which = rng.randrange(10)
    if which < 4:  # safetensors header JSON
        header, data = _split_st(files["model.safetensors"])
        files["model.safetensors"] = _join_st(json_mutate(rng, header), data)
    elif which < 7:  # config.json values
        files["config.json"] = json.dumps(json_mutate(rng, json.loads(files["config.json"]))).encode()
    elif which == 7:  # an index that names the shard (or something else)
        header, _ = _split_st(files["model.safetensors"])
        wm = {k: "model.safetensors" for k in header if k != "__metadata__"}
        files["model.safetensors.index.json"] = json.dumps(json_mutate(rng, {"weight_map": wm}, 1)).encode()
    elif which == 8:  # experts / shapes: two tensors' entries swapped or resized
        header, data = _split_st(files["model.safetensors"])
        names = [k for k in header if k != "__metadata__"]
        a, b = rng.sample(names, 2)
        key = rng.choice(["shape", "data_offsets"])
        header[a][key], header[b][key] = header[b][key], header[a][key]
        files["model.safetensors"] = _join_st(header, data)
    else:
        files["model.safetensors"] = bytes_mutate(rng, files["model.safetensors"][:4096]) + \
            files["model.safetensors"][4096:]
    return files


def run_gguf(d: Path) -> None:
    from llmtk.ggufio import GGUFReader

    with GGUFReader(d / "case.gguf") as r:
        for name in r.tensors:
            r.array(name).sum()


def run_model(d: Path) -> None:
    import numpy as np
    from llmtk.model import load_model
    with load_model(d / "case.gguf", threads=1) as m:
        m.forward(np.array([1, 2, 3], np.int32))


TOKENIZER_TEXT = "Hello w\u00f6rld <s> </s>  12345\n\t<|im_start|> the \U0001F600 [CLS] hello\u2581x \x00\ufffd"


def run_tokenizer(d: Path) -> None:
    from llmtk.tokenizer import Tokenizer
    tok = Tokenizer.from_gguf(d / "case.gguf")
    for add, parse in ((True, True), (False, False)):
        ids = tok.encode(TOKENIZER_TEXT, add_special=add, parse_special=parse)
        tok.decode(ids)
        tok.decode(ids, special=False, remove_special=True)


def run_imatrix(d: Path) -> None:
    from llmtk.evals.imatrix import format_statistics
    from llmtk.ggufio.imatrix_file import Imatrix, read_imatrix, write_imatrix_dat, write_imatrix_gguf
    from llmtk.quantize import load_imatrix_means

    path = next(p for p in d.iterdir() if p.name.startswith("case"))
    im = read_imatrix(path)
    im.means()
    load_imatrix_means(path) if (im.is_legacy or im.has_metadata) else None
    try:
        format_statistics(im, str(path))
    finally:
        both = Imatrix(has_metadata=True)
        both.add(im, 512)
        other = d / "other"
        for f in d.iterdir():
            if f.name.startswith("other"):
                other = f
        if other.exists():
            both.add(read_imatrix(other), 512)
        write_imatrix_dat(d / "out.dat", both)
        write_imatrix_gguf(d / "out.gguf", both)


def run_kld(d: Path) -> None:
    import numpy as np
    from llmtk.evals.perplexity import KldBase, run_kl_divergence
    base = KldBase.open(d / "case.kld")
    rng = np.random.default_rng(0)
    n_chunks = json.loads((d / "opts.json").read_text()).get("chunks")
    res = run_kl_divergence(lambda c: rng.standard_normal((len(c), base.n_vocab)).astype(np.float32), base,
                            n_chunks=n_chunks)
    res.kld.format_llamacpp()


def run_convert(d: Path) -> None:
    from llmtk.converters.pipeline import convert
    convert(d / "ckpt", d / "out.gguf", "f16")


@dataclass
class Target:
    name: str
    seeds: Callable[[], list[Any]]
    mutate: Callable[[random.Random, Any], dict[str, bytes]]
    run: Callable[[Path], None]


def _gguf_seeds() -> list[Any]:
    return [seed_gguf_small(), seed_model("llama"), seed_imatrix_gguf()]


def _model_seeds() -> list[Any]:
    return [parse_gguf(seed_model(a, i)) for i, a in enumerate(("llama", "qwen3", "gemma3", "qwen3moe", "phi3x"))
            if a != "phi3x"]


_MODEL_KEYS = ["block_count", "embedding_length", "head_count", "key_length", "value_length", "rope",
               "feed_forward", "expert", "sliding_window", "epsilon", "context_length", "general.architecture"]


def _mutate_model(rng: random.Random, g: Any) -> dict[str, bytes]:
    return {"case.gguf": gguf_mutate(rng, g, _MODEL_KEYS)}


def _mutate_gguf(rng: random.Random, seed: bytes) -> dict[str, bytes]:
    if rng.random() < 0.5:
        g = parse_gguf(seed)
        return {"case.gguf": gguf_mutate(rng, g)}
    return {"case.gguf": bytes_mutate(rng, seed, rng.randint(1, 8))}


def _tokenizer_seeds() -> list[Any]:
    return [parse_gguf(seed_tokenizer(k)) for k in ("gpt2", "qwen2", "llama", "bert")]


_ODD_TOKENS = ["", " ", "\x00", "a b", "<0xZZ>", "<0x>", "<0xFF>", "\u2581" * 300, "x" * 5000, "\ud800x",
               "<s>", "##", "[UNK]", "\n", "\u00c4\u00a0"]


def _mutate_tokenizer(rng: random.Random, g: Any) -> dict[str, bytes]:
    """Generic metadata mutations of the tokenizer keys, or targeted ones: odd token texts and
    merges, token types and scores out of range, special ids past the vocab, unknown models."""
    import copy
    if rng.random() < 0.4:
        return {"case.gguf": gguf_mutate(rng, g, ["tokenizer"])}
    g = copy.deepcopy(g)
    kv = {e[0].removeprefix("tokenizer.ggml."): e for e in g.kv}
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        if op == 0 and "tokens" in kv:
            toks = kv["tokens"][3]
            toks[rng.randrange(len(toks))] = rng.choice(_ODD_TOKENS + toks[:5])
        elif op == 1 and "merges" in kv:
            m = kv["merges"][3]
            m[rng.randrange(len(m))] = rng.choice(["a", "a b c", " ", "", "zz qq", "\u0120 \u0120", m[0]])
        elif op == 2 and "token_type" in kv:
            t = kv["token_type"][3]
            t[rng.randrange(len(t))] = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, -1, 99, 2**31 - 1])
        elif op == 3 and "scores" in kv:
            sc = kv["scores"][3]
            sc[rng.randrange(len(sc))] = rng.choice(FLOATS)
        elif op == 4:
            key = rng.choice(["bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id",
                              "seperator_token_id", "eot_token_id"])
            val = rng.choice([0, 1, 2, 3, len(kv["tokens"][3]) if "tokens" in kv else 5, 2**31 - 1, 2**32 - 1])
            if key in kv:
                kv[key][3] = val
            else:
                g.kv.append(["tokenizer.ggml." + key, U32, None, val])
        else:
            key = rng.choice(["model", "pre"])
            val = rng.choice(["bert", "llama", "gpt2", "t5", "rwkv", "none", "plamo2", "ugm", "x\n", "",
                              "smollm", "deepseek-llm", "tekken", "chatglm-bpe", "gemma4"])
            if key in kv:
                kv[key][3] = val
    raw = g.pack()
    return {"case.gguf": bytes_mutate(rng, raw) if rng.random() < 0.1 else raw}


def _imatrix_gguf_seeds() -> list[Any]:
    return [("gguf", parse_gguf(seed_imatrix_gguf()))]


def _mutate_imatrix_gguf(rng: random.Random, seed: Any) -> dict[str, bytes]:
    files = {"case.gguf": gguf_mutate(rng, seed[1], ["imatrix", "in_sum2", "counts"])}
    if rng.random() < 0.3:
        files["other.dat"] = bytes_mutate(rng, seed_imatrix_dat(), 1) if rng.random() < 0.5 else seed_imatrix_dat()
    return files


def _mutate_imatrix_dat(rng: random.Random, seed: bytes) -> dict[str, bytes]:
    files = {"case.dat": bytes_mutate(rng, seed, rng.randint(1, 4))}
    if rng.random() < 0.3:
        files["other.gguf"] = seed_imatrix_gguf()
    return files


def _mutate_kld(rng: random.Random, seed: bytes) -> dict[str, bytes]:
    a = bytearray(seed)
    n_ctx, n_vocab, n_chunk = struct.unpack_from("<iii", a, 8)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(5)
        if len(a) < 24 + 4 * n_ctx * n_chunk and op in (0, 1, 2):
            op = 4  # already cut short: byte mutations only
        if op == 0:  # a header field
            struct.pack_into("<i", a, rng.choice((8, 12, 16)), rng.choice([0, 1, 2, 3, -1, 2**31 - 1, 1 << 24, 7, 64]))
        elif op == 1:  # one token's scale or min log-prob
            start = 20 + 4 * n_ctx * n_chunk
            row = 2 * (2 * ((n_vocab + 1) // 2) + 4)
            n_rows = max(1, (len(a) - start) // row)
            off = start + rng.randrange(n_rows) * row + 4 * rng.randrange(2)
            a[off:off + 4] = _val(F32, rng.choice(FLOATS))[:max(0, len(a) - off)]
        elif op == 2:  # a token id
            struct.pack_into("<i", a, 20 + 4 * rng.randrange(n_ctx * n_chunk), rng.choice(INTS[:12]) & 0x7FFFFFFF
                             if rng.random() < 0.5 else -1)
        elif op == 3 and len(a):
            del a[rng.randrange(len(a)):]
        else:
            a = bytearray(bytes_mutate(rng, bytes(a), 2))
    chunks = rng.choice([None, None, None, 0, 1, -1, 5])
    return {"case.kld": bytes(a), "opts.json": json.dumps({"chunks": chunks}).encode()}


def _ckpt_seeds() -> list[Any]:
    seeds = [s for s in (seed_checkpoint(a) for a in ("llama", "qwen3moe", "mixtral")) if s is not None]
    return seeds


def _mutate_ckpt(rng: random.Random, seed: dict[str, bytes]) -> dict[str, bytes]:
    return {f"ckpt/{k}": v for k, v in mutate_checkpoint(rng, seed).items()}


TARGETS: dict[str, Target] = {
    "gguf": Target("gguf", _gguf_seeds, _mutate_gguf, run_gguf),
    "model": Target("model", _model_seeds, _mutate_model, run_model),
    "imatrix_gguf": Target("imatrix_gguf", _imatrix_gguf_seeds, _mutate_imatrix_gguf, run_imatrix),
    "imatrix_dat": Target("imatrix_dat", lambda: [seed_imatrix_dat()], _mutate_imatrix_dat, run_imatrix),
    "kld": Target("kld", lambda: [seed_kld()], _mutate_kld, run_kld),
    "safetensors": Target("safetensors", _ckpt_seeds, _mutate_ckpt, run_convert),
    "tokenizer": Target("tokenizer", _tokenizer_seeds, _mutate_tokenizer, run_tokenizer),
}


# --------------------------------------------------------------------------------------------
# Worker (child process) and Fuzzer (parent)
# --------------------------------------------------------------------------------------------

def _worker() -> None:
    import resource
    import logging
    logging.disable(logging.CRITICAL)
    cap = int(os.environ.get("LLMTK_FUZZ_MEM", MEMORY_CAP))
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    from llmtk.errors import LlmtkError
    import llmtk.model  # noqa: F401  (warm the imports once, not per case)
    out = sys.stdout
    sys.stdout = sys.stderr
    for line in sys.stdin:
        req = json.loads(line)
        d = Path(req["dir"])
        try:
            TARGETS[req["target"]].run(d)
            res = {"outcome": "ok"}
        except LlmtkError as e:
            msg = str(e)
            res = {"outcome": "badmsg" if ("\n" in msg or "\r" in msg) else "llmtk", "detail": msg[:300]}
        except MemoryError:
            res = {"outcome": "memory", "detail": "MemoryError"}
        except BaseException as e:  # the bug class the fuzzer looks for
            tb = traceback.extract_tb(e.__traceback__)
            where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb)
                          if "llmtk" in f.filename or "/work/" in f.filename and "fuzz" not in f.filename), "?")
            res = {"outcome": "other", "detail": f"{type(e).__name__} at {where}: {str(e)[:200]}"}
        out.write(json.dumps(res) + "\n")
        out.flush()


class Fuzzer:
    """Runs cases of one target in a worker process, restarting it after a timeout or a death."""

    def __init__(self, target: str, seed: int = 0, timeout: float = 10.0, mem_cap: int = MEMORY_CAP):
        self.t = TARGETS[target]
        self.rng = random.Random(f"{target}:{seed}")
        self.timeout = timeout
        self.mem_cap = mem_cap
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.seeds = self.t.seeds()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"llmtk-fuzz-{target}-"))
        self.proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        env = {**os.environ, "LLMTK_FUZZ_MEM": str(self.mem_cap), "NUMBA_NUM_THREADS": "1",
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True, bufsize=1)

    def _stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def case(self) -> tuple[str, str]:
        if not self.seeds:
            return "skipped", "no seeds (../shared absent?)"
        files = self.t.mutate(self.rng, self.rng.choice(self.seeds))
        d = self.tmp / "case"
        shutil.rmtree(d, ignore_errors=True)
        for rel, data in files.items():
            p = d / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        self.proc.stdin.write(json.dumps({"target": self.t.name, "dir": str(d)}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout + (30 if self.counts.total() == 0 else 0))
        if not ready:
            self._stop()
            outcome, detail = "timeout", f"more than {self.timeout} s"
        else:
            line = self.proc.stdout.readline()
            if not line:
                rc = self.proc.wait()
                self.proc = None
                outcome, detail = ("memory" if rc in (-9, -6) else "crash"), f"worker died, status {rc}"
            else:
                res = json.loads(line)
                outcome, detail = res["outcome"], res.get("detail", "")
        self.counts[outcome] += 1
        if outcome not in ("ok", "llmtk"):
            ex = self.examples.setdefault(detail.split(":")[0] if outcome == "other" else outcome, [])
            if len(ex) < 3:
                keep = self.tmp / f"fail-{outcome}-{self.counts[outcome]}"
                shutil.copytree(d, keep, dirs_exist_ok=True)
                ex.append(f"{detail} ({keep})")
        return outcome, detail

    def run(self, n_cases: int | None = None, seconds: float | None = None) -> Counter:
        t_end = time.monotonic() + seconds if seconds is not None else None
        i = 0
        try:
            while (n_cases is None or i < n_cases) and (t_end is None or time.monotonic() < t_end):
                self.case()
                i += 1
        finally:
            self._stop()
        return self.counts

    def close(self, keep_failures: bool = False) -> None:
        self._stop()
        if not keep_failures:
            shutil.rmtree(self.tmp, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        sys.path.insert(0, str(ROOT))
        _worker()
