"""Issue 16/17 for every command but sweep: outputs checked before work, write failures as one
line (exit 2), numeric ranges, llama.cpp spellings and ignored GPU flags, non-model GGUFs refused,
Ctrl-C exit 130, plain progress lines, and the paper cuts (plurals, quantize TYPE, tokenize escapes)."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmtk.cli import main

TINY = "convert/llama/tiny-llama-f16.gguf"
IMATRIX = "llamacpp/smollm2/imatrix.gguf"
FAST = ["-c", "64", "--chunks", "1"]


def run(*args, env=None):
    return CliRunner(env=env).invoke(main, [str(a) for a in args])


def one_error_line(res, *needles: str) -> None:
    """exit 2 with exactly one `llmtk: error:` line on stderr (besides progress lines and notes)
    holding every needle, and no traceback."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("llmtk: error")]
    assert len(lines) == 1 and lines[0].startswith("llmtk: error: "), res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture(scope="module")
def tiny(shared_dir):
    return shared_dir / TINY


@pytest.fixture(scope="module")
def imatrix_gguf(shared_dir):
    return shared_dir / IMATRIX


# -- (1) output paths checked before any work ------------------------------------------------

def _output_cases(tiny, tmp):
    nodir = tmp / "nodir"
    return {
        "perplexity --json": (["perplexity", "-m", tiny, *FAST, "--json", nodir / "p.json"], "--json"),
        "perplexity --csv": (["perplexity", "-m", tiny, *FAST, "--csv", nodir / "p.csv"], "--csv"),
        "perplexity kld base": (["perplexity", "-m", tiny, *FAST, "--kl-divergence-base", nodir / "b.kld"],
                                "--kl-divergence-base"),
        "gate --junit": (["gate", "--base", tiny, "--candidate", tiny, *FAST, "--max-mean-kld", "1",
                          "--junit", nodir / "g.xml"], "--junit"),
        "gate --json": (["gate", "--base", tiny, "--candidate", tiny, *FAST, "--max-mean-kld", "1",
                         "--json", nodir / "g.json"], "--json"),
        "imatrix -o": (["imatrix", "-m", tiny, *FAST, "-o", nodir / "im.gguf"], "-o"),
        "quantize OUT": (["quantize", tiny, nodir / "q.gguf", "Q8_0"], "OUT"),
        "edit OUT": (["edit", tiny, nodir / "e.gguf", "--set", "general.name=x"], "OUT"),
        "bench --output-file": (["bench", "kernels", "--types", "Q8_0", "--rows", "1", "--cols", "32", "-t", "1",
                                 "-r", "1", "--output-file", nodir / "b.md"], "--output-file"),
    }


CASES = ["perplexity --json", "perplexity --csv", "perplexity kld base", "gate --junit", "gate --json",
         "imatrix -o", "quantize OUT", "edit OUT", "bench --output-file"]


@pytest.mark.parametrize("case", CASES)
def test_missing_output_folder_is_found_before_work(tiny, tmp_path, case):
    args, option = _output_cases(tiny, tmp_path)[case]
    t0 = time.perf_counter()
    res = run(*args)
    one_error_line(res, option, "nodir", "does not exist")
    assert "chunk" not in res.stderr                      # no evaluation ran
    assert time.perf_counter() - t0 < 20


def test_convert_output_folder_checked_before_reading(shared_dir, tmp_path):
    hf = shared_dir / "convert" / "llama"
    src = next((p for p in hf.iterdir() if p.is_dir() and (p / "config.json").is_file()), None)
    if src is None:
        pytest.skip("no HF checkpoint folder in shared/convert/llama")
    one_error_line(run("convert", src, "-o", tmp_path / "nodir" / "x.gguf"), "-o", "does not exist")


