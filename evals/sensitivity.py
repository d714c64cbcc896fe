"""How much each tensor's quantization hurts the output, measured, and the mix it implies for a budget.

`measure_sensitivity` runs the unquantized model on a few chunks of a calibration text once
(keeping its log-probabilities and the mean square of the activations meeting every weight's
columns), then perturbs one tensor at a time (that tensor alone quantized to a probe type,
everything else untouched) and measures the KL divergence of the output from the unquantized
one on the same tokens. With the probe's activation-weighted error e_t(probe) this gives each
tensor's factor s_t = KLD_t / e_t(probe): the damage per unit of error. `candidate_errors` adds
e_t(c) for any candidate type from the kernels (cheap: a sample of rows), and `plan_to_budget`
solves for the least predicted KLD sum_t s_t e_t(c_t) within the budget
(`llmtk.quantize.target_bpw.solve`). docs/target-bpw.md has the equations and the costs.

Everything measured is cached in a JSON file keyed by what it was made from (model file,
calibration text, chunks, probe), so several budgets and candidate families reuse one pass.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import numpy.typing as npt
from llmtk.errors import InputError
from llmtk.ggufio.constants import (
    GGML_TYPE_TRAITS,
    GGMLType,
    parse_ggml_type,
    tensor_nbytes,
)

CACHE_VERSION = 1
DEFAULT_PROBE = "Q4_0"
DEFAULT_N_CTX = 128
PPL_N_CTX = 512                  # the perplexity run the pass's cost is stated against
COST_RUNS = 3.0                  # probe tokens per tensor: about this many perplexity runs in all
MIN_PROBE_TOKENS, MAX_PROBE_TOKENS = 128, 1024
ERROR_ROWS = 256                 # rows per tensor sampled for the candidates' errors
_UNQUANTIZED = (GGMLType.F32, GGMLType.F16, GGMLType.BF16)

# progress(done, total, what)
Progress = Callable[[int, int, str], None]


@dataclass
class TensorSensitivity:
    """One tensor's measurements: the probe's KLD and error, and the error of each candidate type."""

    name: str
    layer: int                   # -1 outside the blocks
    kind: str                    # attn_q, ffn_down, token_embd, ...
    ne: list[int]                # GGUF order: ne[0] is the row length
    probe_type: str              # the probe after llama.cpp's shape fallback
    probe_kld: float             # mean KLD over the calibration tokens, this tensor alone at the probe
    probe_kld_stderr: float
    probe_same_top: float
    probe_error: float           # sum_ij a_j dW_ij^2 on the sampled rows, probe type, no imatrix
    n_rows_sampled: int
    col_weights: list[float] = field(repr=False, default_factory=list)   # a_j: mean square activations
    errors: dict[str, float] = field(default_factory=dict)               # candidate type -> e_t(c)

    @property
    def n_weights(self) -> int:
        return math.prod(self.ne)

    @property
    def factor(self) -> float:
        """KLD per unit of weighted error (s_t)."""
        return self.probe_kld / self.probe_error if self.probe_error > 0 else 0.0

    def predicted(self, qtype: GGMLType | str) -> float:
        """Predicted KLD of this tensor alone at `qtype` (its error must be in `errors`)."""
        name = parse_ggml_type(qtype).name
        if name not in self.errors and name == self.probe_type:
            return self.probe_kld
        return self.factor * self.errors[name]


@dataclass
class SensitivityTable:
    """A sensitivity pass over one model and calibration text (what the cache file holds)."""

    model: dict[str, Any]
    calibration: dict[str, Any]
    probe: str
    tensors: list[TensorSensitivity]
    kld_floor: float = 0.0       # the base's KLD against its own stored log-probs (subtracted)
    cost: dict[str, Any] = field(default_factory=dict)
    errors_imatrix: dict[str, Any] | None = None    # the imatrix the candidates' errors used

    def by_name(self) -> dict[str, TensorSensitivity]:
        return {t.name: t for t in self.tensors}

    # --- the cache file -----------------------------------------------------------------------

    def to_json(self) -> str:
        d = asdict(self)
        d["version"] = CACHE_VERSION
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "SensitivityTable":
        d = json.loads(text)
        if d.pop("version", None) != CACHE_VERSION:
            raise ValueError("not a sensitivity cache of this version")
        d["tensors"] = [TensorSensitivity(**t) for t in d["tensors"]]
        return cls(**d)

    def recipe(self) -> dict[str, Any]:
        return {"model": self.model, "calibration": self.calibration, "probe": self.probe}

    # --- the tables a publisher reads -------------------------------------------------------------

    def rows(self, types: Sequence[GGMLType] = ()) -> list[dict[str, Any]]:
        """One dict per tensor, most sensitive (KLD per byte at the probe) first."""
        out = []
        for t in self.tensors:
            probe = parse_ggml_type(t.probe_type)
            mib = tensor_nbytes(probe, t.ne) / 2**20
            row = {"tensor": t.name, "layer": t.layer, "kind": t.kind, "n_weights": t.n_weights,
                   "probe": t.probe_type, "probe_kld": t.probe_kld, "probe_kld_stderr": t.probe_kld_stderr,
                   "probe_same_top": t.probe_same_top, "kld_per_mib": t.probe_kld / mib if mib else 0.0,
                   "factor": t.factor}
            for q in types:      # each type as llama-quantize would write it for this tensor
                eff = _effective(t, q)
                if eff is not None and eff.name in t.errors:
                    row[f"kld_{q.name}"] = t.predicted(eff)
            out.append(row)
        out.sort(key=lambda r: -r["kld_per_mib"])
        for i, r in enumerate(out, 1):
            r["rank"] = i
        return out

    def to_csv(self, types: Sequence[GGMLType] = ()) -> str:
        rows = self.rows(types)
        cols = list(rows[0]) if rows else []
        lines = [",".join(cols)]
        for r in rows:
            lines.append(",".join(_csv_cell(r.get(c, "")) for c in cols))
        return "\n".join(lines) + "\n"

    def to_markdown(self, types: Sequence[GGMLType] = (), top: int | None = None) -> str:
        rows = self.rows(types)
        c = self.calibration
        lines = [f"# Tensor sensitivity: {Path(self.model.get('path', '?')).name}", "",
                 f"- calibration: `{c.get('name')}`, {c.get('n_chunks')} chunks of {c.get('n_ctx')} tokens "
                 f"({c.get('n_tokens_scored')} scored); probe: each tensor alone quantized to "
                 f"{self.probe} (after shape fallbacks), KLD against the unquantized model",
                 f"- cost: {self.cost.get('forward_tokens')} token forwards = "
                 f"{self.cost.get('ppl_runs', float('nan')):.2f} perplexity runs of the calibration text "
                 f"(-c {PPL_N_CTX}, all chunks), {self.cost.get('seconds', float('nan')):.0f} s",
                 "- KLD/MiB: the probe's KLD per MiB of the tensor at the probe type: protect the top rows",
                 ""]
        extra = [f"kld_{q.name}" for q in types]
        head = ["rank", "tensor", "kind", "probe KLD", "± ", "same top", "KLD/MiB"] + \
               [f"pred. KLD {q.name}" for q in types]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows[:top] if top else rows:
            cells = [str(r["rank"]), f"`{r['tensor']}`", r["kind"], f"{r['probe_kld']:.3g}",
                     f"{r['probe_kld_stderr']:.2g}", f"{100 * r['probe_same_top']:.2f}%", f"{r['kld_per_mib']:.3g}"]
            cells += [f"{r[k]:.3g}" if k in r else "–" for k in extra]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def plot_heatmap(self, path: str | Path, title: str | None = None) -> None:
        """Layer x tensor-kind heatmap of the probe's KLD per MiB (log colour scale); tensors
        outside the blocks (token_embd, output) in a strip of their own below."""
        from .report import _plt, _save_atomic

        plt = _plt()
        from matplotlib.colors import LogNorm

        layered = [t for t in self.tensors if t.layer >= 0]
        others = [t for t in self.tensors if t.layer < 0]
        kinds = sorted({t.kind for t in layered}, key=_kind_order)
        n_layer = max((t.layer for t in layered), default=-1) + 1
        grid = np.full((n_layer, len(kinds)), np.nan)

        def density(t: TensorSensitivity) -> float:
            mib = tensor_nbytes(parse_ggml_type(t.probe_type), t.ne) / 2**20
            return max(t.probe_kld / mib, 1e-12) if mib else np.nan

        for t in layered:
            grid[t.layer, kinds.index(t.kind)] = density(t)
        vals = [density(t) for t in self.tensors]
        finite = [v for v in vals if np.isfinite(v) and v > 0]
        norm = LogNorm(vmin=min(finite), vmax=max(finite)) if finite else None

        def draw(f) -> None:
            h = max(4.0, 0.28 * n_layer + 2.0)
            fig, (ax, ax2) = plt.subplots(2, 1, figsize=(1.1 * len(kinds) + 3.0, h + 1.2),
                                          gridspec_kw={"height_ratios": [max(n_layer, 1), 1.6]})
            im = ax.imshow(grid, aspect="auto", cmap="magma", norm=norm, interpolation="nearest")
            ax.grid(False)
            ax2.grid(False)
            ax.set_xticks(range(len(kinds)), kinds, rotation=30, ha="right")
            ax.set_yticks(range(n_layer), [str(i) for i in range(n_layer)], fontsize=7)
            ax.set_ylabel("layer")
            for (i, j), v in np.ndenumerate(grid):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=6,
                            color="white" if norm is not None and norm(v) < 0.6 else "black")
            ax.set_title(title or f"{Path(self.model.get('path', '')).name}: KLD per MiB, each tensor "
                         f"alone at {self.probe} (higher = protect)", fontsize=9)
            fig.colorbar(im, ax=ax, label="mean KLD per MiB")
            strip = np.array([[density(t) for t in others]]) if others else np.full((1, 1), np.nan)
            ax2.imshow(strip, aspect="auto", cmap="magma", norm=norm)
            ax2.set_xticks(range(len(others)), [t.name for t in others], fontsize=8)
            ax2.set_yticks([])
            for j, t in enumerate(others):
                v = strip[0, j]
                ax2.text(j, 0, f"{v:.2g} (KLD {t.probe_kld:.2g})", ha="center", va="center", fontsize=8,
                         color="white" if norm is not None and norm(v) < 0.6 else "black")
            fig.tight_layout()
            fig.savefig(f, format="png", dpi=110)
            plt.close(fig)

        _save_atomic(Path(path), draw)


def _effective(t: TensorSensitivity, q: GGMLType) -> GGMLType | None:
    from llmtk.errors import UnsupportedError
    from llmtk.quantize.rules import shape_fallback

    try:
        return shape_fallback(t.name, t.ne[0], q)[0]
    except UnsupportedError:
        return None


def display_candidates(table: SensitivityTable, types: Sequence[GGMLType],
                       means: dict[str, np.ndarray] | None) -> dict[str, list[GGMLType]]:
    """Per tensor, the types `types` become for it (shape fallbacks; those that need an imatrix
    it lacks left out), for the table's predicted-KLD columns."""
    from llmtk.quantize.rules import FILE_TYPES
    from llmtk.quantize.target_bpw import tensor_candidates

    neutral = FILE_TYPES["Q4_K_M"]
    return {t.name: tensor_candidates(t.name, t.ne[0], types, neutral,
                                      has_imatrix_entry=means is not None and t.name in means)
            for t in table.tensors}


