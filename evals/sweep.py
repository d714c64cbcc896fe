"""Which type to ship: quantize one model to several types, evaluate each against the base, report.

Everything is checked before the first step (types, files, the imatrix each type needs, the
output folder), so a typo in the fifth type is not found hours later. The sweep is resumable:
each artifact (base F16, base log-probs, imatrix, each quantized model and its evaluation) is
recorded in `sweep.json` with what it was made from (input sizes and mtimes, the text's sha256,
the options) and re-used only when that still matches; anything else is made again. The state is
written atomically, and a state file that cannot be read is reported and rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from llmtk.errors import InputError
from llmtk.ggufio.constants import Key

DEFAULT_TYPES = ("Q8_0", "Q6_K", "Q4_K_M", "IQ4_XS", "Q3_K_M", "Q2_K")
STATE_VERSION = 2
_FLOAT_FILE_TYPES = {0, 1, 32}  # general.file_type of F32, F16, BF16 models

Log = Callable[[str], None]
# progress(cells_done, cells_total, what is running now)
Progress = Callable[[int, int, str], None]


@dataclass
class SweepPlan:
    """What to sweep. `imatrix` is None, "auto" (computed from `calib_text`, else from a held-out
    half of `text`) or a path; `tensor_types` etc. are passed to every quantization."""

    model: Path
    types: list[str]
    text: str
    text_name: str
    out_dir: Path
    imatrix: str | None = None
    n_ctx: int = 512
    n_chunks: int | None = None
    calib_text: str | None = None
    calib_name: str | None = None
    tensor_types: list[tuple[str, str]] = field(default_factory=list)
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    threads: int | None = None
    max_mean_kld: float | None = None
    min_same_top: float | None = None
    json_schema: dict | None = None       # with `prompts`: how often the greedy answer is valid
    prompts: list[str] = field(default_factory=list)
    n_predict: int = 128

    def quantize_options(self) -> dict[str, Any]:
        return {"tensor_types": list(self.tensor_types), "output_tensor_type": self.output_tensor_type,
                "token_embedding_type": self.token_embedding_type}

    def split_calibration(self) -> None:
        """With `imatrix="auto"` and no calibration text, calibrate on the second half of the text
        (cut at a line) and evaluate on the first, so the imatrix never saw the scored tokens."""
        if self.imatrix != "auto" or self.calib_text is not None:
            return
        cut = self.text.find("\n", len(self.text) // 2)
        cut = len(self.text) // 2 if cut < 0 else cut + 1
        self.text, self.calib_text = self.text[:cut], self.text[cut:]
        self.calib_name = f"{self.text_name} (second half; evaluated on the first half)"
        self.text_name = f"{self.text_name} (first half)"


def check_plan(plan: SweepPlan) -> list[str]:
    """Validate everything before any work; returns llama-quantize's spelling of each type.

    Raises an `LlmtkError` naming the bad input: a missing or non-model file, an unknown or
    repeated type, a type that needs an imatrix when none is used, a bad option value, an output
    folder that cannot be written.
    """
    from llmtk.quantize import quantize_model
    from llmtk.quantize.rules import canonical_name

    if not plan.model.is_file():
        raise InputError(f"{plan.model}: model file not found")
    _check_model_file(plan.model)
    if not plan.types:
        raise InputError("--types names no type")
    names = [canonical_name(t) for t in plan.types]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"--types repeats {', '.join(repeated)}")
    if plan.n_ctx < 2:
        raise InputError(f"--ctx-size {plan.n_ctx}: must be at least 2")
    if plan.n_chunks is not None and plan.n_chunks < 1:
        raise InputError(f"--chunks {plan.n_chunks}: must be at least 1")
    if not plan.text.strip():
        raise InputError(f"{plan.text_name}: the evaluation text is empty")
    for name, value in (("--max-mean-kld", plan.max_mean_kld), ("--min-same-top", plan.min_same_top)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise InputError(f"{name} {value}: must be a finite number >= 0")
    if plan.min_same_top is not None and plan.min_same_top > 1:
        raise InputError(f"--min-same-top {plan.min_same_top}: a fraction in 0..1 (0.95 = 95%)")
    if (plan.json_schema is None) != (not plan.prompts):
        raise InputError("--json-schema and --prompts go together (the prompts whose answers must follow the schema)")
    if plan.json_schema is not None:
        from llmtk.grammar import json_schema_to_gbnf, parse

        parse(json_schema_to_gbnf(plan.json_schema))      # an unusable schema is refused now
        if plan.n_predict < 1:
            raise InputError(f"--n-predict {plan.n_predict}: must be at least 1")
    if plan.imatrix not in (None, "auto") and not Path(plan.imatrix).is_file():
        raise InputError(f"{plan.imatrix}: imatrix file not found")
    if plan.imatrix == "auto" and plan.calib_text is not None and not plan.calib_text.strip():
        raise InputError(f"{plan.calib_name}: the calibration text is empty")
    _check_out_dir(plan.out_dir)
    # every type planned now (llama-quantize's --dry-run), so that a refusal comes before hours of work
    imatrix_file = plan.imatrix if plan.imatrix not in (None, "auto") else None
    needs = []
    for name in names:
        res = quantize_model(plan.model, None, name, imatrix=imatrix_file, dry_run=True, allow_requantize=True,
                             **plan.quantize_options())
        if res.will_require_imatrix:
            needs.append(name)
    if needs and plan.imatrix is None:
        raise InputError(f"--types {', '.join(needs)} need an importance matrix: pass --imatrix auto "
                         f"(or a file), or drop them")
    return names


def _check_model_file(path: Path) -> None:
    from llmtk.ggufio.shards import open_gguf

    with open_gguf(path) as r:
        kind = r.kv.get(Key.TYPE)
        if kind not in (None, "model") or not isinstance(r.kv.get(Key.ARCHITECTURE), str):
            raise InputError(f"{path}: not a model (general.type {kind!r}, "
                             f"general.architecture {r.kv.get(Key.ARCHITECTURE)!r})")


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: the sweep folder is a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(f"{out}: cannot write the sweep folder ({e.strerror or e})") from None


# --- what an artifact was made from -------------------------------------------------------------

def fingerprint(path: Path) -> dict[str, int] | None:
    """Size and mtime of a file (cheap, and changes whenever the file is rewritten)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    # pid-tagged temporary beside the target, renamed into place; a killed run's are cleaned next time
    from llmtk.outputs import write_text_atomic

    write_text_atomic(path, text)