def test_output_that_is_a_folder_or_an_input(tiny, tmp_path):
    one_error_line(run("perplexity", "-m", tiny, *FAST, "--json", tmp_path), "--json", "is a folder")
    one_error_line(run("quantize", tiny, tiny, "Q8_0"), "is also an input")
    im = tmp_path / "im.gguf"
    res = run("imatrix", "-m", tiny, *FAST, "-o", im)
    assert res.exit_code == 0, res.output
    one_error_line(run("imatrix", "--in-file", im, "-o", im), "is also an input")
    one_error_line(run("perplexity", "-m", tiny, *FAST, "--json", tmp_path / "a", "--csv", tmp_path / "a"),
                   "the same file")
    (tmp_path / "afile").write_text("x")
    one_error_line(run("perplexity", "-m", tiny, *FAST, "--report", tmp_path / "afile"), "--report", "is a file")


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root writes anywhere")
def test_read_only_folder_is_found_before_work(tiny, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        one_error_line(run("quantize", tiny, ro / "q.gguf", "Q8_0"), "not writable")
        one_error_line(run("gate", "--base", tiny, "--candidate", tiny, "--max-mean-kld", "1", "--junit",
                           ro / "g.xml"), "not writable")
    finally:
        ro.chmod(0o755)


def test_read_only_folder_check_uses_access(tiny, tmp_path, monkeypatch):
    """The same check where the test runs as root: os.access says the folder is read-only."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m, *a, **k: False if Path(p) == tmp_path else real(p, m, *a, **k))
    one_error_line(run("imatrix", "-m", tiny, *FAST, "-o", tmp_path / "im.gguf"), "not writable")
    one_error_line(run("edit", tiny, tmp_path / "e.gguf", "--set", "general.name=x"), "not writable")


def _enospc(*a, **k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_write_failure_is_one_line_and_leaves_nothing(tiny, tmp_path, monkeypatch):
    """B13: a full disk at write time: exit 2, one line naming the file, no partial or temp file."""
    import llmtk.outputs as O

    monkeypatch.setattr(O.os, "fsync", _enospc)
    out = tmp_path / "p.json"
    res = run("perplexity", "-m", tiny, *FAST, "--json", out)
    one_error_line(res, str(out), "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_oserror_from_a_library_writer_is_one_line(tiny, tmp_path, monkeypatch):
    """An OSError raised below the CLI (here the imatrix writer) still exits 2 with one line."""
    import llmtk.ggufio.imatrix_file as F

    def boom(path, im):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(F, "write_imatrix_gguf", boom)
    res = run("imatrix", "-m", tiny, *FAST, "-o", tmp_path / "im.gguf")
    one_error_line(res, "im.gguf", "Read-only file system")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_and_stale_temps(tmp_path):
    """B15: unique temporaries with the writer's pid; a dead process's are cleaned, a live one's kept."""
    from llmtk.outputs import clean_stale_temps, write_text_atomic

    out = tmp_path / "r.json"
    write_text_atomic(out, "{}\n")
    assert out.read_text() == "{}\n" and [p.name for p in tmp_path.iterdir()] == ["r.json"]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale, live = tmp_path / f".r.json.{dead}.abc.tmp", tmp_path / f".r.json.{os.getpid()}.def.tmp"
    stale.write_text("x")
    live.write_text("x")
    assert clean_stale_temps(out) == [stale]
    assert live.exists() and not stale.exists()


def test_report_folder_written_whole(tiny, tmp_path):
    res = run("perplexity", "-m", tiny, "-c", "64", "--chunks", "2", "--report", tmp_path / "rep",
              "--csv", tmp_path / "p.csv")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "rep" / "report.md").is_file() and (tmp_path / "rep" / "running_ppl.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "rep"]     # no temporaries left
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "chunk,running_ppl"


# -- (2)/(3) arguments and numeric ranges ----------------------------------------------------

@pytest.mark.parametrize("cmd", [["perplexity"], ["imatrix"], ["gate", "--max-mean-kld", "1"]])
@pytest.mark.parametrize("chunks", ["0", "-2"])
def test_chunks_zero_is_a_usage_error(tiny, cmd, chunks):
    extra = ["--base", tiny, "--candidate", tiny] if cmd[0] == "gate" else ["-m", tiny]
    one_error_line(run(*cmd, *extra, "--chunks", chunks), "--chunks", "at least 1")


@pytest.mark.parametrize("args,needle", [
    (["-t", "0"], "--threads"), (["-b", "0"], "--batch-size"), (["-ub", "0"], "--ubatch-size"),
    (["-c", "1"], "--ctx-size"), (["-ctk", "q4_0"], "--cache-type-k"),
])
def test_perplexity_numeric_ranges(tiny, args, needle):
    one_error_line(run("perplexity", "-m", tiny, *args), needle)


@pytest.mark.parametrize("opt,value", [("--max-mean-kld", "-1"), ("--max-mean-kld", "nan"),
                                       ("--min-same-top-p", "1.5"), ("--max-ppl-ratio", "0"),
                                       ("--max-rms-dp", "inf")])
def test_gate_limits_have_ranges(tiny, opt, value):
    one_error_line(run("gate", "--base", tiny, "--candidate", tiny, opt, value), opt, "finite number")


def test_bench_ranges_and_thread_lists():
    one_error_line(run("bench", "kernels", "-t", "1,x"), "--threads", "comma-separated")
    one_error_line(run("bench", "kernels", "-r", "0"), "--repetitions")
    one_error_line(run("bench", "kernels", "--rows", "0"), "--rows")


def test_quantize_arguments_checked_up_front(tiny, tmp_path):
    out = tmp_path / "q.gguf"
    one_error_line(run("quantize", tiny, out, "Q8_0", "--tensor-type", "attn=Q9_9"), "Q9_9")
    one_error_line(run("quantize", tiny, out, "Q8_0", "--tensor-type", "a(=Q4_K"), "bad regular expression")
    one_error_line(run("quantize", tiny, out, "Q8_0", "--output-tensor-type", "nope"), "nope")
    one_error_line(run("quantize", tiny, out, "Q8_0", "--override-kv", "a.b=int"), "KV override")
    one_error_line(run("quantize", tiny, out, "Q8_0", "99999"), "NTHREADS")
    assert not out.exists()


def test_perplexity_conflicting_options(tiny, tmp_path):
    one_error_line(run("perplexity", "-m", tiny, "--kl-divergence"), "--kl-divergence-base")
    one_error_line(run("perplexity", "-m", tiny, "--kl-divergence", "--kl-divergence-base", tmp_path / "no.kld"),
                   "no.kld", "not found")
    one_error_line(run("perplexity", "-m", tiny, "--hellaswag"), "--hellaswag")


# -- (4) threads and llama.cpp spellings -------------------------------------------------------

@pytest.fixture
def built_threads(monkeypatch):
    """The `threads` every model is built with during the test."""
    import llmtk.model as M

    seen: list = []
    real = M.load_model

    def spy(path, **kw):
        seen.append(kw.get("threads"))
        return real(path, **kw)

    monkeypatch.setattr(M, "load_model", spy)
    return seen


def test_threads_reach_the_model(tiny, tmp_path, built_threads):
    assert run("perplexity", "-m", tiny, *FAST, "-t", "1").exit_code == 0
    assert run("imatrix", "-m", tiny, *FAST, "--threads", "1", "-o", tmp_path / "i.gguf").exit_code == 0
    res = run("gate", "--base", tiny, "--candidate", tiny, *FAST, "-t", "1", "--max-mean-kld", "1")
    assert res.exit_code == 0, res.output
    assert built_threads == [1, 1, 1, 1]
    assert run("perplexity", "-m", tiny, *FAST, "-t", "-1").exit_code == 0      # llama.cpp's default
    assert built_threads[-1] is None


def test_gpu_flags_are_ignored_with_a_note(tiny):
    res = run("perplexity", "-m", tiny, *FAST, "-ngl", "99", "-fa", "--no-mmap", "-ot", "exps=CPU")
    assert res.exit_code == 0, res.output
    notes = [ln for ln in res.stderr.splitlines() if ln.startswith("llmtk: note:")]
    assert len(notes) == 4 and all("ignored" in n for n in notes)
    assert "Final estimate" in res.stdout


def test_flash_attn_is_not_read_as_file(tiny, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("hello world. " * 400)
    res = run("perplexity", "-m", tiny, "-fa", "-f", text, *FAST)      # -fa then -f FILE
    assert res.exit_code == 0, res.output
    res = run("imatrix", "-m", tiny, *FAST, "-fa", "auto", "-ngl", "0", "-b", "512", "-ub", "512",
              "-o", tmp_path / "im.gguf")
    assert res.exit_code == 0, res.output
    assert "-fa/--flash-attn is ignored" in res.stderr
    one_error_line(run("perplexity", "-m", tiny, "-fa", "maybe"), "--flash-attn")


def test_bench_llama_bench_spellings(shared_dir, tmp_path):
    out = tmp_path / "f.json"
    res = run("bench", "forward", "-m", shared_dir / TINY, "-t", "1", "-p", "4", "-n", "2", "-r", "1",
              "-o", "json", "--output-file", out, "-ngl", "99", "-fa", "1")
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())[0]["type"] == "F16"
    assert "-ngl/--n-gpu-layers" in res.stderr
    res = run("bench", "kernels", "--types", "Q8_0", "--rows", "1", "--cols", "32", "-t", "1", "-r", "1",
              "-o", "md", "--no-gguf-py")
    assert res.exit_code == 0 and "| Q8_0 |" in res.stdout
    one_error_line(run("bench", "kernels", "-o", tmp_path / "x.csv"), "--output")


# -- (6) a GGUF that is not a model ----------------------------------------------------------

@pytest.mark.parametrize("cmd", [
    lambda im, t, tmp: ["quantize", im, tmp / "q.gguf", "Q8_0"],
    lambda im, t, tmp: ["perplexity", "-m", im],
    lambda im, t, tmp: ["imatrix", "-m", im, "-o", tmp / "x.gguf"],
    lambda im, t, tmp: ["gate", "--base", t, "--candidate", im, "--max-mean-kld", "1"],
    lambda im, t, tmp: ["gate", "--base", im, "--candidate", t, "--max-mean-kld", "1"],
    lambda im, t, tmp: ["tokenize", "-m", im, "-p", "hi"],
    lambda im, t, tmp: ["bench", "forward", "-m", im],
], ids=["quantize", "perplexity", "imatrix", "gate-candidate", "gate-base", "tokenize", "bench-forward"])
def test_imatrix_gguf_is_not_a_model(imatrix_gguf, tiny, tmp_path, cmd):
    one_error_line(run(*cmd(imatrix_gguf, tiny, tmp_path)), str(imatrix_gguf), "'imatrix', not a model")
    assert not (tmp_path / "q.gguf").exists()


def test_a_shard_whose_first_split_is_missing_is_named(tmp_path, tiny):
    from llmtk.ggufio.constants import Key
    from llmtk.ggufio.edit import edit_gguf

    shard = tmp_path / "m-00002-of-00002.gguf"
    edit_gguf(tiny, shard, delete=[Key.ARCHITECTURE], set_kv=["split.no=uint16:1", "split.count=uint16:2"])
    # any shard opens the whole model, so the missing first shard is what is named
    one_error_line(run("perplexity", "-m", shard), "m-00001-of-00002.gguf", "shard 1 of the 2-way split model",
                   "is missing")


# -- (9) progress without a terminal ----------------------------------------------------------

def test_plain_progress_lines_without_a_terminal(tiny):
    res = run("perplexity", "-m", tiny, "-c", "64", "--chunks", "2", env={"LLMTK_PROGRESS_INTERVAL": "0"})
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("perplexity:")]
    assert lines[0] == "perplexity: 2 chunks to do"
    assert lines[1].startswith("perplexity: chunk 1/2 (50%), ") and "elapsed" in lines[1] and "ETA" in lines[1]
    assert lines[2].startswith("perplexity: chunk 2/2 (100%), ") and "PPL" in lines[2]