_KIND_ORDER = ("attn_q", "attn_k", "attn_v", "attn_qkv", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def _kind_order(kind: str) -> tuple[int, str]:
    return (_KIND_ORDER.index(kind) if kind in _KIND_ORDER else len(_KIND_ORDER), kind)


def _csv_cell(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)
    s = str(v)
    return f'"{s}"' if "," in s or '"' in s else s


def tensor_kind(name: str) -> str:
    """`blk.3.attn_q.weight` -> `attn_q`; `token_embd.weight` -> `token_embd`."""
    base = re.sub(r"^blk\.\d+\.", "", name)
    return base[:-len(".weight")] if base.endswith(".weight") else base


# ---------------------------------------------------------------------------------------------
# The pass
# ---------------------------------------------------------------------------------------------

class _PerturbedReader:
    """A model reader in which some tensors' bytes are replaced (same type and shape): the forward
    pass reads the perturbed tensor through it and every other tensor from the file."""

    def __init__(self, reader: Any, replaced: dict[str, npt.NDArray[np.uint8]]):
        self._reader = reader
        self._replaced = replaced

    def raw(self, name: str) -> npt.NDArray[np.uint8]:
        r = self._replaced.get(name)
        return r if r is not None else self._reader.raw(name)

    def array(self, name: str) -> np.ndarray:
        r = self._replaced.get(name)
        if r is None:
            return self._reader.array(name)
        info = self._reader.tensors[name]
        dt = {GGMLType.F32: np.float32, GGMLType.F16: np.float16, GGMLType.BF16: np.uint16}[info.qtype]
        return r.view(dt).reshape(info.shape)

    def close(self) -> None:      # the real reader belongs to the caller
        pass

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._reader, attr)