class _State:
    """sweep.json: the recipe of every artifact, saved atomically after each step."""

    def __init__(self, path: Path, log: Log) -> None:
        self.path = path
        self.data: dict[str, Any] = {"version": STATE_VERSION, "artifacts": {}, "rows": {}}
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if not (isinstance(data, dict) and data.get("version") == STATE_VERSION
                        and isinstance(data.get("artifacts"), dict) and isinstance(data.get("rows"), dict)):
                    raise ValueError("not a sweep state of this version")
                self.data = data
            except (OSError, UnicodeDecodeError, ValueError) as e:
                log(f"{path}: unreadable ({e}); every artifact will be checked against a fresh state")

    def valid(self, name: str, recipe: dict[str, Any], artifact: Path) -> bool:
        """Whether `artifact` exists, is the file recorded, and was made from `recipe`."""
        rec = self.data["artifacts"].get(name)
        return (isinstance(rec, dict) and rec.get("recipe") == recipe
                and rec.get("file") == fingerprint(artifact) and fingerprint(artifact) is not None)

    def record(self, name: str, recipe: dict[str, Any], artifact: Path, **extra: Any) -> None:
        self.data["artifacts"][name] = {"recipe": recipe, "file": fingerprint(artifact), **extra}
        self.save()

    def save(self) -> None:
        from .report import dumps

        _write_atomic(self.path, dumps(self.data))


# --- the sweep ------------------------------------------------------------------------------------

