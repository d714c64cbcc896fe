"""`llmtk sweep`: quantize to several types, evaluate each against the base, one report."""
from __future__ import annotations

import click

from llmtk.evals.sweep import DEFAULT_TYPES


@click.command("sweep")
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@click.option("--types", default=",".join(DEFAULT_TYPES), show_default=True,
              help="Comma-separated llama-quantize types to try.")
@click.option("-f", "--file", "text_path", help="Evaluation (and imatrix) text; default: the text in data/.")
@click.option("--imatrix", "imatrix", help="'auto' computes one from the text; or an imatrix file (GGUF or .dat).")
@click.option("-o", "--out", "out_dir", default="llmtk-sweep", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the models, the report and the resumable state.")
@click.option("-c", "--ctx-size", "n_ctx", default=512, show_default=True, type=click.IntRange(min=2))
@click.option("--chunks", "n_chunks", type=int, help="Evaluate at most this many chunks (default: all; 4 for the embedded default).")
def command(model, types, text_path, imatrix, out_dir, n_ctx, n_chunks):
    """Quantize MODEL to each of --types, measure PPL and KL divergence against the unquantized
    base, and write a report (sweep.md, sweep.csv, sweep.json, sweep.png with the Pareto front).

    With no MODEL, the embedded SmolLM2-135M-Instruct is used (an F16 base is made from its Q4_1
    file first) with the text shipped in data/. Running again resumes: finished types are skipped.

    \b
    Examples:
      llmtk sweep
      llmtk sweep model-f16.gguf --types Q8_0,Q4_K_M,Q2_K -f wiki.txt --imatrix auto -o sweep/
    """
    from pathlib import Path

    from rich.console import Console

    from llmtk.errors import InputError
    from llmtk.evals.runner import read_text
    from llmtk.evals.sweep import SweepPlan, run_sweep
    from llmtk.resources import smollm2_path

    console = Console(stderr=True)
    if model is None:
        model = smollm2_path()
        if n_chunks is None:
            n_chunks = 4
    type_list = [t.strip().upper() for t in types.split(",") if t.strip()]
    if not type_list:
        raise InputError("--types names no type")
    text, text_name = read_text(text_path)
    plan = SweepPlan(Path(model), type_list, text, text_name, Path(out_dir), imatrix, n_ctx, n_chunks)
    with console.status("sweep") as status:
        df = run_sweep(plan, log=lambda s: console.log(s), step=lambda s: status.update(f"sweep: {s}"))
    cols = ["type", "size_mb", "bpw", "ppl", "delta_ppl", "mean_kld", "kld_p99", "same_top_p", "quantize_s"]
    click.echo(df[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    click.echo(f"\nreport: {Path(out_dir) / 'sweep.md'}", err=True)
