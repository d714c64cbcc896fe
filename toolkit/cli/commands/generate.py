"""`llmtk generate -m MODEL -p PROMPT`: stream a continuation, like llama.cpp's llama-cli/llama-simple."""
from __future__ import annotations

from pathlib import Path

import click
from llmtk.cli.common import threads_option
from llmtk.errors import InputError


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {what} {path}: {getattr(e, 'strerror', None) or e}") from None


@click.command("generate")
@click.option("-m", "--model", "model", type=click.Path(path_type=Path),
              help="GGUF model (default: the embedded SmolLM2-135M-Instruct Q4_1).")
@click.option("-p", "--prompt", "prompt", metavar="TEXT", help="The prompt.")
@click.option("-f", "--file", "file", type=click.Path(path_type=Path, dir_okay=False), help="Read the prompt from FILE.")
@click.option("-n", "--n-predict", "n_predict", type=int, default=128, show_default=True,
              help="Tokens to generate (-1: until end of generation or the context is full).")
@click.option("--grammar", "grammar", metavar="GBNF", help="GBNF grammar text constraining the output.")
@click.option("--grammar-file", "grammar_file", type=click.Path(path_type=Path, dir_okay=False),
              help="GBNF grammar file constraining the output.")
@click.option("-j", "--json-schema", "json_schema", metavar="SCHEMA|FILE",
              help="JSON Schema constraining the output: inline JSON ({...}) or a file.")
@click.option("-jf", "--json-schema-file", "json_schema_file", type=click.Path(path_type=Path, dir_okay=False),
              help="JSON Schema file constraining the output.")
@click.option("--temp", type=float, default=0.8, show_default=True, help="Temperature (<= 0: greedy).")
@click.option("--top-k", type=int, default=40, show_default=True, help="Top-k (<= 0: off).")
@click.option("--top-p", type=float, default=0.95, show_default=True, help="Top-p (1.0: off).")
@click.option("--min-p", type=float, default=0.05, show_default=True, help="Min-p (0.0: off).")
@click.option("--typical", "typical_p", type=float, default=1.0, show_default=True, help="Locally typical p (1.0: off).")
@click.option("--repeat-penalty", type=float, default=1.0, show_default=True, help="Repetition penalty (1.0: off).")
@click.option("--repeat-last-n", type=int, default=64, show_default=True,
              help="Last tokens the penalties look at (0: off, -1: all).")
@click.option("--presence-penalty", type=float, default=0.0, show_default=True, help="Presence penalty (0.0: off).")
@click.option("--frequency-penalty", type=float, default=0.0, show_default=True, help="Frequency penalty (0.0: off).")
@click.option("-s", "--seed", type=int, default=-1, show_default=True, help="Random seed (-1: random).")
@click.option("--chat", is_flag=True, help="Format the prompt as a user turn with the model's chat template.")
@click.option("-sys", "--system-prompt", "system", metavar="TEXT", help="System turn for --chat.")
@click.option("-c", "--ctx-size", "n_ctx", type=click.IntRange(min=0), default=0,
              help="Context size (0: the model's, or prompt + n-predict).")
@click.option("--ignore-eos", is_flag=True, help="Never stop at end-of-generation tokens.")
@click.option("--escape/--no-escape", default=True, show_default=True,
              help="Turn \\n, \\t, \\xHH ... in the prompt into their characters, as llama.cpp does.")
@click.option("--no-perf", is_flag=True, help="Do not print timings to stderr.")
@threads_option
def command(model: Path | None, prompt: str | None, file: Path | None, n_predict: int, grammar: str | None,
            grammar_file: Path | None, json_schema: str | None, json_schema_file: Path | None, temp: float,
            top_k: int, top_p: float, min_p: float, typical_p: float, repeat_penalty: float, repeat_last_n: int,
            presence_penalty: float, frequency_penalty: float, seed: int, chat: bool, system: str | None,
            n_ctx: int, ignore_eos: bool, escape: bool, no_perf: bool, threads: int | None) -> None:
    """Generate text from a prompt and stream it to stdout, with llama.cpp's sampler chain
    (penalties, top-k, typical, top-p, min-p, temperature) and defaults; --temp 0 is greedy.
    A GBNF grammar or a JSON Schema constrains the output; timings go to stderr.

    \b
    Examples:
      llmtk generate -p "Hello my name is" -n 32 --temp 0
      llmtk generate -m model.gguf --chat -p "List three colours as JSON" -jf colours.schema.json
      llmtk generate -p "2+2=" --grammar-file grammars/arithmetic.gbnf --seed 1
    """
    from llmtk.cli.commands.tokenize import process_escapes
    from llmtk.cli.common import require_model
    from llmtk.generate import generate
    from llmtk.model import load_model
    from llmtk.resources import smollm2_path

    if (prompt is None) == (file is None):
        raise InputError("give exactly one of -p TEXT or -f FILE")
    text = prompt if prompt is not None else _read(file, "prompt file")
    if escape:
        text = process_escapes(text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")
    given = [x for x in (grammar, grammar_file, json_schema, json_schema_file) if x is not None]
    if len(given) > 1:
        raise InputError("give at most one of --grammar, --grammar-file, --json-schema, --json-schema-file")
    if grammar_file is not None:
        grammar = _read(grammar_file, "grammar file")
    schema = json_schema
    if schema is not None and not schema.lstrip().startswith("{"):
        schema = _read(Path(schema), "JSON Schema file")
    if json_schema_file is not None:
        schema = _read(json_schema_file, "JSON Schema file")

    path = require_model(model) if model is not None else smollm2_path()
    out = click.get_binary_stream("stdout")
    stats: dict = {}
    with load_model(path, threads=threads) as m:
        for tok in generate(m, text, n_predict=n_predict, grammar=grammar, json_schema=schema, temp=temp,
                            top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
                            repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n,
                            presence_penalty=presence_penalty, frequency_penalty=frequency_penalty, seed=seed,
                            chat=chat, system=system, ignore_eos=ignore_eos, n_ctx=n_ctx or None, stats=stats):
            out.write(tok.text.encode("utf-8", "surrogateescape"))
            out.flush()
    out.write((stats.get("tail", "") + "\n").encode("utf-8"))
    out.flush()
    if not no_perf:
        n, t = stats.get("n_gen", 0), stats.get("t_gen", 0.0)
        tps = f"{(n - 1) / t:.1f} t/s" if n > 1 and t > 0 else "-"
        mask = f", grammar masks {stats['n_mask']} ({stats['t_mask'] * 1e3:.1f} ms)" if stats.get("n_mask") else ""
        click.echo(f"llmtk: prompt {stats.get('n_prompt', 0)} tokens in {stats.get('t_prompt', 0.0):.2f} s, "
                   f"generated {n} tokens ({tps}), sampling {stats.get('t_sample', 0.0) * 1e3:.0f} ms{mask}, "
                   f"seed {stats.get('seed')}, stop: {stats.get('stop')}", err=True)
