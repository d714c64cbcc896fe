"""Sweeps on a Ray cluster (issue 20), on a local cluster started here with the tiny converted
Llama from ../shared: the same rows and bytes as the local executor, a cell whose worker is
killed mid-task retried, a cell that fails for good reported without losing the others, the
matrix of several texts, and the one-line refusals before any work."""
from __future__ import annotations

import json
import os
import signal
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

ray = pytest.importorskip("ray", reason="Ray is the optional extra llmtk[ray] (the test extra installs it)")

from llmtk.cli import main  # noqa: E402
from llmtk.evals import sweep  # noqa: E402
from llmtk.evals.distributed import RayExecutor  # noqa: E402

TIMINGS = {"quantize_s", "eval_s"}   # wall times: the only fields allowed to differ between executors


@pytest.fixture(scope="module")
def tiny_llama(shared_dir):
    return shared_dir / "convert" / "llama" / "tiny-llama-f16.gguf"


@pytest.fixture(scope="module")
def cluster():
    """A two-CPU local cluster for the module (the sweeps join it instead of starting their own)."""
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    except Exception:   # Ray gives its node 30 s to start, which a busy CI machine can miss once
        ray.shutdown()
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    # the fault-injecting cell below lives in this test module, which workers cannot import
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


def _plan(model: Path, out: Path, types: str, **kw) -> sweep.SweepPlan:
    text = Path(__file__).read_text(encoding="utf-8") * 3
    return sweep.SweepPlan(model, types.split(","), text, "test_sweep_ray.py", out, n_ctx=64, n_chunks=2, **kw)


def _rows(out: Path) -> dict:
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    return {k: {f: v for f, v in r.items() if f not in TIMINGS} for k, r in rows.items()}


def test_ray_sweep_gives_the_local_rows_and_bytes(tiny_llama, tmp_path, cluster):
    out = tmp_path / "sweep"
    sweep.run_sweep(_plan(tiny_llama, out, "Q4_0", imatrix="auto"), log=lambda s: None)
    local = tmp_path / "local"
    out.rename(local)             # the Ray sweeps write the same paths, which the models record
    expected = _rows(local)
    assert set(expected) == {"Q4_0-imatrix"}
    for storage in ("shared", "object"):
        sweep.run_sweep(_plan(tiny_llama, out, "Q4_0", imatrix="auto"), log=lambda s: None,
                        executor=RayExecutor(storage=storage))
        assert _rows(out) == expected, storage                # every number, and each model's sha256
        for name in ("base.kld", "imatrix.gguf", "model-Q4_0-imatrix.gguf"):
            assert (out / name).read_bytes() == (local / name).read_bytes(), (storage, name)
        shutil.rmtree(out)


FAULT_DIR: Path | None = None   # set by the test; travels with the function (pickled by value)


def _cell_with_faults(**kw):
    """The real cell, except that Q8_0's worker kills itself the first time it runs and Q4_0 always fails."""
    from llmtk.evals import sweep as real

    marker = FAULT_DIR / "attempts"
    if kw["name"] == "Q8_0":
        with open(marker, "a") as f:
            f.write("attempt\n")
        if marker.read_text().count("attempt") == 1:
            os.kill(os.getpid(), signal.SIGKILL)
    if kw["name"] == "Q4_0":
        raise RuntimeError("disk quota exceeded")
    return real._cell_step(**kw)


def test_a_killed_worker_is_retried_and_a_failed_cell_reported(tiny_llama, tmp_path, cluster, monkeypatch):
    out = tmp_path / "sweep"
    plan = _plan(tiny_llama, out, "Q8_0,Q4_0")
    monkeypatch.setattr(sys.modules[__name__], "FAULT_DIR", tmp_path)
    monkeypatch.setattr(sweep, "_cell_step", _cell_with_faults)
    with pytest.raises(sweep.SweepFailed, match="1 step.*Q4_0: RuntimeError: disk quota exceeded") as e:
        sweep.run_sweep(plan, log=lambda s: None, executor=RayExecutor(storage="object", max_retries=2))
    assert (tmp_path / "attempts").read_text().count("attempt") == 2   # killed once, then done
    assert set(_rows(out)) == {"Q8_0"} and len(e.value.frames[0]) == 2  # the base and Q8_0
    md = (out / "sweep.md").read_text()
    assert "| Q8_0 |" in md and "## Failed" in md and "- Q4_0: RuntimeError: disk quota exceeded" in md
    monkeypatch.undo()
    logs = []
    df = sweep.run_sweep(_plan(tiny_llama, out, "Q8_0,Q4_0"), log=logs.append, executor=RayExecutor())
    assert set(df["type"]) == {"F16 (base)", "Q8_0", "Q4_0"} and "## Failed" not in (out / "sweep.md").read_text()
    assert sum("re-used" in line for line in logs) == 1 and any("task(s)" in s and "Q4_0" in s for s in logs)


def test_models_and_texts_make_one_matrix(tiny_llama, tmp_path, cluster):
    out = tmp_path / "m"
    (tmp_path / "a.txt").write_text(Path(__file__).read_text(encoding="utf-8") * 2)
    (tmp_path / "b.txt").write_text(Path(sweep.__file__).read_text(encoding="utf-8"))
    res = CliRunner().invoke(main, ["sweep", str(tiny_llama), "--types", "Q8_0", "-c", "64", "--chunks", "1",
                                    "-f", str(tmp_path / "a.txt"), "-f", str(tmp_path / "b.txt"), "-o", str(out),
                                    "--ray"])
    assert res.exit_code == 0, res.output
    for text in ("a", "b"):
        folder = out / "tiny-llama-f16" / text
        assert (folder / "sweep.md").is_file() and set(_rows(folder)) == {"Q8_0"}
    index = (out / "sweep.md").read_text()
    assert "[sweep.md](tiny-llama-f16/a/sweep.md)" in index and "[sweep.md](tiny-llama-f16/b/sweep.md)" in index
    assert "2 task(s) to the ray cluster: tiny-llama-f16/a: base log-probs, tiny-llama-f16/b: base log-probs" in res.output


def test_ray_refusals_come_before_any_work(tiny_llama, tmp_path, monkeypatch):
    out = tmp_path / "s"
    args = ["sweep", str(tiny_llama), "--types", "Q8_0", "-o", str(out)]
    bad = CliRunner().invoke(main, args + ["--ray", "127.0.0.1:9"])     # nothing listens on the discard port
    assert bad.exit_code == 2 and "no Ray cluster answers there" in bad.output, bad.output
    model_first = CliRunner().invoke(main, ["sweep", "--ray", str(tiny_llama), "-o", str(out)])
    assert model_first.exit_code == 2 and "not a Ray address" in model_first.output
    alone = CliRunner().invoke(main, args + ["--ray-storage", "object"])
    assert alone.exit_code == 2 and "are for --ray" in alone.output
    monkeypatch.setitem(sys.modules, "ray", None)                       # as if Ray were not installed
    missing = CliRunner().invoke(main, args + ["--ray"])
    assert missing.exit_code == 2 and "pip install 'llmtk[ray]'" in missing.output, missing.output
    assert not out.exists()
