"""`llmtk tokenize [-m MODEL] (-p TEXT | -f FILE | --stdin)`: token ids of a text, like llama-tokenize."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from llmtk.errors import InputError

_SIMPLE_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("'"): b"'", ord('"'): b'"', ord("\\"): b"\\"}
_C_SPACE = b" \t\n\v\f\r"
_HEX = b"0123456789abcdefABCDEF"


def process_escapes(data: bytes) -> bytes:
    """llama.cpp's `string_process_escapes`: \\n \\r \\t \\' \\" \\\\ and \\xHH (two characters that
    strtol reads whole in base 16) become their bytes; any other backslash pair is kept as it is."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        c = data[i]
        if c != 0x5C or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        i += 1
        e = data[i]
        if e in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[e]
        elif e == ord("x") and i + 2 < n and _strtol16_whole(data[i + 1:i + 3]) is not None:
            out.append(_strtol16_whole(data[i + 1:i + 3]) & 0xFF)
            i += 2
        else:
            out += bytes((0x5C, e))
        i += 1
    return bytes(out)


def _strtol16_whole(two: bytes) -> int | None:
    """strtol(two, &end, 16) when it consumes both characters, else None."""
    j = 0
    while j < len(two) and two[j] in _C_SPACE:
        j += 1
    sign = 1
    if j < len(two) and two[j] in b"+-":
        sign = -1 if two[j] == ord("-") else 1
        j += 1
    digits = two[j:]
    if not digits or any(d not in _HEX for d in digits):
        return None
    return sign * int(digits, 16)


@click.command("tokenize")
@click.option("-m", "--model", "model", type=click.Path(path_type=Path),
              help="GGUF file whose vocabulary is used, only its metadata is read "
                   "(default: the embedded SmolLM2-135M-Instruct Q4_1).")
@click.option("-p", "--prompt", "prompt", metavar="TEXT", help="Text to tokenize.")
@click.option("-f", "--file", "file", type=click.Path(path_type=Path, dir_okay=False),
              help="Read the text from FILE.")
@click.option("--stdin", "use_stdin", is_flag=True, help="Read the text from standard input.")
@click.option("--ids", is_flag=True, help="Print only the ids, as one list: [19556, 905].")
@click.option("--no-bos", is_flag=True, help="Do not add BOS (nor EOS) even if the vocabulary asks for it.")
@click.option("--no-parse-special", is_flag=True,
              help="Treat control tokens written in the text (<|im_start|>) as plain text.")
@click.option("--show-count", is_flag=True, help="Print the number of tokens at the end.")
@click.option("--escape/--no-escape", default=True, show_default=True,
              help="Turn \\n, \\t, \\xHH ... in the text into their characters, as llama-tokenize does; "
                   "--no-escape takes the text literally (as llama-perplexity reads its file).")
def command(model: Path | None, prompt: str | None, file: Path | None, use_stdin: bool, ids: bool,
            no_bos: bool, no_parse_special: bool, show_count: bool, escape: bool) -> None:
    """Tokenize a text with MODEL's vocabulary exactly as llama.cpp's `llama-tokenize`: BOS as
    the vocabulary says, special tokens parsed, escapes (\\n, \\t, \\xHH) processed unless
    --no-escape.

    Without --ids, prints one `id -> 'piece'` line per token.

    \b
    Examples:
      llmtk tokenize -m model.gguf -p "Hello world"
      llmtk tokenize -m model.gguf -f prompt.txt --ids --no-escape
      cat prompt.txt | llmtk tokenize -m model.gguf --stdin --show-count
    """
    from llmtk.cli.common import require_model
    from llmtk.resources import smollm2_path
    from llmtk.tokenizer import Tokenizer

    if sum(x is not None and x is not False for x in (prompt, file, use_stdin)) != 1:
        raise InputError("give exactly one of -p TEXT, -f FILE or --stdin")
    if model is not None:
        require_model(model)
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
    if escape:
        text = process_escapes(text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")

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
