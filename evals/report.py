"""Reports of evaluation runs: markdown, JSON, CSV and legible PNG plots (pandas, matplotlib).

Plots are drawn with the non-interactive Agg backend, each with a title, labelled axes and units.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from llmtk.outputs import remove_quietly, replace_into, temp_path, write_text_atomic, writing

from .perplexity import PerplexityResult


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"savefig.format": "png", "figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "font.size": 10})
    return plt


def _json_default(o: Any):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=_json_default, ensure_ascii=False)


def plot_running_ppl(result: PerplexityResult, path: Path, label: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    chunks = np.arange(1, len(result.running_ppl) + 1)
    ax.plot(chunks, result.running_ppl, marker="o", ms=3, label=label)
    if result.kld is not None:
        ax.axhline(result.kld.ppl_base, color="gray", ls="--", lw=1, label=f"base PPL {result.kld.ppl_base:.4f}")
    ax.set_title(f"Running perplexity over chunks ({result.n_ctx}-token context)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # chunks are whole numbers
    ax.set_xlabel("chunk (cumulative)")
    ax.set_ylabel("perplexity (lower is better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_kld_histogram(result: PerplexityResult, path: Path) -> None:
    plt = _plt()
    k = result.token_kld.astype(np.float64)
    fig, ax = plt.subplots(figsize=(7, 4))
    lo = max(float(k[k > 0].min()) if (k > 0).any() else 1e-8, 1e-8)
    bins = np.logspace(np.log10(lo), np.log10(max(float(k.max()), lo * 10)), 60)
    ax.hist(np.clip(k, lo, None), bins=bins, color="tab:blue", alpha=0.8)
    ax.set_xscale("log")
    for name, q, color in (("median", result.kld.median, "tab:green"), ("99%", result.kld.p99, "tab:orange"),
                           ("mean", result.kld.mean, "tab:red")):
        ax.axvline(q, color=color, ls="--", lw=1.2, label=f"{name} {q:.4g} nats")
    ax.set_title(f"Per-token KL divergence to the base ({result.n_tokens_scored} tokens)")
    ax.set_xlabel("KL divergence (nats, log scale)")
    ax.set_ylabel("tokens")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_dp_distribution(result: PerplexityResult, path: Path) -> None:
    plt = _plt()
    dp = 100.0 * result.token_p_diff.astype(np.float64)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(dp, bins=80, color="tab:purple", alpha=0.8)
    ax.set_yscale("log")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_title(f"Change of the correct token's probability (RMS Δp {100 * result.kld.rms_dp:.3f}%)")
    ax.set_xlabel("Δp = p(model) - p(base) of the correct token (percentage points)")
    ax.set_ylabel("tokens (log scale)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_token_kld(result: PerplexityResult, path: Path) -> None:
    """KLD of every scored token along the text, on a log axis (float rounding can leave a KLD a
    hair below zero: those are drawn at the axis floor), with a moving mean; legend outside."""
    plt = _plt()
    k = result.token_kld.astype(np.float64)
    fig, ax = plt.subplots(figsize=(9, 4.2))
    x = np.arange(len(k))
    positive = k[k > 0]
    floor = max(float(np.percentile(positive, 0.5)) if positive.size else 1e-8, 1e-10)
    ax.plot(x, np.maximum(k, floor), lw=0.4, color="tab:blue", alpha=0.6, label="per token")
    w = max(1, min(64, len(k) // 20))
    if len(k) >= w:  # full windows only: no dip at the ends
        smooth = np.convolve(k, np.ones(w) / w, mode="valid")
        ax.plot(x[w // 2:w // 2 + len(smooth)], np.maximum(smooth, floor), lw=1.5, color="tab:red",
                label=f"moving mean ({w} tokens)")
    n_score = result.n_tokens_scored // max(result.n_chunks, 1)
    bounds = result.n_chunks <= 40  # more boundaries than that would only grey the plot
    for c in range(1, result.n_chunks if bounds else 0):
        ax.axvline(c * n_score, color="gray", lw=0.4, alpha=0.5)
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor)
    ax.set_title("KL divergence along the text (scored tokens" + (", chunk boundaries in gray)" if bounds else ")"))
    ax.set_xlabel("scored token index")
    ax.set_ylabel("KL divergence (nats, log scale)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _save_atomic(path: Path, draw) -> None:
    """`draw(file)` into a temporary beside `path` (PNG, matplotlib's default format), renamed
    onto `path` when complete."""
    tmp = temp_path(path)
    try:
        with writing(path):
            with open(tmp, "wb") as f:
                draw(f)
        replace_into(tmp, path)
    finally:
        remove_quietly(tmp)


def write_perplexity_report(result: PerplexityResult, out_dir: str | Path, meta: dict[str, Any]) -> Path:
    """`report.md`, `results.json` and the plots of one run in `out_dir`; returns the markdown path.

    Every file is written atomically (`llmtk.outputs`); an OSError is a one-line `OutputError`. For a report that appears whole or not at all, pass a staging folder."""
    out = Path(out_dir)
    with writing(out / "report.md"):
        out.mkdir(parents=True, exist_ok=True)
    label = Path(str(meta.get("model", "model"))).name
    plots = [("running_ppl.png", "Running perplexity", lambda p: plot_running_ppl(result, p, label))]
    if result.kld is not None:
        plots += [("kld_histogram.png", "KL divergence histogram", lambda p: plot_kld_histogram(result, p)),
                  ("dp_distribution.png", "Δp distribution", lambda p: plot_dp_distribution(result, p)),
                  ("token_kld.png", "KL divergence along the text", lambda p: plot_token_kld(result, p))]
    for name, _, draw in plots:
        _save_atomic(out / name, draw)
    write_text_atomic(out / "results.json", dumps({**meta, **result.to_dict()}) + "\n")
    lines = [f"# Perplexity report: {label}", ""]
    for k, v in meta.items():
        lines.append(f"- {k}: `{v}`")
    lines += ["", "| metric | value |", "|---|---|",
              f"| PPL | {result.ppl:.4f} ± {result.ppl_stderr:.5f} |",
              f"| context / chunks / scored tokens | {result.n_ctx} / {result.n_chunks} / {result.n_tokens_scored} |",
              f"| wall time | {result.seconds:.1f} s |"]
    if result.kld is not None:
        k = result.kld
        lines += [f"| PPL(base) | {k.ppl_base:.4f} ± {k.ppl_base_stderr:.5f} |",
                  f"| PPL ratio | {k.ppl_ratio:.6f} ± {k.ppl_ratio_stderr:.6f} |",
                  f"| mean KLD | {k.mean:.6f} ± {k.mean_stderr:.6f} |",
                  f"| median / 99% / max KLD | {k.median:.6f} / {k.p99:.6f} / {k.max:.6f} |",
                  f"| RMS Δp | {100 * k.rms_dp:.3f} ± {100 * k.rms_dp_stderr:.3f} % |",
                  f"| same top p | {100 * k.same_top_p:.3f} ± {100 * k.same_top_p_stderr:.3f} % |"]
    lines.append("")
    for name, title, _ in plots:
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    md = out / "report.md"
    write_text_atomic(md, "\n".join(lines))
    return md


def plot_sweep(df, path: Path, title: str) -> None:
    """Mean KLD and PPL (± one standard error) against llama.cpp's bits per weight; the Pareto
    front (`df["pareto"]`, uncertainty-aware) joined in red, the base as a dashed line."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    is_base = df["type"].str.endswith("(base)")
    quants = df[~is_base].sort_values("bpw")
    for ax, col, err, ylabel, log in (
            (axes[0], "mean_kld", "mean_kld_stderr", "mean KL divergence to the base (nats, log scale)", True),
            (axes[1], "ppl", "ppl_stderr", "perplexity (lower is better)", False)):
        d = quants.dropna(subset=[col])
        if d.empty:
            continue
        front = d["pareto"].to_numpy(bool) if "pareto" in d else np.ones(len(d), bool)
        if (~front).any():
            ax.errorbar(d["bpw"][~front], d[col][~front], yerr=d[err][~front], fmt="o", color="tab:gray",
                        capsize=3, label="dominated")
        # the front is decided on mean KLD; on the PPL panel its points are marked, not joined
        ax.errorbar(d["bpw"][front], d[col][front], yerr=d[err][front], fmt="-o" if log else "o", color="tab:red",
                    capsize=3, label="Pareto front (mean KLD)")
        for i, (_, r) in enumerate(d.iterrows()):  # labels alternate above and below the points
            ax.annotate(r["type"], (r["bpw"], r[col]), textcoords="offset points",
                        xytext=(6, 8 if i % 2 == 0 else -14), fontsize=8)
        if is_base.any() and col == "ppl":
            b = df[is_base].iloc[0]
            ax.axhline(b["ppl"], color="tab:blue", ls="--", lw=1, label=f"{b['type']}: {b['ppl']:.3f}")
        if log and (d[col] > 0).all():
            ax.set_yscale("log")
        ax.set_xlabel("bits per weight (tensor data / weights, as llama.cpp)")
        ax.set_ylabel(ylabel)
        ax.margins(x=0.12, y=0.15)
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
