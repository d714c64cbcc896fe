"""`llmtk tokenize [-m MODEL] (-p TEXT | -f FILE | --stdin)`: token ids of a text, like llama-tokenize."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from llmtk.errors import InputError


@click.command("tokenize")
@click.option("-m", "--model", "model", type=click.Path(path_type=Path),
              help="GGUF file whose vocabulary is used, only its metadata is read "
                   "(default: the embedded SmolLM2-135M-Instruct Q4_1).")
@click.option("-p", "--prompt", "prompt", metavar="TEXT", help="Text to tokenize, taken literally.")
@click.option("-f", "--file", "file", type=click.Path(path_type=Path, dir_okay=False),
              help="Read the text from FILE, byte for byte (no escape processing).")
@click.option("--stdin", "use_stdin", is_flag=True, help="Read the text from standard input.")
@click.option("--ids", is_flag=True, help="Print only the ids, as one list: [19556, 905].")
@click.option("--no-bos", is_flag=True, help="Do not add BOS (nor EOS) even if the vocabulary asks for it.")
@click.option("--no-parse-special", is_flag=True,
              help="Treat control tokens written in the text (<|im_start|>) as plain text.")
@click.option("--show-count", is_flag=True, help="Print the number of tokens at the end.")
def command(model: Path | None, prompt: str | None, file: Path | None, use_stdin: bool, ids: bool,
            no_bos: bool, no_parse_special: bool, show_count: bool) -> None:
    """Tokenize a text with MODEL's vocabulary exactly as llama.cpp's `llama-tokenize --no-escape`:
    BOS as the vocabulary says, special tokens parsed, the text taken literally.

    Without --ids, prints one `id -> 'piece'` line per token.

    \b
    Examples:
      llmtk tokenize -m model.gguf -p "Hello world"
      llmtk tokenize -m model.gguf -f prompt.txt --ids
      cat prompt.txt | llmtk tokenize -m model.gguf --stdin --show-count
    """
    from llmtk.resources import smollm2_path
    from llmtk.tokenizer import Tokenizer

    if sum(x is not None and x is not False for x in (prompt, file, use_stdin)) != 1:
        raise InputError("give exactly one of -p TEXT, -f FILE or --stdin")
    if file is not None:
        try:
            data = file.read_bytes()
        except OSError as e:
            raise InputError(f"cannot read {file}: {e.strerror}") from None
        text = data.decode("utf-8", "surrogateescape")
    elif use_stdin:
        text = sys.stdin.buffer.read().decode("utf-8", "surrogateescape")
    else:
        text = prompt

    tok = Tokenizer.from_gguf(model if model is not None else smollm2_path())
    # llama-tokenize passes add_special = (the vocabulary adds BOS) and not --no-bos
    tokens = tok.encode(text, add_special=tok.add_bos and not no_bos, parse_special=not no_parse_special)

    out = click.get_binary_stream("stdout")
    if ids:
        out.write(("[" + ", ".join(map(str, tokens)) + "]\n").encode())
    else:
        for tid in tokens:
            out.write(b"%6d -> '" % tid + tok.token_to_piece(tid) + b"'\n")
    if show_count:
        out.write(f"Total number of tokens: {len(tokens)}\n".encode())
    out.flush()
