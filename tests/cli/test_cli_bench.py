"""`llmtk bench`: tiny runs of each subcommand through click (formats, -o, errors, light imports)."""
from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from llmtk.cli import main

TINY = "convert/llama/tiny-llama-f16.gguf"


def invoke(*args: str):
    return CliRunner().invoke(main, ["bench", *args])


def test_bench_kernels_markdown_and_output_file(tmp_path):
    out = tmp_path / "k.csv"
    r = invoke("kernels", "--types", "Q8_0", "--rows", "2", "--cols", "64", "--threads", "1",
               "--repeat", "1", "--format", "markdown", "--output-file", str(out))
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[2].startswith("| type | q 1t | q 1t/ggml |") and lines[4].startswith("| Q8_0 | ")
    csv = out.read_text().splitlines()                          # --output-file FILE.csv writes csv
    assert csv[0].startswith("type,q 1t,q 1t/ggml,") and csv[1].startswith("Q8_0,")


def test_bench_kernels_rich_table():
    r = invoke("kernels", "--types", "Q4_0", "--rows", "1", "--cols", "32", "--threads", "1", "--repeat", "1",
               "--no-gguf-py", "--clock", "cpu")
    assert r.exit_code == 0, r.output
    assert "q 1t/ggml" in r.output and "Q4_0" in r.output and "n/a" in r.output  # gguf-py skipped
    assert "one-thread clock: cpu" in r.output


def test_bench_forward_json(shared_dir):
    r = invoke("forward", "-m", str(shared_dir / TINY), "--threads", "1", "-p", "4", "-n", "2",
               "--repeat", "1", "--format", "json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert len(rows) == 1 and rows[0]["type"] == "F16" and rows[0]["pp4 t/s"] > 0
    assert rows[0]["pp/llama"] is None                          # not SmolLM2


def test_bench_quantize_csv(shared_dir):
    r = invoke("quantize", "-m", str(shared_dir / TINY), "--types", "Q4_0", "--threads", "1", "--in-process",
               "--format", "csv")
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0] == "type,threads,size MB,wall s,cpu s,llama s,wall/llama,cpu/1t/llama"
    assert lines[1].startswith("Q4_0,1,")


def test_bench_errors_exit_2(shared_dir):
    r = invoke("kernels", "--types", "Q4_K", "--cols", "100")
    assert r.exit_code == 2 and "multiple of 256" in r.output
    r = invoke("forward", "-m", str(shared_dir / "nope.gguf"))
    assert r.exit_code == 2 and "not found" in r.output
    r = invoke("quantize", "-m", str(shared_dir / TINY), "--types", "Q9_9")
    assert r.exit_code == 2 and "unknown quantization type" in r.output


def test_bench_help_stays_light():
    code = ("import sys; from click.testing import CliRunner; from llmtk.cli import main; "
            "r = CliRunner().invoke(main, ['bench', 'kernels', '--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('numba', 'pandas', 'llmtk.bench', 'llmtk.kernels') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
