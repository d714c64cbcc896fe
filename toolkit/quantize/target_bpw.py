"""Each tensor's type chosen for a size budget: `llmtk quantize --target-bpw B / --target-size S`.

llama-quantize's mixes are fixed rules; here every quantizable tensor gets the candidate type
that makes the least *predicted* damage while the whole file stays within the budget. The
prediction (docs/target-bpw.md) is, for tensor t quantized to type c,

    D_t(c) = s_t * e_t(c),   e_t(c) = sum_ij a_j (W_ij - Q_c(W)_ij)^2

where `a_j` is the mean square of the activations meeting column j (an importance matrix) and
`s_t` a measured factor (KL divergence per unit of error, `llmtk.evals.sensitivity`). This module
holds what needs no model: the candidate sets (with llama-quantize's shape fallbacks and imatrix
requirements, `llama-quant.cpp`'s `tensor_type_fallback` and `tensor_requires_imatrix`), the
error `e_t(c)` from the kernels, the exact solve of "least sum of D under the byte budget" (a
multiple-choice knapsack by dynamic programming), and the interop: the `--tensor-type-file` and
`--override-kv` arguments with which llama-quantize writes the same bytes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import numpy.typing as npt
from llmtk.errors import InputError, UnsupportedError
from llmtk.ggufio.constants import (
    GGML_TYPE_TRAITS,
    GGMLType,
    Key,
    parse_ggml_type,
)
from llmtk.quantize.rules import (
    FileType,
    ggml_type_name,
    requires_imatrix,
    shape_fallback,
)
from llmtk.registry import Registry

T = GGMLType
METHOD = "llmtk sensitivity: KLD factor x imatrix-weighted error per tensor, exact knapsack"

# Candidate types by family; a file type names its family (`family_for`). Each family holds the
# types its stock mixes use, so that the stock mix is one of the solutions the solve can pick.
FAMILIES: Registry[tuple[GGMLType, ...]] = Registry("candidate family", normalize=str.lower, error=InputError)
FAMILIES.add("k", (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q8_0))
FAMILIES.add("iq", (T.IQ1_S, T.IQ1_M, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ4_XS,
                    T.Q2_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q8_0))
FAMILIES.add("legacy", (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0))

_FAMILY_OF_DEFAULT = {
    **{t: "k" for t in (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K)},
    **{t: "iq" for t in (T.IQ1_S, T.IQ1_M, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ4_XS,
                         T.IQ4_NL)},
    **{t: "legacy" for t in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0)},
}


def family_for(ft: FileType) -> str:
    """The candidate family a file type names (`Q4_K_M` -> `k`, `IQ2_M` -> `iq`, `Q5_0` -> `legacy`)."""
    fam = _FAMILY_OF_DEFAULT.get(ft.default)
    if fam is None:
        raise InputError(f"type {ft.name} names no candidate family for --target-bpw (families: "
                         f"{', '.join(FAMILIES.names())}); pass --candidates TYPE,TYPE,...")
    return fam


def parse_candidates(text: str | Sequence[str | GGMLType]) -> list[GGMLType]:
    """`Q2_K,Q4_K,...` (ggml type names, any case) or a family name -> types, without repeats."""
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    if isinstance(text, str) and len(items) == 1 and items[0].lower() in FAMILIES:
        return list(FAMILIES[items[0]])
    out: list[GGMLType] = []
    for s in items:
        if s == "":
            continue
        try:
            t = parse_ggml_type(s)
        except UnsupportedError as e:
            raise InputError(f"--candidates: {e}") from None
        if not GGML_TYPE_TRAITS[t].is_quantized and t not in (T.F16, T.BF16):
            raise InputError(f"--candidates: {t.name} is not a quantization type")
        if t not in out:
            out.append(t)
    if not out:
        raise InputError("--candidates names no type")
    return out


_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "KIB": 1024, "M": 1000**2, "MB": 1000**2, "MIB": 1024**2,
          "G": 1000**3, "GB": 1000**3, "GIB": 1024**3, "T": 1000**4, "TB": 1000**4, "TIB": 1024**4}


def parse_size(text: str) -> int:
    """`3.2GiB`, `850MB`, `123456789` -> bytes (KiB/MiB/GiB are powers of 1024, KB/MB/GB of 1000)."""
    m = _SIZE.match(str(text))
    unit = (m.group(2) or "").upper() if m else None
    if m is None or unit not in _UNITS:
        raise InputError(f"--target-size {text!r}: expected a number of bytes with an optional unit "
                         "(B, KB, MB, GB, KiB, MiB, GiB)")
    return int(float(m.group(1)) * _UNITS[unit])


# ---------------------------------------------------------------------------------------------
# Candidates per tensor
# ---------------------------------------------------------------------------------------------

def tensor_candidates(name: str, n_cols: int, types: Iterable[GGMLType], ft: FileType, *,
                      has_imatrix_entry: bool) -> list[GGMLType]:
    """The types a tensor can really get from `types`, cheapest first: each after llama-quantize's
    shape fallback (a Q4_K of a 576-wide row is written as Q5_0), without types that need an
    importance matrix this tensor lacks (ggml asserts one for IQ2_XXS/IQ2_XS/IQ1_S; llama-quantize
    refuses the very-low-bit types without one), and without types that have no fallback."""
    from llmtk import kernels

    out: set[GGMLType] = set()
    for t in types:
        try:
            eff, _ = shape_fallback(name, n_cols, t)
        except UnsupportedError:
            continue
        needs = kernels.requires_imatrix(eff) or requires_imatrix(name, eff, ft.ftype)
        if needs and not has_imatrix_entry:
            continue
        out.add(eff)
    tt = GGML_TYPE_TRAITS
    return sorted(out, key=lambda t: (tt[t].type_size / tt[t].block_size, int(t)))


def padded(n_bytes: int, alignment: int = 32) -> int:
    return -(-n_bytes // alignment) * alignment


# ---------------------------------------------------------------------------------------------
# The error a type makes on a tensor (the cheap half of the sensitivity)
# ---------------------------------------------------------------------------------------------

def sample_rows(n_rows: int, max_rows: int) -> npt.NDArray[np.int64]:
    """Evenly spaced row indices (all rows when there are at most `max_rows`); deterministic, so
    every candidate type is measured on the same rows and their ratios are exact for those rows."""
    if n_rows <= max_rows:
        return np.arange(n_rows, dtype=np.int64)
    return np.unique(np.linspace(0, n_rows - 1, max_rows).round().astype(np.int64))


def weighted_error(w: npt.NDArray[np.float32], qtype: GGMLType, col_weights: npt.NDArray[np.float32], *,
                   quant_imatrix: npt.NDArray[np.float32] | None = None) -> float:
    """sum_ij a_j (w_ij - deq(q(w))_ij)^2 for rows `w` (rows, cols) quantized to `qtype` as
    llama-quantize would (with `quant_imatrix` where the type uses one), weighted by the
    activations' mean squares `col_weights` (cols,): the expected squared error of the matmul's
    output, the quantity a tensor's damage to the logits grows with."""
    from llmtk import kernels

    w = np.ascontiguousarray(w, dtype=np.float32)
    if qtype in (T.F32,):
        return 0.0
    q = kernels.quantize(w, qtype, imatrix=quant_imatrix if kernels.uses_imatrix(qtype) else None)
    d = kernels.dequantize(q, qtype, w.shape)
    diff = (w - d).astype(np.float64)
    return float(np.einsum("ij,ij,j->", diff, diff, np.asarray(col_weights, dtype=np.float64)))


