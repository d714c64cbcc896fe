"""End to end on the tiny converted Llama from ../shared: sweep (with an auto imatrix) and gate."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from llmtk.cli import main


@pytest.fixture(scope="module")
def tiny_llama(shared_dir):
    return shared_dir / "convert" / "llama" / "tiny-llama-f16.gguf"


def test_sweep_with_auto_imatrix_and_resume(tiny_llama, tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", str(tiny_llama), "--types", "Q8_0,Q4_0", "--imatrix", "auto", "-c", "64", "--chunks", "3",
            "-o", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    for name in ("sweep.md", "sweep.csv", "sweep.json", "sweep.png", "base.kld", "imatrix.gguf",
                 "model-Q8_0-imatrix.gguf", "model-Q4_0-imatrix.gguf"):
        assert (out / name).is_file(), name
    state = json.loads((out / "sweep.json").read_text())
    rows = state["rows"]
    assert set(rows) == {"Q8_0-imatrix", "Q4_0-imatrix"}
    assert 0 <= rows["Q8_0-imatrix"]["mean_kld"] < rows["Q4_0-imatrix"]["mean_kld"]
    assert rows["Q8_0-imatrix"]["size_mb"] > rows["Q4_0-imatrix"]["size_mb"]
    assert "| Q4_0-imatrix |" in (out / "sweep.md").read_text()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and again.output.count("skipped") == 2, again.output


def test_gate_passes_fails_and_errors(tiny_llama, tmp_path):
    from llmtk.quantize import quantize_model

    cand = tmp_path / "tiny-q2k.gguf"
    quantize_model(tiny_llama, cand, "Q2_K")
    base_args = ["gate", "--base", str(tiny_llama), "-c", "64", "--chunks", "2"]
    same = CliRunner().invoke(main, base_args + ["--candidate", str(tiny_llama), "--max-mean-kld", "1e-6",
                                                 "--min-same-top-p", "0.999", "--json", str(tmp_path / "ok.json")])
    assert same.exit_code == 0, same.output
    assert json.loads((tmp_path / "ok.json").read_text())["passed"] is True
    junit = tmp_path / "gate.xml"
    worse = CliRunner().invoke(main, base_args + ["--candidate", str(cand), "--max-mean-kld", "1e-6",
                                                  "--max-ppl-ratio", "100", "--junit", str(junit)])
    assert worse.exit_code == 1, worse.output
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    missing = CliRunner().invoke(main, base_args + ["--candidate", str(tmp_path / "nope.gguf"), "--max-mean-kld", "1"])
    assert missing.exit_code == 2 and "not found" in missing.output
    none = CliRunner().invoke(main, base_args + ["--candidate", str(cand)])
    assert none.exit_code == 2 and "no thresholds" in none.output
