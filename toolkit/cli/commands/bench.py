"""`llmtk bench kernels|forward|quantize|start`: speed tables beside llama.cpp's figures."""
from __future__ import annotations

import functools

import click

from llmtk.cli.common import ignored_llamacpp_options

FORMATS = ("table", "markdown", "md", "csv", "json")


def _output_options(fn):
    @click.option("-o", "--output", "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
                  help="Output format, as llama-bench's -o: table (a rich table on the terminal); "
                       "markdown/md, csv, json: text (csv/json at full precision).")
    @click.option("--output-file", "output", type=click.Path(dir_okay=False), metavar="FILE",
                  help="Also write the table to FILE (.csv, .json by suffix; markdown otherwise).")
    @functools.wraps(fn)
    def wrapper(fmt, output, **kw):
        from rich.console import Console

        from llmtk.cli.common import check_output_file, require_model

        if kw.get("model"):
            require_model(kw["model"])
        if output:
            check_output_file(output, inputs=[kw.get("model"), kw.get("imatrix")], option="--output-file")
        err = Console(stderr=True)
        with err.status("bench") as status:
            df = fn(progress=lambda s: status.update(f"bench: {s}"), **kw)
        _emit(df, "markdown" if fmt == "md" else fmt, output)
    return wrapper


def _emit(df, fmt: str, output: str | None) -> None:
    from pathlib import Path

    from llmtk.bench import format_cell, render

    if fmt == "table":
        from rich.console import Console
        from rich.table import Table

        table = Table(title=df.attrs.get("title"), title_justify="left")
        for c in df.columns:
            table.add_column(str(c), justify="left" if c in ("type", "what") else "right")
        for rec in df.itertuples(index=False):
            table.add_row(*(format_cell(v, c) for v, c in zip(rec, df.columns)))
        Console(width=max(160, Console().width)).print(table)
    else:
        click.echo(render(df, fmt))
    if output:
        suffix = Path(output).suffix.lower()
        out_fmt = {".csv": "csv", ".json": "json"}.get(suffix, fmt if fmt != "table" else "markdown")
        from llmtk.cli.common import write_text

        write_text(output, render(df, out_fmt) + "\n")


