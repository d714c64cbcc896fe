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
            "-o", str(out), "--max-mean-kld", "10"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    # Q8_0 ignores an imatrix, so it is not labelled as made with one
    for name in ("sweep.md", "sweep.csv", "sweep.json", "sweep.png", "base.kld", "imatrix.gguf",
                 "model-Q8_0.gguf", "model-Q4_0-imatrix.gguf"):
        assert (out / name).is_file(), name
    state = json.loads((out / "sweep.json").read_text())
    rows = state["rows"]
    assert set(rows) == {"Q8_0", "Q4_0-imatrix"}
    assert 0 <= rows["Q8_0"]["mean_kld"] < rows["Q4_0-imatrix"]["mean_kld"]
    assert rows["Q8_0"]["size_bytes"] > rows["Q4_0-imatrix"]["size_bytes"]
    assert 4.5 < rows["Q4_0-imatrix"]["bpw"] < rows["Q8_0"]["bpw"] < 8.6  # llama.cpp's bpw (8.50 for Q8_0)
    md = (out / "sweep.md").read_text()
    assert "| Q4_0-imatrix |" in md and "| F16 (base) |" in md and " ± " in md
    assert "calibrated on" in md and "second half" in md           # never on the evaluated text
    assert "**Recommended** (mean KLD ≤ 10.0): **Q4_0-imatrix**" in md
    assert md.count("`" + rows["Q8_0"]["sha256"] + "`") == 1       # the model-card table
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and again.output.count("re-used") == 2, again.output


def test_sweep_checks_every_argument_before_any_work(tiny_llama, shared_dir, tmp_path):
    out = tmp_path / "sweep"
    base = ["sweep", str(tiny_llama), "-c", "64", "--chunks", "2", "-o", str(out)]
    typo = CliRunner().invoke(main, base + ["--types", "Q8_0,Q6_K,Q4_K_M,IQ4_XS,Q4_K_X"])
    assert typo.exit_code == 2 and "Q4_K_X" in typo.output
    qwen = shared_dir / "llamacpp" / "tiny-qwen2-w256" / "tiny-qwen2-f16.gguf"   # rows of 256: IQ2_XXS applies
    needs = CliRunner().invoke(main, ["sweep", str(qwen), "--types", "Q8_0,IQ2_XXS", "-o", str(out)])
    assert needs.exit_code == 2 and "IQ2_XXS need an importance matrix" in needs.output
    twice = CliRunner().invoke(main, base + ["--types", "Q4_K,Q4_K_M"])
    assert twice.exit_code == 2 and "repeats Q4_K_M" in twice.output
    calib = CliRunner().invoke(main, base + ["--calib-file", str(tiny_llama)])
    assert calib.exit_code == 2 and "--imatrix auto" in calib.output
    assert not list(out.glob("*.gguf")) and not (out / "base.kld").exists()


def test_sweep_refuses_a_gguf_that_is_not_a_model(shared_dir, tmp_path):
    imatrix = shared_dir / "llamacpp" / "smollm2" / "imatrix.gguf"
    res = CliRunner().invoke(main, ["sweep", str(imatrix), "--types", "Q8_0", "-o", str(tmp_path / "s")])
    assert res.exit_code == 2 and "not a model" in res.output and "imatrix.gguf" in res.output


