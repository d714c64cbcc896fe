"""`llmtk sweep`: quantize to several types, evaluate each against the base, one report."""
from __future__ import annotations

import click

from llmtk.evals.sweep import DEFAULT_TYPES


@click.command("sweep")
@click.argument("models", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--types", default=",".join(DEFAULT_TYPES), show_default=True,
              help="Comma-separated llama-quantize types to try (all checked before any work).")
@click.option("-f", "--file", "text_paths", multiple=True,
              help="Evaluation text (repeatable: each model on each text); default: the text in data/.")
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
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", metavar="[ADDRESS]",
              help="Run every step as a Ray task: 'auto' joins this machine's cluster, HOST:PORT or ray://HOST:PORT "
              "another; alone (after the models) starts a local one. See docs/distributed.md.")
@click.option("--ray-storage", type=click.Choice(["shared", "object"]),
              help="How files reach the workers: the sweep folder on storage they share (default), or Ray's "
              "object store.")
@click.option("--ray-retries", type=click.IntRange(min=0),
              help="Times a Ray task is retried when its worker dies (default 3).")
@click.option("--target-bpw", "target_bpw", metavar="B1,B2,...",
              help="Also sweep the sensitivity-chosen mixes at these bits per weight (docs/target-bpw.md).")
@click.option("--target-type", default="Q4_K_M", show_default=True,
              help="File type naming the candidate family of the --target-bpw mixes.")
def command(models, types, text_paths, imatrix, calib_path, out_dir, n_ctx, n_chunks, threads, tensor_types,
            output_tensor_type, token_embedding_type, max_mean_kld, min_same_top, schema_path, prompts_path, n_predict,
            ray_address, ray_storage, ray_retries, target_bpw, target_type):
    """Quantize each MODEL to each of --types, measure PPL and KL divergence against the unquantized
    base, and write a report (sweep.md with a model-card table, sweep.csv, sweep.json, sweep.png).
    Several models or texts make a matrix: one report per model and text in OUT/<model>/<text>/,
    and OUT/sweep.md linking them.

    With no MODEL, the embedded SmolLM2-135M-Instruct is used (an F16 base is made from its Q4_1
    file first) with the text shipped in data/. Running again resumes: an artifact is re-used only
    when it was made from the same inputs and options; anything else is made again.

    \b
    Examples:
      llmtk sweep
      llmtk sweep model-f16.gguf --types Q8_0,Q4_K_M,Q2_K -f wiki.txt --imatrix auto --calib-file calib.txt
      llmtk sweep model-f16.gguf -f wiki.txt --max-mean-kld 0.05 -o sweep/
      llmtk sweep a-f16.gguf b-f16.gguf -f wiki.txt -f code.txt -t 4 --ray auto
    """
    from pathlib import Path

    from llmtk.cli.progress import bar
    from llmtk.errors import InputError
    from llmtk.evals.runner import read_text
    from llmtk.evals.sweep import plan_matrix, run_sweeps
    from llmtk.resources import smollm2_path

    executor = None
    if ray_address is not None:
        from llmtk.evals.distributed import DEFAULT_RAY_RETRIES, RayExecutor, check_address, import_ray

        import_ray()
        check_address(ray_address)
        executor = RayExecutor(ray_address, storage=ray_storage or "shared",
                               max_retries=DEFAULT_RAY_RETRIES if ray_retries is None else ray_retries)
    elif ray_storage or ray_retries is not None:
        raise InputError("--ray-storage and --ray-retries are for --ray")
    if not models:
        models = (smollm2_path(),)
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
    texts = [read_text(p) for p in text_paths or (None,)]
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
    plans = plan_matrix([Path(m) for m in models], texts, Path(out_dir), type_list, imatrix=imatrix, n_ctx=n_ctx,
                        n_chunks=n_chunks, calib_text=calib, calib_name=calib_name, tensor_types=pairs,
                        output_tensor_type=output_tensor_type, token_embedding_type=token_embedding_type,
                        threads=threads, max_mean_kld=max_mean_kld, min_same_top=min_same_top,
                        json_schema=schema, prompts=prompts, n_predict=n_predict,
                        target_bpw=_floats(target_bpw), target_type=target_type)
    with bar("sweep", plain=True, unit="step") as update:
        frames = run_sweeps(plans, log=lambda s: click.echo(s, err=True), executor=executor,
                            progress=lambda done, total, what: update(done, total, what),
                            index_dir=Path(out_dir) if len(plans) > 1 else None)
    cols = ["type", "bpw", "ppl", "ppl_stderr", "mean_kld", "kld_p99", "same_top_p", "pareto"]
    for plan, df in zip(plans, frames):
        if len(plans) > 1:
            click.echo(f"{plan.model.name} on {plan.text_name}:")
        click.echo(df[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        rec = df[df["recommended"]]
        if not rec.empty:
            click.echo(f"recommended: {rec.iloc[0]['type']}")
    click.echo(f"report: {Path(out_dir) / 'sweep.md'}", err=True)


def _floats(text: str | None) -> list[float]:
    from llmtk.errors import InputError

    try:
        return [float(x) for x in text.split(",") if x.strip()] if text else []
    except ValueError:
        raise InputError(f"--target-bpw {text!r}: expected numbers separated by commas") from None