def _thread_list(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """`-t 1,2,4` as llama-bench takes it: comma-separated counts of at least 1."""
    try:
        items = [int(t) for t in value.split(",") if t.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated thread counts, e.g. 1,2,4") from None
    if not items or min(items) < 1:
        raise click.BadParameter(f"{value!r}: thread counts must be at least 1")
    return value


def _types(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


@click.group("bench")
def command() -> None:
    """Speed tables: kernels (MB/s), forward pass (tokens/s), whole-model quantize (seconds) and
    start-up, with ratios to llama.cpp's figures for this machine class and to gguf-py.

    Timings are the best of several runs; on a shared machine compare ratios, not absolutes.

    \b
    Examples:
      llmtk bench kernels --types Q4_0,Q4_K,IQ4_XS -t 1,2
      llmtk bench forward --types F16,Q8_0,Q4_K_M -o md
      llmtk bench quantize --types Q8_0,Q4_K_M,Q4_K_M-imatrix --output-file quantize.csv
      llmtk bench start
    """


@command.command("kernels")
@click.option("--types", help="Comma-separated ggml types (default: every type with kernels).")
@click.option("--rows", default=128, show_default=True, type=click.IntRange(min=1, max=1 << 20))
@click.option("--cols", default=4096, show_default=True, type=click.IntRange(min=1, max=1 << 24))
@click.option("-t", "--threads", default="1,2", show_default=True, callback=_thread_list, help="Comma-separated numba thread counts.")
@click.option("-r", "--repetitions", "--repeat", "repeat", default=3, show_default=True, type=click.IntRange(min=1, max=1000),
              help="Runs per figure (best kept).")
@click.option("--gguf-py/--no-gguf-py", default=True, show_default=True, help="Measure gguf-py's NumPy quants too.")
@click.option("--clock", type=click.Choice(["wall", "cpu"]), default="wall", show_default=True,
              help="Time one-thread runs by the wall clock or by the thread's CPU time (busy machines).")
@_output_options
def kernels(types, rows, cols, threads, repeat, gguf_py, clock, progress):
    """MB/s of f32 data for quantize, quantize with imatrix and dequantize per ggml type."""
    from llmtk.bench import bench_kernels, parse_threads

    return bench_kernels(_types(types), rows=rows, cols=cols, threads=parse_threads(threads), repeat=repeat,
                         gguf_py=gguf_py, clock=clock, progress=progress)


@command.command("forward")
@click.option("-m", "--model", type=click.Path(dir_okay=False), help="GGUF model (default: the embedded SmolLM2).")
@click.option("--types", help="Comma-separated llama-quantize types made from the model "
              "(default: F16,Q8_0,Q4_K_M for SmolLM2; the file as it is for -m).")
@click.option("-t", "--threads", default="1,2", show_default=True, callback=_thread_list, help="Comma-separated thread counts (numba and BLAS).")
@click.option("-p", "--n-prompt", default=512, show_default=True, type=click.IntRange(min=1, max=1 << 20))
@click.option("-n", "--n-gen", default=128, show_default=True, type=click.IntRange(min=1, max=1 << 20))
@click.option("-r", "--repetitions", "--repeat", "repeat", default=3, show_default=True, type=click.IntRange(min=1, max=1000))
@click.option("--clock", type=click.Choice(["wall", "cpu"]), default="wall", show_default=True,
              help="Time one-thread rows by the wall clock or by the process's CPU time (busy machines).")
@ignored_llamacpp_options
@_output_options
def forward(model, types, threads, n_prompt, n_gen, repeat, clock, progress):
    """Tokens/s for prompt processing (pp512) and generation (tg128), like llama-bench."""
    from llmtk.bench import bench_forward, parse_threads

    return bench_forward(model, _types(types), threads=parse_threads(threads), n_prompt=n_prompt, n_gen=n_gen,
                         repeat=repeat, clock=clock, progress=progress)


@command.command("quantize")
@click.option("-m", "--model", type=click.Path(dir_okay=False), help="F16 GGUF input (default: an F16 of SmolLM2).")
@click.option("--types", help="Comma-separated llama-quantize types; TYPE-imatrix uses --imatrix "
              "(default: F16,Q8_0,Q4_0,Q6_K,Q4_K_M,Q3_K_M,IQ4_XS,Q4_K_M-imatrix).")
@click.option("-t", "--threads", default=2, show_default=True, type=click.IntRange(min=1, max=4096))
@click.option("--imatrix", type=click.Path(dir_okay=False, exists=True),
              help="Importance matrix for TYPE-imatrix (default: SmolLM2's in the shared data).")
@click.option("-r", "--repetitions", "--repeat", "repeat", default=1, show_default=True, type=click.IntRange(min=1, max=1000))
@click.option("--process/--in-process", default=True, show_default=True,
              help="Time quantize_model in fresh processes (start-up included, like llama-quantize's figure) "
                   "or quantize_model inside this process.")
@_output_options
def quantize(model, types, threads, imatrix, repeat, process, progress):
    """Whole-model quantize time against llama-quantize's."""
    from llmtk.bench import DEFAULT_QUANTIZE_TYPES, bench_quantize

    return bench_quantize(_types(types) or DEFAULT_QUANTIZE_TYPES, model=model, threads=threads, imatrix=imatrix,
                          repeat=repeat, process=process, progress=progress)


@command.command("start")
@click.option("-r", "--repetitions", "--repeat", "repeat", default=3, show_default=True, type=click.IntRange(min=1, max=1000))
@_output_options
def start(repeat, progress):
    """Warm-cache JIT start of the kernels and `llmtk --help`, in fresh processes."""
    from llmtk.bench import bench_start

    return bench_start(repeat, progress=progress)