def run_sweep(plan: SweepPlan, log: Log = print, progress: Progress | None = None) -> "pandas.DataFrame":  # noqa: F821
    """Run (or resume) the sweep and write `sweep.md`, `sweep.csv`, `sweep.json`, `sweep.png`."""
    import pandas as pd

    from .runner import ModelRunner, evaluate

    plan.split_calibration()
    names = check_plan(plan)
    out = plan.out_dir
    progress = progress or (lambda done, total, what: None)
    state = _State(out / "sweep.json", log)
    cells = len(names) + 2 + (plan.imatrix == "auto")
    done = 0

    def step(what: str) -> None:
        progress(done, cells, what)
        log(f"[{done + 1}/{cells}] {what}")

    # the base: the model itself when it is F16/BF16/F32, else an F16 made from it
    if _file_type(plan.model) in _FLOAT_FILE_TYPES:
        base = plan.model
    else:
        base = out / "base-F16.gguf"
        recipe = {"from": str(plan.model), "input": fingerprint(plan.model), "type": "F16"}
        if not state.valid("base", recipe, base):
            step(f"base F16 from {plan.model.name} (its tensors are quantized)")
            _quantize(plan.model, base, "F16", None, {}, plan.threads)
            state.record("base", recipe, base)
    done += 1
    base_recipe = {"path": str(base), "file": fingerprint(base)}
    evaluation = {"text_sha256": _sha256_text(plan.text), "text": plan.text_name, "n_ctx": plan.n_ctx,
                  "n_chunks": plan.n_chunks}

    base_kld = out / "base.kld"
    recipe = {"base": base_recipe, **evaluation}
    if not state.valid("base.kld", recipe, base_kld):
        step("base log-probs")
        res = evaluate(base, plan.text, n_ctx=plan.n_ctx, n_chunks=plan.n_chunks, kld_base_out=base_kld,
                       runner=ModelRunner(base, threads=plan.threads))
        n_weights, n_bytes = _tensor_totals(base)
        state.record("base.kld", recipe, base_kld, ppl=res.ppl, ppl_stderr=res.ppl_stderr,
                     n_weights=n_weights, tensor_bytes=n_bytes, size=base.stat().st_size)
    done += 1
    kld_recipe = {"file": fingerprint(base_kld), **recipe}

    imatrix = None
    if plan.imatrix == "auto":
        imatrix = out / "imatrix.gguf"
        calib = {"base": base_recipe, "text_sha256": _sha256_text(plan.calib_text or ""), "text": plan.calib_name,
                 "n_ctx": plan.n_ctx}
        if not state.valid("imatrix", calib, imatrix):
            step(f"imatrix on {plan.calib_name}")
            from llmtk.ggufio.imatrix_file import write_imatrix_gguf

            from .imatrix import compute_imatrix

            run = compute_imatrix(base, plan.calib_text, n_ctx=plan.n_ctx, n_chunks=-1, compute_ppl=False,
                                  dataset_name=plan.calib_name)
            write_imatrix_gguf(imatrix, run.imatrix)
            state.record("imatrix", calib, imatrix)
        done += 1
    elif plan.imatrix:
        imatrix = Path(plan.imatrix)
    imatrix_recipe = {"path": str(imatrix), "file": fingerprint(imatrix)} if imatrix else None

    rows = state.data["rows"]
    keep = set()
    for name in names:
        key = name + ("-imatrix" if imatrix is not None and _imatrix_changes(name, base, plan) else "")
        keep.add(key)
        dst = out / f"model-{key}.gguf"
        recipe = {"base": base_recipe, "type": name, "imatrix": imatrix_recipe, "options": plan.quantize_options(),
                  "evaluation": kld_recipe, "structured": _structured_recipe(plan)}
        if state.valid(key, recipe, dst) and key in rows:
            log(f"{key}: made and evaluated before from the same inputs, re-used")
            done += 1
            continue
        step(f"quantize {key}")
        t0 = time.perf_counter()
        qres = _quantize(base, dst, name, imatrix, plan.quantize_options(), plan.threads)
        q_seconds = time.perf_counter() - t0
        step(f"evaluate {key}")
        runner = ModelRunner(dst, threads=plan.threads)
        res = evaluate(dst, None, kld_base_in=base_kld, runner=runner)
        k = res.kld
        rows[key] = {
            "type": key, "size_bytes": dst.stat().st_size,
            "bpw": 8.0 * qres.size_out / qres.n_elements if qres.n_elements else math.nan,
            "ppl": k.ppl, "ppl_stderr": k.ppl_stderr, "delta_ppl": k.ppl - k.ppl_base,
            "ppl_ratio": k.ppl_ratio, "ppl_ratio_stderr": k.ppl_ratio_stderr,
            "mean_kld": k.mean, "mean_kld_stderr": k.mean_stderr, "median_kld": k.median, "kld_p99": k.p99,
            "max_kld": k.max, "same_top_p": k.same_top_p, "same_top_p_stderr": k.same_top_p_stderr,
            "rms_dp": k.rms_dp, "dp_p1": k.dp_percentiles.get("1.0", math.nan),
            "dp_p99": k.dp_percentiles.get("99.0", math.nan),
            "n_fallback": qres.n_fallback, "fallbacks": sorted(set(qres.fallbacks)),
            "quantize_s": q_seconds, "eval_s": res.seconds, "sha256": _sha256_file(dst),
            "schema_valid": _schema_valid(runner.model, plan) if plan.json_schema is not None else math.nan,
        }
        state.record(key, recipe, dst)
        done += 1
        log(f"{key}: {_size(rows[key]['size_bytes'])}, {rows[key]['bpw']:.2f} bpw, PPL {k.ppl:.4f} ± "
            f"{k.ppl_stderr:.4f}, mean KLD {k.mean:.4g}, same top {100 * k.same_top_p:.2f}%")
    progress(cells, cells, "report")
    kld_info = state.data["artifacts"]["base.kld"]
    base_row = _base_row(base, kld_info)
    if plan.json_schema is not None:
        step("structured answers of the base")
        base_row["schema_valid"] = _schema_valid(ModelRunner(base, threads=plan.threads).model, plan)
    df = pd.DataFrame([base_row] + [rows[k] for k in rows if k in keep]).sort_values("bpw", ascending=False)
    df["pareto"] = _pareto_with_uncertainty(df)
    df["recommended"] = df["type"] == recommend(df, plan.max_mean_kld, plan.min_same_top)
    from . import report

    _write_atomic(out / "sweep.csv", df.drop(columns=["fallbacks"]).to_csv(index=False))
    report.plot_sweep(df, out / "sweep.png", f"{plan.model.name}: quality against size on {plan.text_name}")
    _write_atomic(out / "sweep.md", sweep_markdown(df, plan, base, imatrix))
    return df