def test_plain_progress_of_imatrix_and_gate(tiny, tmp_path):
    env = {"LLMTK_PROGRESS_INTERVAL": "0"}
    res = run("imatrix", "-m", tiny, *FAST, "-o", tmp_path / "i.gguf", env=env)
    assert "imatrix: chunk 1/1 (100%)" in res.stderr
    res = run("gate", "--base", tiny, "--candidate", tiny, *FAST, "--max-mean-kld", "1", env=env)
    assert "base: chunk 1/1 (100%)" in res.stderr and "candidate: chunk 1/1 (100%)" in res.stderr


# -- (11) paper cuts --------------------------------------------------------------------------

def test_usage_errors_are_one_line():
    one_error_line(run("perplexity", "--no-such-option"), "No such option", "llmtk perplexity --help")
    one_error_line(run("nope"), "No such command")
    one_error_line(run("quantize"), "Missing argument")
    one_error_line(run("perplexity", "-c", "abc"), "--ctx-size", "not a valid integer")


def test_quantize_type_messages(tiny, tmp_path):
    one_error_line(run("quantize", tiny, "Q4_K_X"), "unknown quantization type 'Q4_K_X'")
    one_error_line(run("quantize", tiny, tmp_path / "o.gguf", "Q4_K_X"), "unknown quantization type 'Q4_K_X'")
    res = run("quantize", "--dry-run", tiny, "17")
    assert res.exit_code == 0, res.output
    assert "dry run: Q5_K_M," in res.stdout


