"""The `llmtk` command line: a click group whose subcommands are imported only when run.

`llmtk --help` and `llmtk --version` import nothing heavy (no numba, torch, pandas, matplotlib):
each subcommand lives in `llmtk.cli.commands.<verb>` and is loaded from the table below on demand.
Every `LlmtkError` becomes a one-line message on stderr and exit code 2 (`-v` shows the traceback).
"""
from __future__ import annotations

import importlib
import logging
import sys

import click

from llmtk import __version__
from llmtk.errors import LlmtkError

# verb -> (module:attribute, one-line help shown by `llmtk --help`). One row per command.
COMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("llmtk.cli.commands.inspect:command", "Show a GGUF file's metadata, tensors and size summary."),
    "edit": ("llmtk.cli.commands.edit:command", "Set, delete or rename GGUF metadata and tensors (tensor data copied byte for byte)."),
    "tokenize": ("llmtk.cli.commands.tokenize:command", "Tokenize text with a GGUF model's vocabulary, like llama-tokenize."),
    "convert": ("llmtk.cli.commands.convert:command", "Convert a Hugging Face checkpoint (safetensors) to GGUF."),
    "quantize": ("llmtk.cli.commands.quantize:command", "Quantize a GGUF model with llama-quantize's type mixes."),
    "imatrix": ("llmtk.cli.commands.imatrix:command", "Compute an importance matrix from text, like llama-imatrix."),
    "perplexity": ("llmtk.cli.commands.perplexity:command", "Perplexity and KL divergence of a model on a text, like llama-perplexity."),
    "sweep": ("llmtk.cli.commands.sweep:command", "Quantize to several types and report size against quality."),
    "gate": ("llmtk.cli.commands.gate:command", "Pass/fail quality gate of a candidate model against a base, for CI."),
    "bench": ("llmtk.cli.commands.bench:command", "Speed tables for kernels and the forward pass."),
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand is invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, (target, _) in COMMANDS.items() if _module_exists(target))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not _module_exists(COMMANDS[name][0]):
            return None
        module, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, COMMANDS[n][1]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LlmtkError as e:
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            click.echo(f"llmtk: error: {e}", err=True)
            sys.exit(e.exit_code)


def _module_exists(target: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(target.split(":")[0]) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="llmtk")
@click.option("-v", "--verbose", is_flag=True, help="Log details and show tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """llmtk: convert, quantize, inspect and evaluate GGUF language models.

    A Python toolchain that matches llama.cpp's tools: bit-exact quantized bytes and
    converted tensors, perplexity and KL divergence within stated tolerances.
    Run `llmtk COMMAND --help` for each command's options and examples.
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


