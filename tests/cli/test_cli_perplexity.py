"""`llmtk perplexity` on the tiny converted Llama: JSON, CSV, report plots, KLD base round trip, errors."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from llmtk.cli import main


@pytest.fixture(scope="module")
def tiny_llama(shared_dir):
    return shared_dir / "convert" / "llama" / "tiny-llama-f16.gguf"


def test_perplexity_outputs_and_kld_round_trip(tiny_llama, tmp_path):
    kld = tmp_path / "base.kld"
    res = CliRunner().invoke(main, ["perplexity", "-m", str(tiny_llama), "-c", "64", "--chunks", "3",
                                    "--kl-divergence-base", str(kld), "--csv", str(tmp_path / "ppl.csv"),
                                    "--json", str(tmp_path / "ppl.json")])
    assert res.exit_code == 0, res.output
    assert "[1]" in res.output and "Final estimate: PPL = " in res.output
    data = json.loads((tmp_path / "ppl.json").read_text())
    assert data["n_ctx"] == 64 and data["n_chunks"] == 3 and data["n_tokens_scored"] == 3 * 31
    assert data["ppl"] > 1 and len(data["running_ppl"]) == 3
    assert (tmp_path / "ppl.csv").read_text().startswith("chunk,running_ppl")
    assert kld.read_bytes()[:8] == b"_logits_"

    res = CliRunner().invoke(main, ["perplexity", "-m", str(tiny_llama), "--kl-divergence-base", str(kld),
                                    "--kl-divergence", "--json", "-", "--report", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout[res.stdout.index("{"):])
    k = payload["kld"]
    assert k["same_top_p"] == 1.0 and k["mean"] < 1e-4 and abs(k["ppl_ratio"] - 1) < 1e-3
    for name in ("report.md", "results.json", "running_ppl.png", "kld_histogram.png", "dp_distribution.png",
                 "token_kld.png"):
        assert (tmp_path / "rep" / name).is_file(), name


def test_perplexity_errors_are_one_line(tiny_llama, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("too short")
    res = CliRunner().invoke(main, ["perplexity", "-m", str(tiny_llama), "-f", str(short)])
    assert res.exit_code == 2 and "you need at least 1024 tokens" in res.output
    res = CliRunner().invoke(main, ["perplexity", "-m", str(tmp_path / "missing.gguf")])
    assert res.exit_code == 2 and "not found" in res.output
    res = CliRunner().invoke(main, ["perplexity", "-m", str(tiny_llama), "--kl-divergence"])
    assert res.exit_code == 2 and "--kl-divergence-base" in res.output
