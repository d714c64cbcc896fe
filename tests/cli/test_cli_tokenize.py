"""`llmtk tokenize`: llama-tokenize's output formats, options and exit codes."""
from __future__ import annotations

import json

from click.testing import CliRunner

from llmtk.cli import main


def run(*args: object, input: bytes | None = None):
    return CliRunner().invoke(main, ["tokenize", *map(str, args)], input=input)


def test_ids_line_like_llama_tokenize(smollm2_path, gemma3_path):
    res = run("-m", smollm2_path, "-p", "Hello world", "--ids")
    assert res.exit_code == 0, res.output
    assert res.stdout == "[19556, 905]\n"
    res = run("-m", gemma3_path, "-p", "Hello world", "--ids")
    assert res.stdout == "[2, 9259, 1902]\n"


def test_file_is_read_literally_and_matches_reference(smollm2_path, shared_dir, tmp_path):
    cases = json.loads((shared_dir / "llamacpp/smollm2/tokens.json").read_text())["cases"]
    case = max(cases, key=lambda c: len(c["text"]))
    path = tmp_path / "text.txt"
    path.write_bytes(case["text"].encode("utf-8"))
    res = run("-m", smollm2_path, "-f", path, "--ids", "--no-escape")   # the reference is --no-escape
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == case["ids"]
    path.write_bytes(b"a\\nb")               # a backslash and an n, not a newline
    res = run("-m", smollm2_path, "-f", path, "--ids", "--no-escape")
    assert json.loads(res.stdout) == [81, 76, 22808]   # 'a', '\\', 'nb': no newline (198)


def test_piece_lines_and_count(smollm2_path):
    res = run("-m", smollm2_path, "-p", "<|im_start|>user\nhi", "--show-count")
    assert res.exit_code == 0, res.output
    assert res.stdout == ("     1 -> '<|im_start|>'\n  4093 -> 'user'\n   198 -> '\n'\n  6004 -> 'hi'\n"
                          "Total number of tokens: 4\n")


def test_no_bos_and_no_parse_special(gemma3_path, smollm2_path):
    assert run("-m", gemma3_path, "-p", "Hello", "--ids", "--no-bos").stdout == "[9259]\n"
    res = run("-m", smollm2_path, "-p", "<|im_end|>", "--ids", "--no-parse-special")
    ids = json.loads(res.stdout)
    assert 2 not in ids and len(ids) > 1


def test_stdin_and_default_model(smollm2_path):
    res = run("--stdin", "--ids", input="Hello world".encode())       # the embedded SmolLM2
    assert res.exit_code == 0, res.output
    assert res.stdout == "[19556, 905]\n"


def test_usage_errors_exit_2(smollm2_path, tmp_path):
    res = run("-m", smollm2_path)
    assert res.exit_code == 2 and "exactly one of -p TEXT, -f FILE or --stdin" in res.output
    res = run("-m", smollm2_path, "-p", "x", "-f", tmp_path / "x.txt")
    assert res.exit_code == 2
    res = run("-m", tmp_path / "missing.gguf", "-p", "x")
    assert res.exit_code == 2 and "missing.gguf" in res.output
    res = run("-m", smollm2_path, "-f", tmp_path / "missing.txt")
    assert res.exit_code == 2 and "missing.txt" in res.output
