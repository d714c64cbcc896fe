"""`llmtk imatrix -m MODEL -f TEXT`: importance matrices like llama-imatrix (compute, combine, show)."""
from __future__ import annotations

import click

from llmtk.cli.common import (batch_options, cache_type_options, check_output_file, chunks_option,
                              ignored_llamacpp_options, require_model, staged_file, threads_option)


@click.command("imatrix")
@click.option("-m", "--model", "model_path", type=click.Path(dir_okay=False), help="GGUF model (default: the embedded SmolLM2).")
@click.option("-f", "--file", "text_path", help="Text to run through the model; '-' reads stdin "
              "(default: the text in data/, unless --in-file only combines).")
@click.option("-c", "--ctx-size", "n_ctx", default=512, show_default=True, type=click.IntRange(min=16), help="Tokens per chunk.")
@chunks_option(help="At most this many chunks (-1: all).")
@threads_option
@batch_options
@click.option("-o", "--output", "out_path", default="imatrix.gguf", show_default=True, help="Output file.")
@click.option("--output-format", type=click.Choice(["gguf", "dat"]), default="gguf", show_default=True,
              help="GGUF (sums and counts) or llama.cpp's legacy .dat.")
@click.option("--in-file", "in_files", multiple=True, type=click.Path(dir_okay=False, exists=True),
              help="Start from this imatrix (repeatable: combine several; GGUF or .dat).")
@click.option("--show-statistics", is_flag=True, help="Print per-tensor statistics of the one --in-file and exit.")
@click.option("--process-output", is_flag=True, help="Also collect output.weight.")
@click.option("--no-ppl", is_flag=True, help="Do not compute the perplexity of the chunks.")
@cache_type_options
@ignored_llamacpp_options
def command(model_path, text_path, n_ctx, n_chunks, threads, out_path, output_format, in_files, show_statistics,
            process_output, no_ppl, cache_type_k, cache_type_v):
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
    from llmtk.cli.common import model_threads
    from llmtk.cli.progress import bar, plural
    from llmtk.errors import InputError
    from llmtk.evals.imatrix import compute_imatrix, format_statistics
    from llmtk.evals.runner import read_text
    from llmtk.ggufio.imatrix_file import Imatrix, read_imatrix, write_imatrix_dat, write_imatrix_gguf
    from llmtk.resources import smollm2_path

    if show_statistics:
        if len(in_files) != 1:
            raise InputError("--show-statistics needs exactly one --in-file imatrix")
        im = Imatrix()
        im.add(read_imatrix(in_files[0]), n_ctx)
        click.echo(format_statistics(im, in_files[0]), nl=False)
        return
    # compute when there is a text or nothing to combine (llama-imatrix's default text: ours, as perplexity)
    compute = text_path is not None or not in_files
    model = (require_model(model_path) if model_path else smollm2_path()) if compute else None
    out = check_output_file(out_path, inputs=[model, text_path, *in_files], option="-o")
    im = Imatrix()
    for f in in_files:
        im.add(read_imatrix(f), n_ctx)
    dataset = None
    if compute:
        text, text_name = read_text(text_path)
        dataset = text_path or text_name
        with bar("imatrix", plain=True, unit="chunk") as update, model_threads(threads, cache_type_k=cache_type_k,
                                                                                cache_type_v=cache_type_v):
            def progress(done: int, total: int, ppl: float | None) -> None:
                update(done, total, f"PPL {ppl:.4f}" if ppl else "")

            run = compute_imatrix(model, text, n_ctx=n_ctx, n_chunks=n_chunks, process_output=process_output,
                                  compute_ppl=not no_ppl, dataset_name=text_path or text_name,
                                  previous=im if in_files else None, progress=progress)
        im = run.imatrix
        if run.running_ppl:
            click.echo(",".join(f"[{i + 1}]{p:.4f}" for i, p in enumerate(run.running_ppl)) + ",", err=True)
            err = f" +/- {run.ppl_stderr:.5f}" if run.ppl_stderr is not None else ""
            click.echo(f"Final estimate: PPL = {run.ppl:.4f}{err}", err=True)
    with staged_file(out) as tmp:
        if output_format == "dat":
            write_imatrix_dat(tmp, im, dataset=dataset)
        else:
            write_imatrix_gguf(tmp, im)
    click.echo(f"wrote {out_path} ({plural(len(im.entries), 'entry', 'entries')}, "
               f"{plural(int(im.chunk_count or 0), 'chunk')} of {n_ctx})")