def test_imatrix_default_text_and_plurals(tiny, tmp_path):
    res = run("imatrix", "-m", tiny, "-c", "64", "--chunks", "1", "-o", tmp_path / "i.gguf")
    assert res.exit_code == 0, res.output
    assert "1 chunk of 64" in res.stdout and "chunks" not in res.stdout


def test_edit_plurals(tiny, tmp_path):
    res = run("edit", tiny, tmp_path / "e.gguf", "--set", "general.name=x")
    assert res.exit_code == 0, res.output
    assert ": 1 key changed," in res.stdout and "0 tensors renamed" in res.stdout


def test_tokenize_escapes_by_default(smollm2_path):
    esc = run("tokenize", "-m", smollm2_path, "-p", r"a\nb", "--ids")
    lit = run("tokenize", "-m", smollm2_path, "-p", r"a\nb", "--ids", "--no-escape")
    nl = run("tokenize", "-m", smollm2_path, "-p", "a\nb", "--ids")
    assert esc.exit_code == lit.exit_code == 0
    assert esc.stdout == nl.stdout and esc.stdout != lit.stdout


def test_tokenize_process_escapes_like_llama_cpp():
    from llmtk.cli.commands.tokenize import process_escapes as p

    assert p(rb"a\nb\tc\\d\'\"") == b"a\nb\tc\\d'\""
    assert p(rb"\x41\x4") == b"A\\x4"             # \x needs two characters that strtol reads whole
    assert p(rb"\xzz\q") == b"\\xzz\\q"           # unknown escapes are kept
    assert p(b"end\\") == b"end\\"