def _file_type(path: Path) -> int | None:
    from llmtk.ggufio.shards import open_gguf

    with open_gguf(path) as r:
        ft = r.kv.get(Key.FILE_TYPE)
    return int(ft) if isinstance(ft, int) else None


def _structured_recipe(plan: SweepPlan) -> dict[str, Any] | None:
    if plan.json_schema is None:
        return None
    return {"schema_sha256": _sha256_text(json.dumps(plan.json_schema, sort_keys=True)),
            "prompts_sha256": _sha256_text("\n".join(plan.prompts)), "n_predict": plan.n_predict}


def _schema_valid(model: Any, plan: SweepPlan) -> float:
    """Fraction of the prompts whose unconstrained greedy answer (up to n_predict tokens; as one
    chat turn when the model has a chat template) holds a JSON value valid against the schema, as
    its GBNF grammar (llama.cpp's json_schema_to_grammar semantics) decides. The value is what a
    reader would take: the first Markdown code block if there is one, else the text from the
    first `{` or `[`; prose after a code block is allowed, prose after a bare value is not."""
    from llmtk.generate import generate
    from llmtk.grammar import json_schema_to_gbnf, match_text, parse

    grammar = parse(json_schema_to_gbnf(plan.json_schema))
    chat = isinstance(model.reader.kv.get(Key.CHAT_TEMPLATE), str)
    valid = 0
    for prompt in plan.prompts:
        text = "".join(t.text for t in generate(model, prompt, n_predict=plan.n_predict, temp=0.0, chat=chat))
        valid += match_text(grammar, _answer_value(text)).accepted
    return valid / len(plan.prompts)


