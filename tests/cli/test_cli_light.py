"""`llmtk --help`, `--version` and the inspect/edit commands must not import heavy packages."""
from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("numba", "torch", "pandas", "matplotlib", "transformers")

PROBE = """
import contextlib, io, sys
from llmtk.cli import main
sys.argv = ["llmtk", *sys.argv[1:]]
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main()
    except SystemExit:
        pass
print(",".join(m for m in {heavy!r} if m in sys.modules))
"""


def loaded_after(*args: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
                         capture_output=True, text=True, check=True).stdout.strip()
    return [m for m in out.split(",") if m]


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["inspect", "--help"], ["edit", "--help"]])
def test_help_imports_nothing_heavy(args):
    assert loaded_after(*args) == []


def test_inspect_imports_nothing_heavy(shared_dir):
    assert loaded_after("inspect", str(shared_dir / "convert/llama/tiny-llama-f16.gguf"), "--format", "json") == []


def test_help_lists_inspect_and_edit():
    from click.testing import CliRunner

    from llmtk.cli import main

    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0
    assert "inspect" in res.output and "edit" in res.output
