"""docs/python.md runs as written: its code blocks in order, in one namespace, in a temp folder
(the placeholder Hugging Face folder replaced by the tiny Llama checkpoint of ../shared)."""
from __future__ import annotations

import re
from pathlib import Path

from conftest import PROJECT_ROOT


def test_python_page_runs(shared_dir, tmp_path, monkeypatch, capsys, smollm2_path):
    text = (PROJECT_ROOT / "docs" / "python.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 4
    hf_dir = tmp_path / "tiny-llama"                     # the checkpoint, its tokenizer link resolved
    hf_dir.mkdir()
    for f in (shared_dir / "convert" / "llama" / "tiny-llama").iterdir():
        small_link = f.name == "tokenizer.json" and f.stat().st_size < 256
        (hf_dir / f.name).symlink_to((f.parent / f.read_text().strip()).resolve() if small_link else f)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for code in blocks:
        code = code.replace('hf_dir = "path/to/hf-model-dir"', f"hf_dir = {str(hf_dir)!r}")
        exec(compile(code, "docs/python.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "Q4_K_M" in out and "PPL " in out and "mean KLD" in out and "float32" in out
    assert Path("model-f16.gguf").is_file() and Path("smollm2-q4km.gguf").is_file()
