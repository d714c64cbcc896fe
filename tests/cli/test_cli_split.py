"""`llmtk split` / `llmtk merge` (and `split --merge`): exit codes, messages, files written."""
from __future__ import annotations

import hashlib
import importlib

import pytest
from click.testing import CliRunner
from llmtk.cli import main
from llmtk.registry import Lazy

TINY = "convert/llama/tiny-llama-f16.gguf"
_ROWS = {"split": ("llmtk.cli.commands.split:command", "Split a GGUF model into shards, like llama-gguf-split."),
         "merge": ("llmtk.cli.commands.split:merge_command", "Merge a split GGUF model into one file.")}


@pytest.fixture(autouse=True)
def commands(monkeypatch):
    """The commands' rows, for as long as `cli/main.py` does not list them yet."""
    m = importlib.import_module("llmtk.cli.main")
    for verb, (target, help_) in _ROWS.items():
        if verb not in m.COMMANDS:
            monkeypatch.setitem(m.COMMANDS._entries, verb, Lazy(target))
            monkeypatch.setitem(m._HELP, verb, help_)


def run(*args):
    return CliRunner().invoke(main, list(map(str, args)))


def sha(p) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny(shared_dir):
    return shared_dir / TINY


def test_split_then_merge(tmp_path, tiny):
    res = run("split", tiny, tmp_path / "m", "--split-max-tensors", "8")
    assert res.exit_code == 0, res.output
    shards = [tmp_path / f"m-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    assert res.stdout.splitlines()[:2] == ["n_split: 3", "split 00001: n_tensors = 8, total_size = 8M"]
    assert res.stdout.splitlines()[-1] == "3 shards written with a total of 21 tensors"
    assert all(p.exists() for p in shards)
    res = run("merge", shards[0], tmp_path / "merged.gguf")
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith(f"wrote {tmp_path / 'merged.gguf'} (")
    assert "merged 3 shards" in res.stdout
    res = run("split", "--merge", shards[0], tmp_path / "merged2.gguf")  # llama-gguf-split's spelling
    assert res.exit_code == 0, res.output
    assert sha(tmp_path / "merged.gguf") == sha(tmp_path / "merged2.gguf")


def test_split_by_size_and_dry_run(tmp_path, tiny):
    res = run("split", tiny, tmp_path / "m", "--split-max-size", "4M", "--dry-run")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == ["n_split: 2", "split 00001: n_tensors = 1, total_size = 4M",
                                       "split 00002: n_tensors = 20, total_size = 3M",
                                       "dry run: would write 2 shards with 21 tensors, nothing written"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--split-max-size", "1.5G"], "--split-max-size: split size '1.5G' is not N followed by M"),
    (["--split-max-size", "0M"], "--split-max-size: split size '0M' must be positive"),
    (["--split-max-size", "4M", "--split-max-tensors", "3"], "give --split-max-size or --split-max-tensors, not both"),
    (["--split-max-tensors", "0"], "0 is not in the range x>=1"),
    (["--split-max-size", "1M"], "shard 1 would hold no tensor: tensor 'output.weight' alone takes 3145728 bytes"),
    (["--merge", "--split-max-tensors", "3"], "--split-max-tensors applies to splitting, not to --merge"),
    (["--merge", "--split"], "--split and --merge cannot be given together"),
])
def test_bad_options(tmp_path, tiny, args, message):
    res = run("split", tiny, tmp_path / "m", *args)
    assert res.exit_code == 2
    assert res.stderr.startswith("llmtk: error: ") and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_and_outputs(tmp_path, tiny):
    res = run("split", tmp_path / "none.gguf", tmp_path / "m")
    assert res.exit_code == 2 and f"{tmp_path / 'none.gguf'}: no such file" in res.stderr
    res = run("split", tiny, tmp_path / "nodir" / "m")
    assert res.exit_code == 2 and f"folder {tmp_path / 'nodir'} does not exist" in res.stderr
    res = run("merge", tiny, tmp_path / "m.gguf")
    assert res.exit_code == 2 and "has no split.count, so it is not a shard of a split model" in res.stderr


def test_merge_checks_every_shard_first(tmp_path, tiny):
    assert run("split", tiny, tmp_path / "m", "--split-max-tensors", "8").exit_code == 0
    missing = tmp_path / "m-00003-of-00003.gguf"
    missing.unlink()
    res = run("merge", tmp_path / "m-00001-of-00003.gguf", tmp_path / "out.gguf")
    assert res.exit_code == 2
    assert res.stderr.strip() == (f"llmtk: error: {missing}: no such file; shard 3 of the 3-way split model "
                                  f"{tmp_path / 'm-00001-of-00003.gguf'} is missing")
    assert not (tmp_path / "out.gguf").exists()


def test_merge_does_not_overwrite(tmp_path, tiny):
    assert run("split", tiny, tmp_path / "m", "--split-max-tensors", "8").exit_code == 0
    out = tmp_path / "out.gguf"
    out.write_bytes(b"x")
    res = run("merge", tmp_path / "m-00002-of-00003.gguf", out)
    assert res.exit_code == 2 and f"{out}: already exists" in res.stderr
    assert out.read_bytes() == b"x"


def test_help_lists_the_commands():
    res = run("--help")
    assert res.exit_code == 0
    assert "split" in res.stdout and "merge" in res.stdout


def test_progress_lines_without_a_terminal(tmp_path, tiny):
    res = run("split", tiny, tmp_path / "m", "--split-max-tensors", "8")
    assert res.exit_code == 0, res.output
    lines = res.stderr.splitlines()
    assert lines[0] == "split: 21 tensors to do"
    assert lines[-1].startswith("split: tensor 21/21 (100%), ") and lines[-1].endswith(", 6/6 MB")
