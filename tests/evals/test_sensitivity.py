"""Sensitivity pass, --target-bpw/--target-size end to end on the tiny 256-wide Qwen2 of ../shared,
and (slow, with a llama.cpp build) llama-quantize writing the same bytes from the type file."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from llmtk.cli import main
from llmtk.evals import sensitivity as S
from llmtk.evals.runner import read_text
from llmtk.ggufio.constants import GGMLType, Key
from llmtk.ggufio.reader import GGUFReader
from llmtk.quantize import quantize_model
from tests.llamacpp_tools import llama_tool


@pytest.fixture(scope="module")
def tiny(shared_dir):
    return shared_dir / "llamacpp" / "tiny-qwen2-w256" / "tiny-qwen2-f16.gguf"


@pytest.fixture(scope="module")
def table(tiny):
    text, name = read_text(None)
    return S.measure_sensitivity(tiny, text, name, n_ctx=32, n_chunks=2, threads=1)


def test_the_pass_measures_every_quantizable_tensor(tiny, table):
    with GGUFReader(tiny) as r:
        assert [t.name for t in table.tensors] == S.quantizable_tensors(r)
    assert all(t.probe_kld > 0 and t.probe_error > 0 and t.factor > 0 for t in table.tensors)
    assert all(len(t.col_weights) == t.ne[0] for t in table.tensors)
    assert table.calibration["n_chunks"] == 2 and table.calibration["n_tokens_scored"] == 62
    assert table.cost["forward_tokens"] == 2 * 32 * (len(table.tensors) + 1)
    again = S.SensitivityTable.from_json(table.to_json())
    assert again.to_json() == table.to_json()


def test_the_plan_meets_the_budget_and_quantize_writes_it(tiny, table, tmp_path):
    sizes = []
    for bpw in (3.0, 4.5, 6.5):
        plan = S.plan_to_budget(tiny, "Q4_K_M", table, target_bpw=bpw)
        assert plan.solution.n_bytes <= plan.budget_bytes
        sizes.append(plan.solution.damage)
        out = tmp_path / f"t{bpw}.gguf"
        res = quantize_model(tiny, out, "Q4_K_M", tensor_types=plan.pairs, override_kv=plan.overrides)
        assert 8.0 * res.size_out / res.n_elements <= bpw
        with GGUFReader(out) as r:
            assert {n: r.tensors[n].qtype for n in plan.solution.types} == plan.solution.types
            assert r.kv[Key.QUANTIZE_TARGET_BPW] == pytest.approx(bpw)
            assert r.kv[Key.QUANTIZE_TARGET_METHOD].startswith("llmtk sensitivity")
    assert sizes == sorted(sizes, reverse=True)
    # a file-size budget counts the header and the padding: the file is no larger
    target = 1_400_000
    plan = S.plan_to_budget(tiny, "Q4_K_M", table, target_size=target)
    out = tmp_path / "size.gguf"
    quantize_model(tiny, out, "Q4_K_M", tensor_types=plan.pairs, override_kv=plan.overrides)
    assert target - 4096 < out.stat().st_size <= target


def test_candidates_are_honoured_and_predicted_damage_is_the_tables(tiny, table):
    cands = [GGMLType.Q3_K, GGMLType.Q6_K]
    plan = S.plan_to_budget(tiny, "Q4_K_M", table, target_bpw=5.0, candidates=cands)
    assert set(plan.solution.types.values()) <= set(cands)
    assert plan.predicted_kld(plan.solution.types) == pytest.approx(plan.solution.damage)
    # the probe type's predicted damage is what was measured
    t = table.tensors[0]
    assert t.predicted(t.probe_type) == pytest.approx(t.probe_kld)


def test_quantize_cli_target_size_with_a_cache_and_a_type_file(tiny, tmp_path):
    cache, types = tmp_path / "sens.json", tmp_path / "types.txt"
    runner = CliRunner()

    def args(out: str, type_file: str) -> list[str]:
        return ["quantize", str(tiny), str(tmp_path / out), "Q4_K_M", "--sensitivity-cache", str(cache),
                "--tensor-type-out", str(tmp_path / type_file)]

    r = runner.invoke(main, args("a.gguf", "types.txt") + ["--target-size", "1.3MiB"])
    assert r.exit_code == 0, r.output
    assert "same file with llama.cpp: llama-quantize" in r.output
    assert cache.is_file() and types.read_text().count("=") == len(json.loads(cache.read_text())["tensors"])
    r = runner.invoke(main, args("b.gguf", "types-b.txt") + ["--target-bpw", "4.0"])
    assert r.exit_code == 0, r.output
    assert "re-using" in r.output
    assert (tmp_path / "a.gguf").stat().st_size <= int(1.3 * 2**20)
    r = runner.invoke(main, ["quantize", str(tiny), str(tmp_path / "c.gguf"), "Q4_K_M", "--target-bpw", "1.0",
                             "--sensitivity-cache", str(cache)])
    assert r.exit_code == 2 and "below the smallest mix" in r.output
    r = runner.invoke(main, ["quantize", str(tiny), str(tmp_path / "c.gguf"), "Q4_K_M", "--candidates", "Q4_K"])
    assert r.exit_code == 2 and "go with --target-bpw" in r.output


def test_sensitivity_cli_writes_the_table_and_the_heatmap(tiny, tmp_path):
    outs = {k: tmp_path / f"s.{k}" for k in ("csv", "json", "md", "png")}
    r = CliRunner().invoke(main, ["sensitivity", "-m", str(tiny), "-c", "32", "--chunks", "1", "--csv",
                                  str(outs["csv"]), "--json", str(outs["json"]), "--markdown", str(outs["md"]),
                                  "--plot", str(outs["png"]), "--top", "3"])
    assert r.exit_code == 0, r.output
    rows = json.loads(outs["json"].read_text())["tensors"]
    assert [x["rank"] for x in rows] == list(range(1, len(rows) + 1))
    assert all("kld_Q4_K" in x for x in rows)
    assert outs["csv"].read_text().startswith("tensor,layer,kind")
    assert outs["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert r.output.count("| `") == 3


@pytest.mark.slow
def test_llama_quantize_writes_the_same_bytes_and_llama_perplexity_loads_them(tiny, shared_dir, tmp_path):
    quantize_tool = llama_tool("llama-quantize")
    perplexity_tool = llama_tool("llama-perplexity")
    imatrix = shared_dir / "llamacpp" / "tiny-qwen2-w256" / "imatrix.gguf"
    ours, theirs, types = tmp_path / "ours.gguf", tmp_path / "theirs.gguf", tmp_path / "types.txt"
    r = CliRunner().invoke(main, ["quantize", "--imatrix", str(imatrix), str(tiny), str(ours), "IQ2_M",
                                  "--target-bpw", "3.2", "--tensor-type-out", str(types)])
    assert r.exit_code == 0, r.output
    command = next(line for line in r.output.splitlines() if line.startswith("same file with llama.cpp: "))
    import shlex

    argv = shlex.split(command.split(": ", 1)[1])
    argv[0] = str(quantize_tool)
    argv[argv.index(str(ours))] = str(theirs)
    done = subprocess.run(argv + ["1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert theirs.read_bytes() == ours.read_bytes()
    with GGUFReader(ours) as rd:
        kinds = {t.qtype for n, t in rd.tensors.items() if n.startswith("blk.")}
    assert len(kinds) > 1      # a real mix, not one type
    text = tmp_path / "t.txt"
    text.write_text(read_text(None)[0][:6000])
    done = subprocess.run([str(perplexity_tool), "-m", str(ours), "-f", str(text), "-c", "64", "--chunks", "2",
                           "-t", "1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Final estimate: PPL" in done.stdout + done.stderr
    assert np.isfinite(float((done.stdout + done.stderr).split("Final estimate: PPL = ")[1].split()[0]))


@pytest.mark.slow
def test_sweep_adds_target_bpw_mixes_beside_the_stock_types(shared_dir, tmp_path):
    tiny_llama = shared_dir / "convert" / "llama" / "tiny-llama-f16.gguf"
    out = tmp_path / "sweep"
    args = ["sweep", str(tiny_llama), "--types", "Q4_0", "--target-bpw", "5.0,6.5", "-c", "64", "--chunks", "2",
            "-o", str(out)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    rows = {row.split(",")[0]: row.split(",") for row in (out / "sweep.csv").read_text().splitlines()}
    head = rows["type"]
    assert {"Q4_0", "bpw-5.00", "bpw-6.50"} <= set(rows)
    for name, budget in (("bpw-5.00", 5.0), ("bpw-6.50", 6.5)):
        assert float(rows[name][head.index("bpw")]) <= budget
    assert (out / S.SWEEP_CACHE_NAME).is_file()
    r = CliRunner().invoke(main, args)          # resumes: nothing made again
    assert r.exit_code == 0 and "bpw-5.00: made and evaluated before" in r.output
    r = CliRunner().invoke(main, args[:4] + ["-o", str(out), "--target-bpw", "5,x"])
    assert r.exit_code == 2 and "--target-bpw" in r.output