def quantizable_tensors(reader: Any) -> list[str]:
    """The tensors llama-quantize may change (`rules.allows_quantization`), in its order."""
    from llmtk.ggufio.constants import Key
    from llmtk.quantize.rules import allows_quantization, ggml_dims, llama_order

    arch = str(reader.kv.get(Key.ARCHITECTURE, ""))
    names = []
    for name, info in reader.tensors.items():
        if allows_quantization(name, len(ggml_dims(tuple(reversed(info.shape)))), arch):
            names.append(name)
    return llama_order(names)


def _fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def chunk_starts(n_tokens: int, n_ctx: int, n_chunks: int) -> list[int]:
    """Start positions of `n_chunks` chunks of `n_ctx` tokens spread evenly over the text, so a
    few chunks see several parts of it rather than only its beginning."""
    if n_tokens < n_ctx:
        raise InputError(f"the calibration text has {n_tokens} tokens, fewer than one chunk of {n_ctx}")
    n_chunks = max(1, min(n_chunks, n_tokens // n_ctx))
    if n_chunks == 1:
        return [0]
    step = (n_tokens - n_ctx) / (n_chunks - 1)
    return [int(round(i * step)) for i in range(n_chunks)]


def auto_chunks(n_tokens: int, n_tensors: int, n_ctx: int) -> int:
    """Chunks per probe so the whole pass costs about COST_RUNS perplexity runs of the text:
    probe tokens per tensor = COST_RUNS * (tokens a -c 512 run scores the text with) / tensors,
    within MIN_PROBE_TOKENS..MAX_PROBE_TOKENS."""
    ppl_tokens = (n_tokens // PPL_N_CTX) * PPL_N_CTX or n_tokens
    per_probe = COST_RUNS * ppl_tokens / max(1, n_tensors + 1)
    per_probe = min(MAX_PROBE_TOKENS, max(MIN_PROBE_TOKENS, per_probe))
    return max(1, int(round(per_probe / n_ctx)))


def measure_sensitivity(model_path: str | Path, text: str, text_name: str, *, probe: str = DEFAULT_PROBE,
                        n_ctx: int = DEFAULT_N_CTX, n_chunks: int | None = None, threads: int | None = None,
                        tensors: Sequence[str] | None = None, progress: Progress | None = None) -> SensitivityTable:
    """The pass (see the module docstring). `tensors` limits it to some names (tests)."""
    from llmtk import kernels
    from llmtk.evals import logprobs as lp
    from llmtk.model import load_model
    from llmtk.quantize.rules import shape_fallback

    from .runner import ModelRunner

    t0 = time.perf_counter()
    progress = progress or (lambda done, total, what: None)
    model_path = Path(model_path)
    probe_t = parse_ggml_type(probe)
    if kernels.requires_imatrix(probe_t) or not GGML_TYPE_TRAITS[probe_t].is_quantized:
        raise InputError(f"--probe {probe_t.name}: needs a quantization type that works without an imatrix")
    runner = ModelRunner(model_path, threads=threads)
    reader = runner.model.reader
    names = list(tensors) if tensors is not None else quantizable_tensors(reader)
    for name in names:
        if reader.tensors[name].qtype not in _UNQUANTIZED:
            raise InputError(f"{model_path}: tensor {name} is {reader.tensors[name].qtype.name}: the sensitivity "
                             "pass measures against the unquantized model; make an F16 one first "
                             "(llmtk quantize --allow-requantize IN OUT F16)")
    tokens = runner.tokenize(text)
    if n_chunks is None:
        n_chunks = auto_chunks(len(tokens), len(names), n_ctx)
    starts = chunk_starts(len(tokens), n_ctx, n_chunks)
    bos = runner.bos_for_chunks
    chunks = []
    for s in starts:
        c = tokens[s:s + n_ctx].astype(np.int32).copy()
        if bos is not None:
            c[0] = bos
        chunks.append(c)
    n_score = n_ctx - 1
    total = len(names) + 1

    # the base: log-probs in llama-perplexity's uint16 form, and the activations' mean squares
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}

    def collect(name: str, x: np.ndarray, ids: Any = None) -> None:
        if name in names:
            x2 = np.einsum("ij,ij->j", x.reshape(-1, x.shape[-1]), x.reshape(-1, x.shape[-1]), dtype=np.float64)
            sums[name] = sums.get(name, 0.0) + x2
            counts[name] = counts.get(name, 0) + x.reshape(-1, x.shape[-1]).shape[0]

    progress(0, total, "base")
    base_u16 = []
    floor = []
    t_base = time.perf_counter()
    for c in chunks:
        logits = np.ascontiguousarray(runner.model.forward(c, hook=collect)[:n_score], dtype=np.float32)
        u16 = np.zeros((n_score, lp.n_vocab_padded(logits.shape[1])), dtype=np.uint16)
        lp.token_nll_and_logprobs_u16(logits, c[1:], u16, np.empty(n_score, np.float64))
        base_u16.append(u16)
        floor.append(_kld(logits, c[1:], u16)[0])
    base_seconds = time.perf_counter() - t_base
    kld_floor = float(np.mean(np.concatenate(floor)))

    out: list[TensorSensitivity] = []
    for i, name in enumerate(names):
        progress(i + 1, total, name)
        info = reader.tensors[name]
        ne = [int(d) for d in reversed(info.shape)]
        n_cols = ne[0]
        w = _f32(reader, name)                                         # (rows, cols)
        eff, _ = shape_fallback(name, n_cols, probe_t)
        wq = kernels.dequantize(kernels.quantize(w, eff), eff, w.shape)
        replaced = {name: _encode(wq, info.qtype)}
        model = load_model(_PerturbedReader(reader, replaced), threads=runner.model.threads)
        try:
            klds, same = [], []
            for c, u16 in zip(chunks, base_u16):
                logits = np.ascontiguousarray(model.forward(c)[:n_score], dtype=np.float32)
                k, s = _kld(logits, c[1:], u16)
                klds.append(k)
                same.append(s)
        finally:
            model.close()
        kld = np.concatenate(klds) - kld_floor
        col = (sums[name] / max(1, counts[name])) if name in sums else np.ones(n_cols)
        rows = _sample(w.shape[0])
        err = _error(w[rows], wq[rows], col)
        out.append(TensorSensitivity(
            name=name, layer=_layer(name), kind=tensor_kind(name), ne=ne, probe_type=eff.name,
            probe_kld=float(max(kld.mean(), 0.0)),
            probe_kld_stderr=float(kld.std(ddof=1) / math.sqrt(kld.size)) if kld.size > 1 else 0.0,
            probe_same_top=float(np.concatenate(same).mean()), probe_error=err, n_rows_sampled=int(rows.size),
            col_weights=[float(v) for v in np.asarray(col, dtype=np.float32)]))
    seconds = time.perf_counter() - t0
    ppl_tokens = (len(tokens) // PPL_N_CTX) * PPL_N_CTX
    forward_tokens = len(chunks) * n_ctx * (len(names) + 1)
    progress(total, total, "done")
    return SensitivityTable(
        model=_fingerprint(model_path),
        calibration={"name": text_name, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                     "n_tokens": int(len(tokens)), "n_ctx": n_ctx, "n_chunks": len(chunks), "starts": starts,
                     "n_tokens_scored": len(chunks) * n_score},
        probe=probe_t.name, tensors=out, kld_floor=kld_floor,
        cost={"forward_tokens": forward_tokens, "ppl_tokens": ppl_tokens,
              "ppl_runs": forward_tokens / ppl_tokens if ppl_tokens else float("nan"),
              "seconds": seconds, "base_seconds": base_seconds,
              "est_ppl_run_seconds": base_seconds * ppl_tokens / (len(chunks) * n_ctx)})


def _kld(logits: np.ndarray, targets: np.ndarray, base_u16: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from llmtk.evals import logprobs as lp

    n = logits.shape[0]
    nll, nll_base = np.empty(n, np.float32), np.empty(n, np.float32)
    kld, p_diff, same = np.empty(n, np.float64), np.empty(n, np.float32), np.empty(n, np.bool_)
    lp.token_kld(logits, np.ascontiguousarray(targets, dtype=np.int32), base_u16, nll, nll_base, kld, p_diff, same)
    return kld, same


def _f32(reader: Any, name: str) -> np.ndarray:
    from llmtk import kernels

    info = reader.tensors[name]
    cols = int(info.shape[-1])
    rows = math.prod(info.shape[:-1])
    raw = np.ascontiguousarray(reader.raw(name)).reshape(rows, -1)
    if info.qtype == GGMLType.F32:
        return raw.view(np.float32).reshape(rows, cols)
    return kernels.dequantize(raw, info.qtype, (rows, cols))


def _encode(w: np.ndarray, qtype: GGMLType) -> np.ndarray:
    """Float32 rows back into the file's own unquantized type (bytes)."""
    from llmtk import kernels

    if qtype == GGMLType.F32:
        return np.ascontiguousarray(w, dtype=np.float32).reshape(-1).view(np.uint8)
    return kernels.quantize(w, qtype).reshape(-1)


def _sample(n_rows: int) -> np.ndarray:
    from llmtk.quantize.target_bpw import sample_rows

    return sample_rows(n_rows, ERROR_ROWS)


def _error(w: np.ndarray, wq: np.ndarray, col: np.ndarray) -> float:
    d = (w - wq).astype(np.float64)
    return float(np.einsum("ij,ij,j->", d, d, np.asarray(col, dtype=np.float64)))


def _layer(name: str) -> int:
    m = re.match(r"blk\.(\d+)\.", name)
    return int(m.group(1)) if m else -1


# ---------------------------------------------------------------------------------------------
# Candidate errors, the cache, the plan
# ---------------------------------------------------------------------------------------------

def candidate_errors(table: SensitivityTable, reader: Any, types: Sequence[GGMLType] | dict[str, Sequence[GGMLType]],
                     means: dict[str, np.ndarray] | None, imatrix_id: dict[str, Any] | None,
                     progress: Progress | None = None) -> None:
    """Fill `errors[type]` of every tensor for these (effective) types, or per tensor name for
    its own, quantizing the sampled rows as llama-quantize would (with the imatrix where given;
    types ggml cannot make without one are skipped where the tensor has none); errors made with
    another imatrix are dropped first."""
    from llmtk import kernels
    from llmtk.quantize.target_bpw import weighted_error

    if table.errors_imatrix != imatrix_id:
        for t in table.tensors:
            t.errors = {}
        table.errors_imatrix = imatrix_id

    def wanted(t: TensorSensitivity) -> Sequence[GGMLType]:
        ts = types.get(t.name, ()) if isinstance(types, dict) else types
        has = means is not None and t.name in means
        return [q for q in ts if has or not kernels.requires_imatrix(q)]

    todo = [(t, q) for t in table.tensors for q in wanted(t) if q.name not in t.errors]
    w_cache: dict[str, np.ndarray] = {}
    for k, (t, q) in enumerate(todo):
        if progress:
            progress(k, len(todo), f"{t.name} {q.name}")
        if GGML_TYPE_TRAITS[q].block_size and t.ne[0] % GGML_TYPE_TRAITS[q].block_size:
            continue
        w = w_cache.get(t.name)
        if w is None:
            w_cache.clear()
            w = w_cache[t.name] = _f32(reader, t.name)[_sample(math.prod(t.ne[1:]))]
        im = None if means is None else means.get(t.name)
        if im is not None and im.size != t.ne[0]:
            im = None     # per-expert or mismatched: llama-quantize would refuse or skip it
        t.errors[q.name] = weighted_error(w, q, np.asarray(t.col_weights, np.float32), quant_imatrix=im)
    if progress:
        progress(len(todo), len(todo), "errors")


def load_or_measure(model_path: str | Path, text: str, text_name: str, *, cache: str | Path | None = None,
                    probe: str = DEFAULT_PROBE, n_ctx: int = DEFAULT_N_CTX, n_chunks: int | None = None,
                    threads: int | None = None, log: Callable[[str], None] | None = None,
                    progress: Progress | None = None) -> SensitivityTable:
    """The cached table when it was made from this model, text and settings; else a new pass
    (saved to `cache` when given)."""
    model_path = Path(model_path)
    want = {"model": _fingerprint(model_path), "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "probe": parse_ggml_type(probe).name, "n_ctx": n_ctx}
    if cache is not None and Path(cache).is_file():
        try:
            table = SensitivityTable.from_json(Path(cache).read_text(encoding="utf-8"))
            have = {"model": table.model, "sha256": table.calibration.get("sha256"), "probe": table.probe,
                    "n_ctx": table.calibration.get("n_ctx")}
            if have == want and (n_chunks is None or n_chunks == table.calibration.get("n_chunks")):
                if log:
                    log(f"sensitivity: re-using {cache}")
                return table
            if log:
                log(f"sensitivity: {cache} was made from another model, text or settings; measuring again")
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as e:
            if log:
                log(f"sensitivity: {cache} is unreadable ({e}); measuring again")
    table = measure_sensitivity(model_path, text, text_name, probe=probe, n_ctx=n_ctx, n_chunks=n_chunks,
                                threads=threads, progress=progress)
    if cache is not None:
        save_table(table, cache)
    return table


def save_table(table: SensitivityTable, path: str | Path) -> None:
    from llmtk.outputs import write_text_atomic

    write_text_atomic(Path(path), table.to_json())


@dataclass
class TargetPlan:
    """The chosen mix and everything needed to write it (or have llama-quantize write it)."""

    solution: Any                               # target_bpw.Solution
    table: SensitivityTable
    ftype: Any                                  # rules.FileType
    candidates: list[GGMLType]
    budget_bytes: int                           # what the solve had for the chosen tensors
    fixed_bytes: int                            # tensors that are not chosen (norms, ...)
    n_weights: int
    overrides: list[str]                        # --override-kv strings, in order
    target_bpw: float
    target_size: int | None

    @property
    def pairs(self) -> list[tuple[str, str]]:
        from llmtk.quantize.target_bpw import tensor_type_pairs

        return tensor_type_pairs(self.solution.types)

    @property
    def tensor_type_file(self) -> str:
        from llmtk.quantize.target_bpw import tensor_type_file_text

        return tensor_type_file_text(self.solution.types)

    def predicted_kld(self, types: dict[str, GGMLType]) -> float:
        """The model's predicted KLD of any full assignment (a stock mix, for comparison)."""
        by = self.table.by_name()
        return float(sum(by[n].predicted(t) for n, t in types.items() if n in by and t.name in
                         (by[n].errors.keys() | {by[n].probe_type})))


def plan_to_budget(model_path: str | Path, ftype: str, table: SensitivityTable, *, target_bpw: float | None = None,
                   target_size: int | None = None, candidates: Sequence[GGMLType] | None = None,
                   imatrix: str | Path | None = None, progress: Progress | None = None) -> TargetPlan:
    """Choose every quantizable tensor's type: least predicted KLD within the budget.

    `target_bpw`: bits of all tensor data over all weights, as llama-quantize prints it.
    `target_size`: bytes of the whole output file (header and alignment padding included).
    """
    from llmtk.ggufio.shards import open_gguf
    from llmtk.quantize.requantize import load_imatrix_means
    from llmtk.quantize.rules import file_type
    from llmtk.quantize.target_bpw import (
        TargetRecord,
        TensorOptions,
        family_for,
        override_kv_bytes,
        padded,
        solve,
        tensor_candidates,
    )

    if (target_bpw is None) == (target_size is None):
        raise InputError("give one of --target-bpw and --target-size")
    if target_bpw is not None and not (math.isfinite(target_bpw) and target_bpw > 0):
        raise InputError(f"--target-bpw {target_bpw}: must be a positive number of bits per weight")
    ft = file_type(ftype)
    cands = list(candidates) if candidates else list(_family(family_for(ft)))
    means, imatrix_id = None, None
    if imatrix is not None:
        means, datasets, n_chunks = load_imatrix_means(imatrix)
        imatrix_id = {**_fingerprint(Path(imatrix))}
    by = table.by_name()
    with open_gguf(model_path) as reader:
        if table.model != _fingerprint(Path(model_path)):
            raise InputError(f"{model_path}: the sensitivity table was measured on another file "
                             f"({table.model.get('path')})")
        n_weights = sum(math.prod(i.shape) for i in reader.tensors.values())
        names = [n for n in quantizable_tensors(reader) if n in by]
        missing = [n for n in quantizable_tensors(reader) if n not in by]
        if missing:
            raise InputError(f"the sensitivity table lacks {len(missing)} tensor(s), e.g. {missing[0]}")
        per_tensor = {n: tensor_candidates(n, by[n].ne[0], cands, ft,
                                           has_imatrix_entry=means is not None and n in means) for n in names}
        for n, c in per_tensor.items():
            if not c:
                raise InputError(f"{n}: none of the candidates {', '.join(t.name for t in cands)} fits its "
                                 f"rows of {by[n].ne[0]} (even after llama-quantize's fallbacks)")
        candidate_errors(table, reader, per_tensor, means, imatrix_id, progress)
        use_padding = target_size is not None
        fixed = sum((padded(i.n_bytes) if use_padding else i.n_bytes)
                    for n, i in reader.tensors.items() if n not in per_tensor)
        header = getattr(reader, "data_offset", None) if use_padding else 0
        if header is None:
            raise InputError(f"{model_path}: --target-size needs a single-file model (merge the shards first)")
    record_stub = TargetRecord(target_bpw or 0.0, target_size, cands, 0.0, table.calibration.get("name", ""))
    extra = override_kv_bytes(record_stub.override_kv()) + 64
    if imatrix is not None:
        extra += 512 + len(str(imatrix).encode())
    if target_size is not None:
        budget = target_size - header - extra - fixed
        bpw = 8.0 * (target_size - header - extra) / n_weights
    else:
        budget = int(target_bpw * n_weights // 8) - fixed
        bpw = float(target_bpw)
    options = []
    for n in names:
        ts = per_tensor[n]
        nb = [tensor_nbytes(t, by[n].ne) for t in ts]
        options.append(TensorOptions(n, ts, [padded(b) for b in nb] if use_padding else nb,
                                     [by[n].predicted(t) for t in ts]))
    if budget <= 0:
        raise InputError(f"the budget leaves nothing for the {len(names)} quantizable tensors "
                         f"(the other tensors and the header take {fixed + header + extra} bytes)")
    sol = solve(options, budget)
    record = TargetRecord(round(bpw, 4), target_size, cands, sol.damage, table.calibration.get("name", ""))
    return TargetPlan(sol, table, ft, cands, budget, fixed, n_weights, record.override_kv(), bpw, target_size)


def _family(name: str) -> tuple[GGMLType, ...]:
    from llmtk.quantize.target_bpw import FAMILIES

    return FAMILIES[name]


def plan_for_quantize(model_path: str | Path, ftype: str, *, target_bpw: float | None = None,
                      target_size: int | None = None, candidates: Sequence[GGMLType] | None = None,
                      imatrix: str | Path | None = None, calib_path: str | Path | None = None,
                      cache: str | Path | None = None, probe: str = DEFAULT_PROBE, threads: int | None = None,
                      log: Callable[[str], None] | None = None, progress: Progress | None = None) -> TargetPlan:
    """`llmtk quantize --target-bpw/--target-size` up to the quantization: the sensitivity table
    (from `cache` or measured on `calib_path`, default the text shipped in data/), then the plan."""
    from .runner import read_text

    text, text_name = read_text(calib_path)
    table = load_or_measure(model_path, text, text_name, cache=cache, probe=probe, threads=threads, log=log,
                            progress=progress)
    plan = plan_to_budget(model_path, ftype, table, target_bpw=target_bpw, target_size=target_size,
                          candidates=candidates, imatrix=imatrix, progress=progress)
    if cache is not None:
        save_table(table, cache)        # with the candidates' errors, for the next budget
    return plan


# ---------------------------------------------------------------------------------------------
# `llmtk sweep --target-bpw 2.5,3.0,...`: these mixes as cells beside the stock types
# ---------------------------------------------------------------------------------------------

TARGET_CELL_PREFIX = "bpw-"
SWEEP_CACHE_NAME = "sensitivity.json"


def target_cells(target_bpw: Sequence[float], target_type: str) -> list[str]:
    """The sweep's cell names of these budgets (`bpw-3.00`), checked before any work."""
    from llmtk.quantize.rules import file_type
    from llmtk.quantize.target_bpw import family_for

    family_for(file_type(target_type))
    out = []
    for b in target_bpw:
        if not (math.isfinite(b) and b > 0):
            raise InputError(f"--target-bpw {b}: must be a positive number of bits per weight")
        name = f"{TARGET_CELL_PREFIX}{b:.2f}"
        if name in out:
            raise InputError(f"--target-bpw repeats {b:.2f}")
        out.append(name)
    return out


def is_target_cell(name: str) -> bool:
    return name.startswith(TARGET_CELL_PREFIX)


def quantize_target_cell(src: Path, dst: Path, name: str, imatrix: Path | None, options: dict[str, Any],
                         threads: int | None, imatrix_name: str | None = None) -> Any:
    """One sweep cell `bpw-B`: the sensitivity-chosen mix of `options["target_type"]`'s family at
    B bits per weight, calibrated on `options["calib_text"]` (default: the text in data/), the
    measurements cached beside `dst` so the sweep's other budgets reuse them."""
    from llmtk.quantize import quantize_model

    from .runner import read_text

    text, text_name = (options["calib_text"], options.get("calib_name") or "calibration") \
        if options.get("calib_text") else read_text(None)
    cache = dst.parent / SWEEP_CACHE_NAME
    table = load_or_measure(src, text, text_name, cache=cache, threads=threads)
    plan = plan_to_budget(src, options["target_type"], table, target_bpw=float(name[len(TARGET_CELL_PREFIX):]),
                          imatrix=imatrix)
    save_table(table, cache)
    return quantize_model(src, dst, options["target_type"], imatrix=imatrix, allow_requantize=True,
                          nthreads=threads, imatrix_name=imatrix_name, tensor_types=plan.pairs,
                          override_kv=plan.overrides)