def _answer_value(text: str) -> str:
    if "```" in text:
        block = text.split("```", 2)[1]
        return block.split("\n", 1)[1].strip() if "\n" in block else block.strip()
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    return text[min(starts):].strip() if starts else text.strip()


def _tensor_totals(path: Path) -> tuple[int, int]:
    """(weights, bytes of tensor data): llama.cpp's bpw is 8 * bytes / weights."""
    from llmtk.ggufio.shards import open_gguf

    with open_gguf(path) as r:
        return sum(t.n_elements for t in r.tensors.values()), sum(t.n_bytes for t in r.tensors.values())


def _quantize(src: Path, dst: Path, ftype: str, imatrix: Path | None, options: dict[str, Any], threads: int | None):
    from llmtk.quantize import quantize_model

    return quantize_model(src, dst, ftype, imatrix=imatrix, allow_requantize=True, nthreads=threads, **options)


def _imatrix_changes(name: str, base: Path, plan: SweepPlan) -> bool:
    """Whether an imatrix changes any tensor of this type's mix (Q8_0, for one, ignores it)."""
    from llmtk import kernels
    from llmtk.quantize import quantize_model

    res = quantize_model(base, None, name, dry_run=True, allow_requantize=True, **plan.quantize_options())
    return any(t.dst_type != t.src_type and kernels.uses_imatrix(t.dst_type) for t in res.tensors)


def _base_row(base: Path, info: dict[str, Any]) -> dict[str, Any]:
    from llmtk.quantize.rules import file_type_names

    ft = _file_type(base)
    name = file_type_names().get(ft, "base") if ft is not None else "base"
    size, n_weights = info.get("size", base.stat().st_size), info.get("n_weights") or 0
    bpw = 8.0 * info.get("tensor_bytes", 0) / n_weights if n_weights else math.nan
    return {"type": f"{name} (base)", "size_bytes": size, "bpw": bpw,
            "ppl": info["ppl"], "ppl_stderr": info["ppl_stderr"], "delta_ppl": 0.0, "ppl_ratio": 1.0,
            "ppl_ratio_stderr": 0.0, "mean_kld": 0.0, "mean_kld_stderr": 0.0, "median_kld": 0.0, "kld_p99": 0.0,
            "max_kld": 0.0, "same_top_p": 1.0, "same_top_p_stderr": 0.0, "rms_dp": 0.0, "dp_p1": 0.0, "dp_p99": 0.0,
            "n_fallback": 0, "fallbacks": [], "quantize_s": math.nan, "eval_s": math.nan, "sha256": "",
            "schema_valid": math.nan}


def _pareto_with_uncertainty(df) -> list[bool]:
    """A type is on the front unless a type no larger is closer to the base by more than both
    uncertainties (mean KLD ± its standard error): a difference inside the noise decides nothing."""
    bpw = df["bpw"].to_numpy()
    lo = (df["mean_kld"] - df["mean_kld_stderr"]).to_numpy()
    hi = (df["mean_kld"] + df["mean_kld_stderr"]).to_numpy()
    return [not any(bpw[j] <= bpw[i] and hi[j] < lo[i] for j in range(len(bpw)) if j != i)
            for i in range(len(bpw))]


def recommend(df, max_mean_kld: float | None, min_same_top: float | None) -> str | None:
    """The smallest type within the budget (mean KLD at most, same-top fraction at least), or None."""
    if max_mean_kld is None and min_same_top is None:
        return None
    ok = df[~df["type"].str.endswith("(base)")]
    if max_mean_kld is not None:
        ok = ok[ok["mean_kld"] <= max_mean_kld]
    if min_same_top is not None:
        ok = ok[ok["same_top_p"] >= min_same_top]
    return None if ok.empty else str(ok.sort_values("size_bytes").iloc[0]["type"])


