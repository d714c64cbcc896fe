"""The `llmtk` command line: a click group whose subcommands are imported only when run.

`llmtk --help` and `llmtk --version` import nothing heavy (no numba, torch, pandas, matplotlib):
each subcommand lives in `llmtk.cli.commands.<verb>` and is loaded from `COMMANDS` on demand.
Every `LlmtkError`, click usage error and OSError becomes one line on stderr, `llmtk: error: ...`,
and exit code 2 (`-v` shows the traceback); Ctrl-C exits 130 (see `llmtk.cli.interrupt`).
"""
from __future__ import annotations

import errno
import logging
import sys

import click

from llmtk import __version__
from llmtk.errors import LlmtkError
from llmtk.registry import Lazy, Registry

# verb -> the click command (imported only when run) and its one-line help for `llmtk --help`.
COMMANDS: Registry[Lazy] = Registry("command")
_HELP: dict[str, str] = {}
for _verb, _help in (
    ("inspect", "Show a GGUF file's metadata, tensors and size summary."),
    ("edit", "Set, delete or rename GGUF metadata and tensors (tensor data copied byte for byte)."),
    ("tokenize", "Tokenize text with a GGUF model's vocabulary, like llama-tokenize."),
    ("convert", "Convert a Hugging Face checkpoint (safetensors) to GGUF."),
    ("quantize", "Quantize a GGUF model with llama-quantize's type mixes."),
    ("imatrix", "Compute an importance matrix from text, like llama-imatrix."),
    ("perplexity", "Perplexity and KL divergence of a model on a text, like llama-perplexity."),
    ("sweep", "Quantize to several types and report size against quality."),
    ("gate", "Pass/fail quality gate of a candidate model against a base, for CI."),
    ("bench", "Speed tables for kernels and the forward pass."),
):
    COMMANDS.add(_verb, Lazy(f"llmtk.cli.commands.{_verb}:command"))
    _HELP[_verb] = _help
COMMANDS.add("split", Lazy("llmtk.cli.commands.split:command"))
_HELP["split"] = "Split a GGUF model into shards, like llama-gguf-split (same bytes)."
COMMANDS.add("merge", Lazy("llmtk.cli.commands.split:merge_command"))
_HELP["merge"] = "Merge a split GGUF model into one file, like llama-gguf-split --merge."
COMMANDS.add("grammar", Lazy("llmtk.cli.commands.grammar:command"))
_HELP["grammar"] = "Check a GBNF grammar and match texts against it (like llama.cpp's gbnf-validator)."
COMMANDS.add("json-schema-to-grammar", Lazy("llmtk.cli.commands.grammar:json_schema_command"))
_HELP["json-schema-to-grammar"] = "Print the GBNF grammar of a JSON Schema, like llama.cpp's converter."
COMMANDS.add("generate", Lazy("llmtk.cli.commands.generate:command"))
_HELP["generate"] = "Generate text from a prompt (llama.cpp's sampler chain, GBNF / JSON Schema constraints, --chat)."
COMMANDS.add("sensitivity", Lazy("llmtk.cli.commands.sensitivity:command"))
_HELP["sensitivity"] = "Measure each tensor's sensitivity to quantization (table and heatmap)."


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand is invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS.names())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return COMMANDS[name] if name in COMMANDS else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, _HELP[n]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LlmtkError as e:
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            _fail(str(e), e.exit_code)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """click's main with one error exit: usage errors, LlmtkError and OSError as one line
        (exit 2), Ctrl-C as exit 130 even when a numba callback swallowed its KeyboardInterrupt."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        from llmtk.cli import interrupt

        interrupt.install()
        code = 0
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except click.exceptions.Abort:
            interrupt.mark()
        except KeyboardInterrupt:
            interrupt.mark()
        except click.ClickException as e:
            ctx = getattr(e, "ctx", None)
            hint = f" (see '{' '.join(['llmtk', *ctx.command_path.split()[1:]])} --help')" if ctx is not None else ""
            _fail(e.format_message() + hint, 2 if isinstance(e, click.UsageError) else e.exit_code)
        except LlmtkError as e:
            if _VERBOSE:
                raise
            _fail(str(e), e.exit_code)
        except OSError as e:
            if e.errno == errno.EPIPE:  # `llmtk ... | head`: quiet, as click does
                sys.stdout = click.utils.PacifyFlushWrapper(sys.stdout)
                sys.exit(1)
            if _VERBOSE:
                raise
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            _fail(f"{where}{e.strerror or e}", 2)
        finally:
            interrupt.restore()
        if interrupt.interrupted():
            click.echo("llmtk: interrupted", err=True)
            sys.exit(130)
        sys.exit(code)


_VERBOSE = False


def _fail(message: str, code: int) -> None:
    """The one error exit: `llmtk: error: MESSAGE` on one line of stderr."""
    from llmtk.cli import interrupt

    if interrupt.interrupted():
        click.echo("llmtk: interrupted", err=True)
        sys.exit(130)
    click.echo("llmtk: error: " + " ".join(message.split("\n")).strip(), err=True)
    sys.exit(code)


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
    global _VERBOSE
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    _VERBOSE = verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


