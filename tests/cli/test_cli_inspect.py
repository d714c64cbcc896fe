"""`llmtk inspect`: exit codes, output formats, totals, filters, escaping and hostile files."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from click.testing import CliRunner

from llmtk.cli import main
from llmtk.ggufio import GGUFReader, GGUFWriter

TINY = "convert/llama/tiny-llama-f16.gguf"


def run(*args: str):
    return CliRunner().invoke(main, list(map(str, args)))


def inspect_json(path, *extra):
    res = run("inspect", path, "--format", "json", *extra)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_json_report_of_tiny_llama(shared_dir):
    path = shared_dir / TINY
    rep = inspect_json(path)
    with GGUFReader(path) as r:
        n_params = sum(t.n_elements for t in r.tensors.values())
        n_bytes = sum(t.n_bytes for t in r.tensors.values())
        assert [t["name"] for t in rep["tensors"]] == list(r.tensors)
    assert rep["n_params"] == n_params == 3164320
    assert rep["file_size"] == path.stat().st_size
    assert rep["bpw"] == pytest.approx(8 * n_bytes / n_params, rel=1e-12)
    emb = next(t for t in rep["tensors"] if t["name"] == "token_embd.weight")
    assert emb == {"name": "token_embd.weight", "type": "F16", "shape": [32, 49152], "n_elements": 32 * 49152,
                   "n_bytes": 2 * 32 * 49152, "offset": emb["offset"], "bpw": 16.0}
    assert rep["types"]["F16"]["n_tensors"] + rep["types"]["F32"]["n_tensors"] == 21
    assert rep["architecture"]["layers"] == 2 and rep["architecture"]["vocab size"] == 49152
    assert rep["architecture"]["heads"] == 4 and rep["architecture"]["kv heads"] == 2
    assert rep["kv"]["general.name"] == "Tiny Llama" and rep["kv_types"]["llama.block_count"] == "UINT32"
    tokens = rep["kv"]["tokenizer.ggml.tokens"]  # long arrays are summarised
    assert tokens["array_len"] == 49152 and tokens["item_type"] == "STRING" and len(tokens["head"]) == 8


def test_array_items_zero_shows_whole_arrays(shared_dir):
    rep = inspect_json(shared_dir / TINY, "--array-items", "0", "--no-tensors")
    assert len(rep["kv"]["tokenizer.ggml.tokens"]) == 49152 and "tensors" not in rep


def test_table_and_markdown(shared_dir):
    res = run("inspect", shared_dir / TINY)
    assert res.exit_code == 0
    for text in ("Summary", "token_embd.weight", "Tiny Llama", "49152 × STRING", "F16"):
        assert text in res.stdout
    md = run("inspect", shared_dir / TINY, "--format", "markdown", "--no-tensors")
    assert md.exit_code == 0
    assert "| key | type | value |" in md.stdout and "## Tensors" not in md.stdout


def test_filter(shared_dir):
    rep = inspect_json(shared_dir / TINY, "--filter", r"^blk\.1\.ffn")
    assert [t["name"] for t in rep["tensors"]] == ["blk.1.ffn_down.weight", "blk.1.ffn_gate.weight",
                                                   "blk.1.ffn_up.weight", "blk.1.ffn_norm.weight"]
    assert rep["kv"] == {} and rep["selected"]["n_params"] == 3 * 2048 + 32
    assert rep["n_params"] == 3164320  # file totals are not filtered
    res = run("inspect", shared_dir / TINY, "--filter", "(")
    assert res.exit_code == 2 and "not a valid regular expression" in res.stderr


def test_control_characters_are_escaped_and_unknown_arch_works(tmp_path):
    path = tmp_path / "evil.gguf"
    with GGUFWriter(path) as w:
        w.add_kv("general.architecture", "mystery")
        w.add_kv("evil\x1b[31m.key", "line1\nline2\x07 [bold]markup[/bold]")
        w.add_tensor_info("t\nx", (4,), "F32")
        w.write_tensor("t\nx", np.zeros(4, np.float32))
    for fmt in ("table", "markdown"):
        res = run("inspect", path, "--format", fmt)
        assert res.exit_code == 0, res.output
        assert "\x1b" not in res.stdout and "\x07" not in res.stdout
        assert "evil\\x1b[31m.key" in res.stdout and "t\\nx" in res.stdout
        assert "line1\\nline2\\x07 [bold]markup[/bold]" in res.stdout  # no rich markup applied
    rep = inspect_json(path)
    assert rep["architecture"] == {"architecture": "mystery"} and rep["tensors"][0]["name"] == "t\nx"


BAD_FILES = {
    "bad_magic.gguf": b"GGML" + bytes(20),
    "truncated.gguf": b"GGUF" + struct.pack("<I", 3),
    "unknown_type.gguf": b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + struct.pack("<Q", 1) + b"w"
                         + struct.pack("<IQIQ", 1, 4, 77, 0) + bytes(64),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_hostile_and_missing_files_exit_2_with_one_line(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name])
    for target in (path, tmp_path / "missing.gguf"):
        res = run("inspect", target)
        assert res.exit_code == 2
        assert res.stdout == ""
        assert res.stderr.startswith(f"llmtk: error: {target}: ") and res.stderr.count("\n") == 1
        assert "Traceback" not in res.stderr


def test_smollm2(smollm2_path):
    rep = inspect_json(smollm2_path)
    arch = rep["architecture"]
    assert (arch["architecture"], arch["layers"], arch["embedding length"], arch["vocab size"]) == ("llama", 30, 576, 49152)
    assert arch["file type"] == "Q4_1" and rep["n_tensors"] == 272
    assert set(rep["types"]) == {"Q4_1", "Q8_0", "F32"}
    assert rep["n_params"] == sum(t["n_elements"] for t in rep["tensors"])


def test_every_shared_gguf(shared_dir):
    paths = sorted(shared_dir.rglob("*.gguf"))
    assert paths
    for path in paths:
        for fmt in ("table", "json", "markdown"):
            res = run("inspect", path, "--format", fmt)
            assert res.exit_code == 0, (path, fmt, res.output)
