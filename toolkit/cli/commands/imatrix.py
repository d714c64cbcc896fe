"""`llmtk imatrix -m MODEL -f TEXT`: importance matrices like llama-imatrix (compute, combine, show)."""
from __future__ import annotations

import click


@click.command("imatrix")
@click.option("-m", "--model", "model_path", type=click.Path(dir_okay=False), help="GGUF model (default: the embedded SmolLM2).")
@click.option("-f", "--file", "text_path", type=click.Path(dir_okay=False, exists=True), help="Text to run through the model.")
@click.option("-c", "--ctx-size", "n_ctx", default=512, show_default=True, type=click.IntRange(min=16), help="Tokens per chunk.")
@click.option("--chunks", "n_chunks", default=-1, type=int, help="At most this many chunks (-1: all).")
@click.option("-o", "--output", "out_path", default="imatrix.gguf", show_default=True, help="Output file.")
@click.option("--output-format", type=click.Choice(["gguf", "dat"]), default="gguf", show_default=True,
              help="GGUF (sums and counts) or llama.cpp's legacy .dat.")
@click.option("--in-file", "in_files", multiple=True, type=click.Path(dir_okay=False, exists=True),
              help="Start from this imatrix (repeatable: combine several; GGUF or .dat).")
@click.option("--show-statistics", is_flag=True, help="Print per-tensor statistics of the one --in-file and exit.")
@click.option("--process-output", is_flag=True, help="Also collect output.weight.")
@click.option("--no-ppl", is_flag=True, help="Do not compute the perplexity of the chunks.")
def command(model_path, text_path, n_ctx, n_chunks, out_path, output_format, in_files, show_statistics,
            process_output, no_ppl):
    """Compute an importance matrix from text, combine or convert imatrix files, or show statistics.

    \b
    Examples:
      llmtk imatrix -m model-f16.gguf -f text.txt -c 512 --chunks 16 -o imatrix.gguf
      llmtk imatrix --in-file a.gguf --in-file b.gguf -o both.gguf
      llmtk imatrix --in-file imatrix.gguf --output-format dat -o imatrix.dat
      llmtk imatrix --in-file imatrix.gguf --show-statistics
    """
    import os

    # Idle kernel threads sleep instead of spinning: on a shared, busy machine spinning threads
    # steal the cores the working ones need (Q8_0 of SmolLM2: 31 s -> 5 s wall under load 9 on
    # 2 cores); on a quiet one the wake-ups cost microseconds. Set before numba starts OpenMP.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from pathlib import Path

    from llmtk.cli.progress import bar
    from llmtk.errors import InputError
    from llmtk.evals.imatrix import compute_imatrix, format_statistics
    from llmtk.ggufio.imatrix_file import Imatrix, read_imatrix, write_imatrix_dat, write_imatrix_gguf

    if show_statistics:
        if len(in_files) != 1:
            raise InputError("--show-statistics needs exactly one --in-file imatrix")
        im = Imatrix()
        im.add(read_imatrix(in_files[0]), n_ctx)
        click.echo(format_statistics(im, in_files[0]), nl=False)
        return
    im = Imatrix()
    for f in in_files:
        im.add(read_imatrix(f), n_ctx)
    if text_path is None:
        if not in_files:
            raise InputError("no text (-f FILE) and no --in-file to combine")
    else:
        from llmtk.resources import smollm2_path

        text = Path(text_path).read_text(encoding="utf-8")
        with bar("imatrix") as update:
            def progress(done: int, total: int, ppl: float | None) -> None:
                update(done, total, f"PPL {ppl:.4f}" if ppl else "")

            run = compute_imatrix(Path(model_path) if model_path else smollm2_path(), text, n_ctx=n_ctx,
                                  n_chunks=n_chunks, process_output=process_output, compute_ppl=not no_ppl,
                                  dataset_name=text_path, previous=im if in_files else None, progress=progress)
        im = run.imatrix
        if run.running_ppl:
            click.echo(",".join(f"[{i + 1}]{p:.4f}" for i, p in enumerate(run.running_ppl)) + ",", err=True)
            err = f" +/- {run.ppl_stderr:.5f}" if run.ppl_stderr is not None else ""
            click.echo(f"Final estimate: PPL = {run.ppl:.4f}{err}", err=True)
    if output_format == "dat":
        write_imatrix_dat(out_path, im, dataset=text_path)
    else:
        write_imatrix_gguf(out_path, im)
    click.echo(f"wrote {out_path} ({len(im.entries)} entries, {im.chunk_count} chunks of {n_ctx})")
