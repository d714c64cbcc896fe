"""`llmtk convert HF_DIR [-o OUT] [--outtype T]`: Hugging Face checkpoint -> GGUF like llama.cpp."""
from __future__ import annotations

from pathlib import Path

import click

_EPILOG = ("OUTTYPE: f32 f16 bf16 q8_0 auto (llama.cpp's converter), or any llama-quantize type "
           "(Q4_K_M, Q6_K, IQ4_XS, ...) to convert and quantize in one pass.")


class _ConvertCommand(click.Command):
    """Appends the supported architectures, read from the converter registry when the help is
    shown (so `llmtk --help` imports nothing of the converters, and the list is never hand-kept)."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_help_text(ctx, formatter)
        from llmtk.converters import supported_architectures

        names = supported_architectures()
        with formatter.section(f"Supported architectures ({len(names)}, config.json's `architectures`)"):
            formatter.write_text(", ".join(names))


@click.command("convert", cls=_ConvertCommand, epilog=_EPILOG)
@click.argument("hf_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("-o", "--outfile", type=click.Path(path_type=Path), default=None,
              help="Output file or folder; default: llama.cpp's name (e.g. Model-1.6M-F16.gguf) inside "
                   "HF_DIR. '{ftype}' in the name is replaced by the output type.")
@click.option("--outtype", default="f16", show_default=True, metavar="OUTTYPE", help="Output tensor type.")
@click.option("--vocab-only", is_flag=True, help="Write only the metadata and tokenizer, no tensors.")
@click.option("--imatrix", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Importance matrix (GGUF or legacy .dat) for quantized OUTTYPEs.")
@click.option("--model-name", default=None, help="general.name (default: from the model card or folder name).")
@click.option("--split-max-size", default="0", metavar="N[K|M|G]",
              help="Split the output into shards of at most this many data bytes (llama.cpp's naming).")
@click.option("--split-max-tensors", type=click.IntRange(min=0), default=0, help="At most this many tensors per shard.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress bar on stderr (only when it is a terminal).")
def command(hf_dir: Path, outfile: Path | None, outtype: str, vocab_only: bool, imatrix: Path | None,
            model_name: str | None, split_max_size: str, split_max_tensors: int, progress: bool) -> None:
    """Convert the Hugging Face model folder HF_DIR (config.json + safetensors + tokenizer) to GGUF.

    Tensors and metadata match llama.cpp's convert_hf_to_gguf.py; no torch is needed for
    safetensors checkpoints. The supported architectures are listed below.

    \b
    Examples:
      llmtk convert ./SmolLM2-135M-Instruct
      llmtk convert ./Qwen3-0.6B -o qwen3-{ftype}.gguf --outtype bf16
      llmtk convert ./Mistral-7B --outtype Q4_K_M --imatrix imatrix.gguf
      llmtk convert ./gemma-3-270m --vocab-only -o vocab.gguf
    """
    from llmtk.cli.common import check_output_dir, check_output_file
    from llmtk.cli.progress import bar
    from llmtk.converters import convert
    from llmtk.converters.pipeline import parse_outtype, parse_split_size
    from llmtk.errors import InputError
    from llmtk.outputs import writing

    # every argument and the output checked before any tensor is read
    if not hf_dir.is_dir():
        raise InputError(f"{hf_dir}: not a directory (expected a Hugging Face model folder)")
    parse_outtype(outtype)
    parse_split_size(split_max_size)
    if outfile is None or outfile.is_dir():
        check_output_dir(outfile or hf_dir, option="-o" if outfile else None)
        target = outfile or hf_dir
    else:
        check_output_file(outfile, inputs=[imatrix], option="-o")
        target = outfile
    with bar("convert", in_bytes=True, enabled=progress) as update, writing(target):
        def on_tensor(done: int, total: int, n_done: int, n_total: int, name: str) -> None:
            update(done, total, f"{n_done}/{n_total} tensors {name}")

        path = convert(hf_dir, outfile, outtype, vocab_only=vocab_only, imatrix=imatrix, progress=on_tensor,
                       model_name=model_name, split_max_size=split_max_size, split_max_tensors=split_max_tensors)
    click.echo(str(path))
