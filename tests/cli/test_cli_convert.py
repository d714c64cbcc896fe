"""`llmtk convert`: output path and naming, exit code 2 with one clear line, nothing left on failure."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "converters"))
from convert_helpers import materialize  # noqa: E402

from llmtk.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(map(str, args)))


def test_convert_writes_llama_cpp_bytes(shared_dir: Path, tmp_path: Path) -> None:
    src = materialize(shared_dir, "llama", tmp_path / "ckpt")
    res = run("convert", src, "-o", tmp_path / "out-{ftype}.gguf", "--outtype", "f16")
    assert res.exit_code == 0, res.output
    out = tmp_path / "out-f16.gguf"
    assert res.stdout.strip() == str(out)
    assert out.read_bytes() == (shared_dir / "convert" / "llama" / "tiny-llama-f16.gguf").read_bytes()


def test_default_output_goes_into_the_model_folder(shared_dir: Path, tmp_path: Path) -> None:
    src = materialize(shared_dir, "qwen2", tmp_path / "ckpt")
    res = run("convert", src, "--outtype", "bf16")
    assert res.exit_code == 0, res.output
    assert Path(res.stdout.strip()) == src / "Tiny-Qwen2-1.6M-BF16.gguf"
    assert (src / "Tiny-Qwen2-1.6M-BF16.gguf").is_file()


def test_unknown_architecture_exits_2_naming_the_nearest(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Starcoder3ForCausalLM"]}))
    res = run("convert", tmp_path, "-o", tmp_path / "x.gguf")
    assert res.exit_code == 2
    line = res.stderr.strip()
    assert line.count("\n") == 0 and "'Starcoder3ForCausalLM' is not supported" in line
    assert "nearest supported: Starcoder2ForCausalLM" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_missing_folder_exits_2(tmp_path: Path) -> None:
    res = run("convert", tmp_path / "no-such-model")
    assert res.exit_code == 2
    assert "no-such-model" in res.stderr and "not a directory" in res.stderr


def test_bad_outtype_exits_2_and_writes_nothing(shared_dir: Path, tmp_path: Path) -> None:
    src = materialize(shared_dir, "phi3", tmp_path / "ckpt")
    out = tmp_path / "out"
    out.mkdir()
    res = run("convert", src, "-o", out / "x.gguf", "--outtype", "q4")
    assert res.exit_code == 2 and "unknown --outtype 'q4'" in res.stderr
    assert list(out.iterdir()) == []


def test_help_lists_options() -> None:
    res = run("convert", "--help")
    assert res.exit_code == 0
    for opt in ("--outtype", "--vocab-only", "--imatrix", "-o, --outfile"):
        assert opt in res.stdout


def test_help_lists_every_registered_architecture() -> None:
    from llmtk.converters import ARCHITECTURES

    res = run("convert", "--help")
    assert res.exit_code == 0
    listed = " ".join(res.stdout.split("Supported architectures", 1)[1].split("Options:", 1)[0].split())
    assert f"({len(ARCHITECTURES)}," in listed
    for name in ARCHITECTURES:
        assert re.search(rf"\b{name}\b", listed), name


def test_output_onto_the_checkpoint_is_refused(shared_dir: Path, tmp_path: Path) -> None:
    src = materialize(shared_dir, "qwen2", tmp_path / "ckpt")
    res = run("convert", src, "-o", src / "model.safetensors")
    assert res.exit_code == 2 and "would overwrite the checkpoint" in res.stderr
    assert (src / "model.safetensors").is_symlink()