# ---------------------------------------------------------------------------------------------
# The solve: least predicted damage under the byte budget
# ---------------------------------------------------------------------------------------------

@dataclass
class TensorOptions:
    """One quantizable tensor's candidates, cheapest first: bytes and predicted damage of each."""

    name: str
    types: list[GGMLType]
    n_bytes: list[int]
    damage: list[float]

    def __post_init__(self) -> None:
        if not self.types or not (len(self.types) == len(self.n_bytes) == len(self.damage)):
            raise InputError(f"{self.name}: no candidate type (or mismatched candidate lists)")


@dataclass
class Solution:
    """The chosen type per tensor, with the bytes it takes and the damage predicted for it."""

    types: dict[str, GGMLType]
    n_bytes: int                       # bytes of the chosen tensors (as budgeted: padded or not)
    damage: float
    budget: int
    min_bytes: int                     # the cheapest mix's bytes (all tensors at their cheapest)
    max_bytes: int
    per_tensor: dict[str, tuple[int, float]] = field(default_factory=dict)   # name -> (bytes, damage)


def solve(tensors: Sequence[TensorOptions], budget: int, *, resolution: int = 1 << 17) -> Solution:
    """Least sum of damage with sum of bytes <= `budget` (a multiple-choice knapsack).

    Exact dynamic programming over the bytes above the cheapest mix, counted in units of
    `(max - min) / resolution` bytes with every candidate's cost rounded *up*, so the budget is
    never exceeded; the unit depends on the tensors only, so a larger budget never gives a worse
    solution. The rounding leaves less than one unit per tensor unused (about 0.1% of a
    SmolLM2-sized file at the default resolution). Ties go to the cheaper type. Raises InputError when even the cheapest mix is too big.
    """
    min_b = sum(min(t.n_bytes) for t in tensors)
    max_b = sum(max(t.n_bytes) for t in tensors)
    if budget < min_b:
        raise InputError(f"the budget of {budget} bytes is below the smallest mix the candidates allow "
                         f"({min_b} bytes for the tensors being chosen): raise it or add smaller candidates")
    span = max_b - min_b
    unit = max(1, -(-span // resolution))
    capacity = min((budget - min_b) // unit, sum(-(-(max(t.n_bytes) - min(t.n_bytes)) // unit) for t in tensors))
    best = np.zeros(capacity + 1, dtype=np.float64)     # least damage with at most b units, so far
    choices = np.zeros((len(tensors), capacity + 1), dtype=np.uint8)
    for i, t in enumerate(tensors):
        lo = min(t.n_bytes)
        cand = np.full((len(t.types), capacity + 1), np.inf)
        for c, (nb, dmg) in enumerate(zip(t.n_bytes, t.damage)):
            k = -(-(nb - lo) // unit)
            if k <= capacity:
                cand[c, k:] = best[:capacity + 1 - k] + dmg
        pick = np.argmin(cand, axis=0)
        choices[i] = pick
        best = cand[pick, np.arange(capacity + 1)]
    chosen: dict[str, GGMLType] = {}
    per: dict[str, tuple[int, float]] = {}
    b = capacity
    for i in range(len(tensors) - 1, -1, -1):
        t = tensors[i]
        c = int(choices[i, b])
        chosen[t.name] = t.types[c]
        per[t.name] = (t.n_bytes[c], t.damage[c])
        b -= -(-(t.n_bytes[c] - min(t.n_bytes)) // unit)
    order = [t.name for t in tensors]
    n_bytes = sum(per[n][0] for n in order)
    assert n_bytes <= budget, (n_bytes, budget)
    return Solution({n: chosen[n] for n in order}, n_bytes, float(sum(per[n][1] for n in order)), budget,
                    min_b, max_b, {n: per[n] for n in order})


# ---------------------------------------------------------------------------------------------
# Interop with llama-quantize
# ---------------------------------------------------------------------------------------------

def tensor_type_pattern(name: str) -> str:
    """A regex that matches exactly this tensor name (llama-quantize uses `std::regex_search` on
    lower-cased patterns, so anchor and escape it)."""
    return "^" + re.escape(name.lower()) + "$"


def tensor_type_pairs(types: dict[str, GGMLType]) -> list[tuple[str, str]]:
    """(pattern, ggml type name) per tensor, as `--tensor-type` takes them."""
    return [(tensor_type_pattern(n), ggml_type_name(t)) for n, t in types.items()]


def tensor_type_file_text(types: dict[str, GGMLType]) -> str:
    """The `--tensor-type-file` llama-quantize reads (whitespace-separated PATTERN=TYPE)."""
    return "".join(f"{p}={t}\n" for p, t in tensor_type_pairs(types))


@dataclass(frozen=True)
class TargetRecord:
    """What goes into the file's metadata about the choice (all as llama-quantize --override-kv)."""

    target_bpw: float
    target_size: int | None
    candidates: Sequence[GGMLType]
    predicted_kld: float
    calibration: str

    def override_kv(self) -> list[str]:
        """`KEY=TYPE:VALUE` strings, in the order they are set (llama-quantize's --override-kv)."""
        cands = ",".join(ggml_type_name(t) for t in self.candidates)[:127]
        out = [f"{Key.QUANTIZE_TARGET_METHOD}=str:{METHOD[:127]}",
               f"{Key.QUANTIZE_TARGET_BPW}=float:{self.target_bpw:.4f}"]
        if self.target_size is not None:
            out.append(f"{Key.QUANTIZE_TARGET_SIZE}=str:{self.target_size}")
        out += [f"{Key.QUANTIZE_TARGET_CANDIDATES}=str:{cands}",
                f"{Key.QUANTIZE_TARGET_PREDICTED_KLD}=float:{self.predicted_kld:.6g}",
                f"{Key.QUANTIZE_TARGET_CALIBRATION}=str:{_kv_safe(self.calibration)[:127]}"]
        return out


def _kv_safe(text: str) -> str:
    # a value travels as one shell word and one --override-kv argument: no spaces or '='
    return re.sub(r"[\s=\"'\\]+", "_", text)


def override_kv_bytes(overrides: Iterable[str]) -> int:
    """An upper bound of the bytes these overrides add to a GGUF header (key, type, value)."""
    n = 0
    for o in overrides:
        key, _, rest = o.partition("=")
        kind, _, val = rest.partition(":")
        n += 8 + len(key.encode()) + 4 + (8 + len(val.encode()) if kind == "str" else 8)
    return n


def llama_quantize_command(in_path: str, out_path: str, ftype: str, type_file: str, overrides: Sequence[str],
                           imatrix: str | None = None) -> str:
    """The llama-quantize command line that writes the same file."""
    import shlex

    parts = ["llama-quantize", "--allow-requantize"]
    if imatrix:
        parts += ["--imatrix", imatrix]
    parts += ["--tensor-type-file", type_file]
    for o in overrides:
        parts += ["--override-kv", o]
    parts += [in_path, out_path, ftype]
    return " ".join(shlex.quote(p) for p in parts)
