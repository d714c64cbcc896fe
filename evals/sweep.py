"""Which type to ship: quantize one model to several types, evaluate each against the base, report.

Resumable: every finished step (base file, KLD base, imatrix, each quantized model and its
evaluation) is kept in the output folder and skipped when the sweep runs again.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from llmtk.errors import InputError
from llmtk.ggufio.constants import Key


DEFAULT_TYPES = ("Q8_0", "Q6_K", "Q4_K_M", "IQ4_XS", "Q3_K_M", "Q2_K")
_FLOAT_FILE_TYPES = {0, 1, 32}  # general.file_type of F32, F16, BF16 models


@dataclass
class SweepPlan:
    model: Path
    types: list[str]
    text: str
    text_name: str
    out_dir: Path
    imatrix: str | None = None  # None, "auto" or a path
    n_ctx: int = 512
    n_chunks: int | None = None


def _file_type(path: Path) -> int | None:
    from llmtk.ggufio import GGUFReader

    with GGUFReader(path) as r:
        ft = r.kv.get(Key.FILE_TYPE)
    return int(ft) if ft is not None else None


def _quantize(src: Path, dst: Path, ftype: str, imatrix: Path | None) -> None:
    from llmtk.quantize import quantize_model

    quantize_model(src, dst, ftype, imatrix=imatrix, allow_requantize=True)


def run_sweep(plan: SweepPlan, log: Callable[[str], None] = print,
              step: Callable[[str], None] | None = None) -> "pandas.DataFrame":  # noqa: F821
    """Run (or resume) the sweep and write `sweep.md`, `sweep.csv`, `sweep.json`, `sweep.png`."""
    import pandas as pd

    from . import report
    from .runner import ModelRunner, evaluate

    out = plan.out_dir
    out.mkdir(parents=True, exist_ok=True)
    step = step or (lambda s: None)
    if not plan.model.is_file():
        raise InputError(f"{plan.model}: model file not found")
    if _file_type(plan.model) in _FLOAT_FILE_TYPES:
        base = plan.model
    else:
        base = out / "base-F16.gguf"
        if not base.exists():
            step("base F16")
            log(f"making an F16 base from {plan.model.name} (its tensors are quantized)")
            _quantize(plan.model, base, "F16", None)
    base_kld = out / "base.kld"
    state_path = out / "sweep.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state.get("text") != plan.text_name or state.get("n_ctx") != plan.n_ctx or state.get("n_chunks") != plan.n_chunks:
        state = {"base": str(base), "text": plan.text_name, "n_ctx": plan.n_ctx, "n_chunks": plan.n_chunks, "rows": {}}
        if base_kld.exists():
            base_kld.unlink()
    if not base_kld.exists():
        step("base log-probs")
        res = evaluate(base, plan.text, n_ctx=plan.n_ctx, n_chunks=plan.n_chunks, kld_base_out=base_kld)
        state["base_ppl"], state["base_ppl_stderr"] = res.ppl, res.ppl_stderr
        state_path.write_text(report.dumps(state))
    imatrix = None
    if plan.imatrix == "auto":
        imatrix = out / "imatrix.gguf"
        if not imatrix.exists():
            step("imatrix")
            from llmtk.ggufio.imatrix_file import write_imatrix_gguf

            from .imatrix import compute_imatrix

            run = compute_imatrix(base, plan.text, n_ctx=plan.n_ctx,
                                  n_chunks=-1 if plan.n_chunks is None else plan.n_chunks,
                                  compute_ppl=False, dataset_name=plan.text_name)
            write_imatrix_gguf(imatrix, run.imatrix)
    elif plan.imatrix:
        imatrix = Path(plan.imatrix)
        if not imatrix.is_file():
            raise InputError(f"{imatrix}: imatrix file not found")
    base_size = base.stat().st_size
    for qtype in plan.types:
        key = f"{qtype}{'-imatrix' if imatrix else ''}"
        dst = out / f"model-{key}.gguf"
        if key in state["rows"] and dst.exists():
            log(f"{key}: done before, skipped")
            continue
        step(f"quantize {key}")
        t0 = time.perf_counter()
        _quantize(base, dst, qtype, imatrix)
        q_seconds = time.perf_counter() - t0
        step(f"evaluate {key}")
        runner = ModelRunner(dst)
        res = evaluate(dst, None, kld_base_in=base_kld, runner=runner)
        n_params = runner.model.n_params if hasattr(runner.model, "n_params") else None
        k = res.kld
        size = dst.stat().st_size
        state["rows"][key] = {
            "type": key, "size_mb": size / 1e6, "bpw": 8.0 * size / n_params if n_params else 16.0 * size / base_size,
            "ppl": k.ppl, "ppl_stderr": k.ppl_stderr, "delta_ppl": k.ppl - k.ppl_base, "ppl_ratio": k.ppl_ratio,
            "mean_kld": k.mean, "kld_p99": k.p99, "same_top_p": k.same_top_p, "rms_dp": k.rms_dp,
            "quantize_s": q_seconds, "eval_s": res.seconds,
        }
        state_path.write_text(report.dumps(state))
        log(f"{key}: {size / 1e6:.1f} MB, PPL {k.ppl:.4f}, mean KLD {k.mean:.5f}, same top {100 * k.same_top_p:.2f}%")
    df = pd.DataFrame(list(state["rows"].values())).sort_values("bpw", ascending=False)
    df.to_csv(out / "sweep.csv", index=False)
    report.plot_sweep(df, out / "sweep.png", f"{plan.model.name}: quality vs size on {plan.text_name}")
    _write_markdown(df, state, plan, out / "sweep.md")
    return df


def _write_markdown(df, state: dict, plan: SweepPlan, path: Path) -> None:
    from .report import pareto_front

    front = pareto_front(df["bpw"], df["mean_kld"])
    lines = [f"# Quantization sweep: {plan.model.name}", "",
             f"- base: `{state['base']}`, PPL {state.get('base_ppl', float('nan')):.4f}",
             f"- text: `{plan.text_name}`, context {plan.n_ctx}, chunks {plan.n_chunks or 'all'}",
             f"- imatrix: `{plan.imatrix or 'none'}`", "",
             "| type | size (MB) | bpw | PPL | ΔPPL | mean KLD | 99% KLD | same top p | quantize (s) | Pareto |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (_, r), f in zip(df.iterrows(), front):
        lines.append(f"| {r['type']} | {r['size_mb']:.1f} | {r['bpw']:.2f} | {r['ppl']:.4f} | {r['delta_ppl']:+.4f} | "
                     f"{r['mean_kld']:.5f} | {r['kld_p99']:.5f} | {100 * r['same_top_p']:.2f}% | "
                     f"{r['quantize_s']:.1f} | {'★' if f else ''} |")
    lines += ["", "★: on the Pareto front (no other type is both smaller and closer to the base).", "",
              "![KLD and PPL against bits per weight](sweep.png)", ""]
    path.write_text("\n".join(lines))
