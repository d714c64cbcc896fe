"""`llmtk sweep`: quantize to several types, evaluate each against the base, one report."""
from __future__ import annotations

import click

from llmtk.evals.sweep import DEFAULT_TYPES


@click.command("sweep")
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@click.option("--types", default=",".join(DEFAULT_TYPES), show_default=True,
              help="Comma-separated llama-quantize types to try (all checked before any work).")
@click.option("-f", "--file", "text_path", help="Evaluation text; default: the text in data/.")
@click.option("--imatrix", "imatrix", help="'auto' computes one from --calib-file (default: the second half of "
              "the text, the first half then being evaluated); or an imatrix file (GGUF or .dat).")
@click.option("--calib-file", "calib_path", type=click.Path(dir_okay=False),
              help="Calibration text for --imatrix auto (never the evaluation text itself).")
@click.option("-o", "--out", "out_dir", default="llmtk-sweep", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the models, the report and the resumable state.")
@click.option("-c", "--ctx-size", "n_ctx", default=512, show_default=True, type=click.IntRange(min=2))
@click.option("--chunks", "n_chunks", type=click.IntRange(min=1),
              help="Evaluate at most this many chunks (default: all; 4 for the embedded default).")
@click.option("-t", "--threads", type=click.IntRange(min=1), help="Threads for quantizing and evaluating.")
@click.option("--tensor-type", "tensor_types", multiple=True, metavar="PATTERN=TYPE",
              help="As llama-quantize's --tensor-type, for every type of the sweep (repeatable).")
@click.option("--output-tensor-type", help="ggml type for output.weight in every type of the sweep.")
@click.option("--token-embedding-type", help="ggml type for the token embeddings in every type of the sweep.")
@click.option("--max-mean-kld", type=click.FloatRange(min=0), help="Recommend the smallest type whose mean KLD "
              "is at most this (with --min-same-top: both).")
@click.option("--min-same-top", type=click.FloatRange(0, 1), help="Recommend the smallest type whose top token "
              "agrees with the base's at least this often (a fraction: 0.95).")
@click.option("--json-schema", "schema_path", type=click.Path(dir_okay=False),
              help="With --prompts: report how often each type's unconstrained greedy answer follows this schema.")
@click.option("--prompts", "prompts_path", type=click.Path(dir_okay=False),
              help="Prompts for --json-schema, one per line.")
@click.option("-n", "--n-predict", default=128, show_default=True, type=click.IntRange(min=1),
              help="Tokens per answer for --json-schema.")
def command(model, types, text_path, imatrix, calib_path, out_dir, n_ctx, n_chunks, threads, tensor_types,
            output_tensor_type, token_embedding_type, max_mean_kld, min_same_top, schema_path, prompts_path, n_predict):
    """Quantize MODEL to each of --types, measure PPL and KL divergence against the unquantized
    base, and write a report (sweep.md with a model-card table, sweep.csv, sweep.json, sweep.png).

    With no MODEL, the embedded SmolLM2-135M-Instruct is used (an F16 base is made from its Q4_1
    file first) with the text shipped in data/. Running again resumes: an artifact is re-used only
    when it was made from the same inputs and options; anything else is made again.

    \b
    Examples:
      llmtk sweep
      llmtk sweep model-f16.gguf --types Q8_0,Q4_K_M,Q2_K -f wiki.txt --imatrix auto --calib-file calib.txt
      llmtk sweep model-f16.gguf -f wiki.txt --max-mean-kld 0.05 -o sweep/
    """
    from pathlib import Path

    from llmtk.cli.progress import bar
    from llmtk.errors import InputError
    from llmtk.evals.runner import read_text
    from llmtk.evals.sweep import SweepPlan, run_sweep
    from llmtk.resources import smollm2_path

    if model is None:
        model = smollm2_path()
        if n_chunks is None:
            n_chunks = 4
    type_list = [t.strip() for t in types.split(",") if t.strip()]
    pairs = []
    for spec in tensor_types:
        pat, sep, typ = spec.partition("=")
        if not sep or not pat or not typ:
            raise InputError(f"--tensor-type {spec!r}: expected PATTERN=TYPE")
        pairs.append((pat, typ))
    if calib_path and imatrix != "auto":
        raise InputError("--calib-file is for --imatrix auto")
    text, text_name = read_text(text_path)
    schema, prompts = None, []
    if schema_path:
        import json

        try:
            schema = json.loads(Path(schema_path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise InputError(f"{schema_path}: not a readable JSON Schema ({e})") from None
    if prompts_path:
        try:
            prompts = [ln for ln in Path(prompts_path).read_text(encoding="utf-8").splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{prompts_path}: cannot read the prompts ({e})") from None
        if not prompts:
            raise InputError(f"{prompts_path}: has no prompt")
    calib, calib_name = read_text(calib_path) if calib_path else (None, None)
    plan = SweepPlan(Path(model), type_list, text, text_name, Path(out_dir), imatrix, n_ctx, n_chunks,
                     calib_text=calib, calib_name=calib_name, tensor_types=pairs,
                     output_tensor_type=output_tensor_type, token_embedding_type=token_embedding_type,
                     threads=threads, max_mean_kld=max_mean_kld, min_same_top=min_same_top,
                     json_schema=schema, prompts=prompts, n_predict=n_predict)
    with bar("sweep", plain=True, unit="step") as update:
        df = run_sweep(plan, log=lambda s: click.echo(s, err=True),
                       progress=lambda done, total, what: update(done, total, what))
    cols = ["type", "bpw", "ppl", "ppl_stderr", "mean_kld", "kld_p99", "same_top_p", "pareto"]
    click.echo(df[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    rec = df[df["recommended"]]
    if not rec.empty:
        click.echo(f"recommended: {rec.iloc[0]['type']}")
    click.echo(f"report: {Path(out_dir) / 'sweep.md'}", err=True)