def test_swallowed_ctrl_c_still_exits_130(tiny, tmp_path, monkeypatch):
    """B16: a KeyboardInterrupt swallowed below us (as in a numba callback) stops the command."""
    from llmtk.cli import interrupt
    from llmtk.evals import runner as R

    real = R.evaluate

    def swallowing(*a, **k):
        try:
            interrupt._handler(signal.SIGINT, None)       # what Ctrl-C does
        except KeyboardInterrupt:
            pass                                          # ... and numba swallows it
        return real(*a, **k)

    monkeypatch.setattr(R, "evaluate", swallowing)
    import llmtk.cli.commands.perplexity  # noqa: F401  (imports evaluate inside the command)
    out = tmp_path / "p.json"
    res = run("perplexity", "-m", tiny, *FAST, "--json", out)
    assert res.exit_code == 130, res.output
    assert "interrupted" in res.stderr and not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_exits_130_in_a_real_process(tiny, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 4000)
    out = tmp_path / "p.json"
    env = {**os.environ, "LLMTK_PROGRESS_INTERVAL": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "llmtk.cli", "perplexity", "-m", str(tiny), "-f", str(text),
                             "-c", "64", "--json", str(out)], stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stderr:                               # wait until chunks are being evaluated
        if "chunk 1/" in line:
            break
    proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 130, err
    assert "llmtk: interrupted" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]


@pytest.mark.parametrize("spec, needle", [
    ("../secrets", "is not a dataset name"),
    ("/etc/passwd", "is not a dataset name"),
    ("./data", "is not a dataset name"),
    ("wiki text", "is not a dataset name"),
    ("wikitext:bad config", "is not a config name"),
    ("wikitext/te$t", "is not a split name"),
    ("wikitext/test\nx", "is not a split name"),
])
def test_dataset_names_checked_before_datasets_sees_them(spec, needle, monkeypatch):
    """Issue 17: `--dataset` is checked before `datasets.load_dataset` (which would run a local
    loading script or read local files): a path or a malformed name is refused up front."""
    import llmtk.evals.runner as runner

    monkeypatch.setattr(runner, "_dataset_text", lambda s: pytest.fail("datasets was reached"))
    one_error_line(run("perplexity", "--dataset", spec), "--dataset", needle)


def test_dataset_spec_parts():
    from llmtk.evals.runner import check_dataset_spec

    assert check_dataset_spec("wikitext:wikitext-2-raw-v1/test[:10%]") == ("wikitext", "wikitext-2-raw-v1", "test[:10%]")
    assert check_dataset_spec("ptb_text_only") == ("ptb_text_only", None, "test")