def test_sweep_redoes_what_changed_and_survives_a_corrupt_state(tiny_llama, tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", str(tiny_llama), "--types", "Q8_0,Q4_0", "-c", "64", "--chunks", "2", "-o", str(out)]
    assert CliRunner().invoke(main, args).exit_code == 0
    q4 = out / "model-Q4_0.gguf"
    q4.write_bytes(q4.read_bytes()[:1000])                 # a damaged artifact is made again
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and res.output.count("re-used") == 1 and "quantize Q4_0" in res.output, res.output
    (out / "sweep.json").write_text("{")                    # a state cut short by a full disk
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and "unreadable" in res.output and res.output.count("re-used") == 0, res.output
    assert json.loads((out / "sweep.json").read_text())["rows"].keys() == {"Q8_0", "Q4_0"}


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


def test_sweep_reports_how_often_answers_follow_a_json_schema(tiny_llama, tmp_path):
    schema, prompts = tmp_path / "schema.json", tmp_path / "prompts.txt"
    schema.write_text(json.dumps({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}))
    prompts.write_text("Give me a JSON object with a name.\nAnswer in JSON: {\"name\": ...}\n")
    out = tmp_path / "sweep"
    args = ["sweep", str(tiny_llama), "--types", "Q8_0", "-c", "64", "--chunks", "2", "-o", str(out),
            "--json-schema", str(schema), "--prompts", str(prompts), "-n", "8"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert 0.0 <= rows["Q8_0"]["schema_valid"] <= 1.0      # a random tiny model: rarely valid, but measured
    md = (out / "sweep.md").read_text()
    assert "valid JSON |" in md and "share of 2 prompts" in md
    alone = CliRunner().invoke(main, args[:-4])           # --json-schema without --prompts
    assert alone.exit_code == 2 and "--prompts" in alone.output
    schema.write_text(json.dumps({"type": "object", "$ref": "#/$defs/missing"}))
    bad = CliRunner().invoke(main, args)
    assert bad.exit_code == 2 and "llmtk: error" in bad.output


@pytest.mark.parametrize("answer,value", [
    ('```json\n{"a": 1}\n```\n\nThis object has one key.', '{"a": 1}'),   # a code block, then prose
    ('Sure! {"a": 1}', '{"a": 1}'),                                        # a bare value after prose
    ('[1, 2]', '[1, 2]'),
    ('no JSON here', 'no JSON here'),
])
def test_the_json_value_of_an_answer(answer, value):
    from llmtk.evals.sweep import _answer_value

    assert _answer_value(answer) == value


def test_plan_matrix_gives_each_model_and_text_a_folder(tmp_path):
    from pathlib import Path

    from llmtk.evals.sweep import plan_matrix

    texts = [("one", "wiki.txt"), ("two", "other/wiki.txt")]
    plans = plan_matrix([Path("a/m.gguf"), Path("b/m.gguf")], texts, tmp_path, ["Q8_0"], n_ctx=64)
    assert [p.out_dir.relative_to(tmp_path).as_posix() for p in plans] == ["m/wiki", "m/wiki-2", "m-2/wiki",
                                                                           "m-2/wiki-2"]
    assert [p.text for p in plans] == ["one", "two", "one", "two"] and all(p.n_ctx == 64 for p in plans)
    assert plan_matrix([Path("m.gguf")], texts[:1], tmp_path, ["Q8_0"])[0].out_dir == tmp_path


def test_a_cell_that_fails_is_reported_and_the_others_kept(tiny_llama, tmp_path, monkeypatch):
    from llmtk.evals import sweep

    real = sweep._cell_step

    def full_disk(**kw):
        if kw["name"] == "Q4_0":
            raise OSError(28, "No space left on device")
        return real(**kw)

    monkeypatch.setattr(sweep, "_cell_step", full_disk)
    out = tmp_path / "sweep"
    args = ["sweep", str(tiny_llama), "--types", "Q8_0,Q4_0", "-c", "64", "--chunks", "1", "-o", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and "1 step(s) of the sweep failed (Q4_0: OSError: [Errno 28]" in res.output, res.output
    assert json.loads((out / "sweep.json").read_text())["rows"].keys() == {"Q8_0"}
    assert "- Q4_0: OSError: [Errno 28] No space left on device" in (out / "sweep.md").read_text()
    monkeypatch.undo()
    again = CliRunner().invoke(main, args)                 # resumes: only the failed cell is made
    assert again.exit_code == 0 and again.output.count("re-used") == 1 and "quantize Q4_0" in again.output
