"""`llmtk sensitivity`: how much each tensor's quantization hurts the output, measured."""
from __future__ import annotations

import click


@click.command("sensitivity")
@click.option("-m", "--model", "model_path", required=True, type=click.Path(dir_okay=False),
              help="Unquantized GGUF model (F32/F16/BF16 tensors).")
@click.option("-f", "--file", "text_path", type=click.Path(dir_okay=False),
              help="Calibration text (default: the text in data/).")
@click.option("--imatrix", type=click.Path(dir_okay=False, exists=True),
              help="Importance matrix the candidate types are quantized with (as llama-quantize would).")
@click.option("--candidates", default="k", show_default=True,
              help="Types (or a family: k, iq, legacy) whose predicted KLD the table shows.")
@click.option("--probe", default="Q4_0", show_default=True, help="Type each tensor is perturbed to, alone.")
@click.option("-c", "--ctx-size", "n_ctx", default=128, show_default=True, type=click.IntRange(min=8),
              help="Tokens per calibration chunk.")
@click.option("--chunks", "n_chunks", type=click.IntRange(min=1),
              help="Chunks per probe (default: about 3 perplexity runs of the text in all).")
@click.option("--cache", "cache", type=click.Path(dir_okay=False),
              help="Sensitivity cache (JSON): re-used when it matches, else written (quantize --sensitivity-cache).")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), help="Write the per-tensor table as CSV.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the per-tensor table as JSON.")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False), help="Write the table as Markdown.")
@click.option("--plot", "png_out", type=click.Path(dir_okay=False), help="Write the layer x tensor-kind heatmap (PNG).")
@click.option("--top", default=20, show_default=True, type=click.IntRange(min=1), help="Rows printed.")
@click.option("-t", "--threads", type=click.IntRange(min=1), help="Threads of the forward pass.")
def command(model_path, text_path, imatrix, candidates, probe, n_ctx, n_chunks, cache, csv_out, json_out, md_out,
            png_out, top, threads):
    """Measure each tensor's sensitivity: the KL divergence of the output when that tensor alone is
    quantized to --probe, per MiB, and the predicted KLD of each candidate type (its
    activation-weighted error from the kernels times the measured factor). The most sensitive
    tensors (the top rows, the bright cells of --plot) are the ones to give more bits.

    \b
    Examples:
      llmtk sensitivity -m model-f16.gguf --plot sens.png --csv sens.csv
      llmtk sensitivity -m model-f16.gguf -f calib.txt --imatrix imatrix.gguf --candidates iq --cache sens.json
    """
    from pathlib import Path

    from llmtk.cli.common import check_distinct, check_output_file, require_model, write_text
    from llmtk.cli.progress import bar
    from llmtk.evals.report import dumps
    from llmtk.evals.runner import read_text
    from llmtk.evals.sensitivity import candidate_errors, display_candidates, load_or_measure, save_table
    from llmtk.ggufio.shards import open_gguf
    from llmtk.quantize.requantize import load_imatrix_means
    from llmtk.quantize.target_bpw import parse_candidates

    require_model(model_path)
    types = parse_candidates(candidates)
    inputs = [model_path, text_path, imatrix]
    outs = {"--csv": csv_out, "--json": json_out, "--markdown": md_out, "--plot": png_out}
    for opt, path in outs.items():
        if path:
            check_output_file(path, inputs=inputs, option=opt)
    check_distinct({**outs, "--cache": cache})
    text, text_name = read_text(text_path)
    means = load_imatrix_means(imatrix)[0] if imatrix else None
    with bar("sensitivity", plain=True, unit="step") as update:
        progress = lambda done, total, what: update(done, total, what)  # noqa: E731
        table = load_or_measure(model_path, text, text_name, cache=cache, probe=probe, n_ctx=n_ctx,
                                n_chunks=n_chunks, threads=threads, log=lambda s: click.echo(s, err=True),
                                progress=progress)
        imatrix_id = None
        if imatrix:
            st = Path(imatrix).stat()
            imatrix_id = {"path": str(imatrix), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        with open_gguf(model_path) as reader:
            candidate_errors(table, reader, display_candidates(table, types, means), means, imatrix_id, progress)
    if cache:
        save_table(table, cache)
    if csv_out:
        write_text(csv_out, table.to_csv(types))
    if json_out:
        write_text(json_out, dumps({"model": table.model, "calibration": table.calibration, "probe": table.probe,
                                    "cost": table.cost, "tensors": table.rows(types)}) + "\n")
    if md_out:
        write_text(md_out, table.to_markdown(types))
    if png_out:
        table.plot_heatmap(png_out)
        click.echo(f"wrote {png_out}", err=True)
    click.echo(table.to_markdown(types, top=top))