def _size(n: float) -> str:
    """Bytes as llama.cpp prints sizes (MiB, GiB above 1 GiB)."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.2f} MiB"


def _kld(v: float) -> str:
    return "0" if v == 0 else f"{v:.3g}" if v >= 1e-3 else f"{v:.2e}"


def sweep_markdown(df, plan: SweepPlan, base: Path, imatrix: Path | None) -> str:
    """The report: settings, one row per type with uncertainties, the recommendation, a model-card table."""
    rec = recommend(df, plan.max_mean_kld, plan.min_same_top)
    lines = [f"# Quantization sweep: {plan.model.name}", "",
             f"- base: `{base.name}`; evaluated on `{plan.text_name}`, context {plan.n_ctx}, "
             f"chunks {plan.n_chunks or 'all'}",
             f"- imatrix: {'none' if imatrix is None else f'`{imatrix.name}`'}"
             + (f", calibrated on `{plan.calib_name}`" if plan.imatrix == "auto" else ""),
             "- bpw: bits of the tensor data over the number of weights, as llama-quantize and inspect print it",
             "- ±: one standard error; ★: on the Pareto front (no type of at most this size is closer to the "
             "base by more than both uncertainties of mean KLD)"]
    if plan.json_schema is not None:
        lines.append(f"- valid JSON: share of {len(plan.prompts)} prompts whose unconstrained greedy answer "
                     f"(≤ {plan.n_predict} tokens) follows the JSON Schema")
    lines.append("")
    if plan.max_mean_kld is not None or plan.min_same_top is not None:
        budget = ", ".join(x for x in (f"mean KLD ≤ {plan.max_mean_kld}" if plan.max_mean_kld is not None else "",
                                       f"same top ≥ {100 * plan.min_same_top:.1f}%" if plan.min_same_top is not None
                                       else "") if x)
        lines += [f"**Recommended** ({budget}): **{rec}**" if rec else f"No type meets the budget ({budget}).", ""]
    schema = plan.json_schema is not None
    lines += ["| type | size | bpw | PPL | ΔPPL | mean KLD | median / 99% / max KLD | same top | Δp 1% / 99% | "
              "fallbacks | quantize |" + (" valid JSON |" if schema else "") + " Pareto |",
              "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if schema else "") + "---|"]
    for _, r in df.iterrows():
        lines.append(
            f"| {r['type']} | {_size(r['size_bytes'])} | {r['bpw']:.2f} | {r['ppl']:.4f} ± {r['ppl_stderr']:.4f} | "
            f"{r['delta_ppl']:+.4f} | {_kld(r['mean_kld'])} ± {_kld(r['mean_kld_stderr'])} | "
            f"{_kld(r['median_kld'])} / {_kld(r['kld_p99'])} / {_kld(r['max_kld'])} | "
            f"{100 * r['same_top_p']:.2f} ± {100 * r['same_top_p_stderr']:.2f}% | "
            f"{100 * r['dp_p1']:+.3g} / {100 * r['dp_p99']:+.3g}% | {int(r['n_fallback'])} | "
            + ("–" if math.isnan(r["quantize_s"]) else f"{r['quantize_s']:.1f} s")
            + (f" | {100 * r['schema_valid']:.0f}%" if schema else "")
            + f" | {'★' if r['pareto'] else ''} |")
    fell = [(r["type"], list(r["fallbacks"])) for _, r in df.iterrows() if len(r["fallbacks"])]
    if fell:
        lines += ["", "Fallbacks: a tensor whose rows do not fill the type's blocks gets another type, as "
                  "llama-quantize does (its warnings):", ""]
        for name, warnings in fell:
            shown = "; ".join(" ".join(w.replace("warning: ", "").split()) for w in warnings[:3])
            lines.append(f"- {name}: {len(warnings)} tensors, e.g. {shown}" + (" …" if len(warnings) > 3 else ""))
    lines += ["", "![mean KLD and PPL against bits per weight](sweep.png)", "",
              "## Model card", "", "| Type | Size | BPW | PPL | Mean KLD | Same top | SHA256 |", "|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        if r["sha256"]:
            lines.append(f"| {r['type']} | {_size(r['size_bytes'])} | {r['bpw']:.2f} | {r['ppl']:.4f} ± "
                         f"{r['ppl_stderr']:.4f} | {_kld(r['mean_kld'])} | {100 * r['same_top_p']:.2f}% | "
                         f"`{r['sha256']}` |")
    return "\n".join(lines) + "\n"


