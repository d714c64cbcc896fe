"""Helpers for the fault tests: the real CLI in a subprocess, signals at seeded moments, small tmpfs.

Not a conftest.py on purpose: a second `conftest` module replaces tests/conftest.py in
`sys.modules`, and the modules that do `from conftest import shared_path` then fail to collect.

Each `Case` is one writing command on the tiny llama of ../shared (`convert/llama/`), its final
outputs, and its command line for an output folder. A run is judged by what it leaves there: the
final files whole or absent, and no temporary (`.NAME.<pid>.*.tmp`, any `*.tmp`) behind.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from conftest import PROJECT_ROOT, require_shared

TEXT_BYTES = 4000  # enough tokens for 2 chunks of 64 with the tiny llama's vocabulary


@dataclass(frozen=True)
class Work:
    """Inputs shared by every case: the model, its Hugging Face folder, a short text."""

    model: Path
    hf_dir: Path
    text: Path


@dataclass(frozen=True)
class Case:
    """A writing command: `argv(work, out)` writes `finals(out)` (relative to the output folder)."""

    name: str
    argv: Callable[[Work, Path], list[str]]
    finals: tuple[str, ...]
    small_output: bool = False  # fits in the 64 KiB tmpfs: the disk-full test fills it first


_EVAL = ["-c", "64", "--chunks", "2"]

CASES = [
    Case("quantize", lambda w, o: ["quantize", str(w.model), str(o / "q.gguf"), "Q4_0"], ("q.gguf",)),
    Case("convert", lambda w, o: ["convert", str(w.hf_dir), "-o", str(o / "c.gguf"), "--no-progress"], ("c.gguf",)),
    Case("edit", lambda w, o: ["edit", str(w.model), str(o / "e.gguf"), "--set", "general.name=faults"], ("e.gguf",)),
    Case("imatrix", lambda w, o: ["imatrix", "-m", str(w.model), "-f", str(w.text), *_EVAL, "-o", str(o / "i.gguf")],
         ("i.gguf",), small_output=True),
    Case("perplexity-json", lambda w, o: ["perplexity", "-m", str(w.model), "-f", str(w.text), *_EVAL,
                                          "--json", str(o / "p.json")], ("p.json",),
         small_output=True),
    Case("perplexity-kld-base", lambda w, o: ["perplexity", "-m", str(w.model), "-f", str(w.text), *_EVAL,
                                              "--kl-divergence-base", str(o / "b.kld")], ("b.kld",)),
    Case("sweep", lambda w, o: ["sweep", str(w.model), "--types", "Q8_0", "-f", str(w.text), *_EVAL,
                                "-o", str(o / "sw")], ("sw/sweep.md",)),
]
CASE_IDS = [c.name for c in CASES]


def make_work(root: Path) -> Work:
    """The tiny llama (GGUF and HF folder, its tokenizer link resolved) and a text, under `root`."""
    src = require_shared("convert", "llama", "tiny-llama")
    model = require_shared("convert", "llama", "tiny-llama-f16.gguf")
    hf = root / "tiny-llama"
    if not hf.exists():
        hf.mkdir(parents=True)
        for f in src.iterdir():
            target = f
            if f.name == "tokenizer.json" and f.stat().st_size < 256:
                target = (f.parent / f.read_text().strip()).resolve()
            (hf / f.name).symlink_to(target)
    text = root / "text.txt"
    if not text.exists():
        text.write_bytes((PROJECT_ROOT / "data" / "stdlib-docstrings.txt").read_bytes()[:TEXT_BYTES])
    return Work(model, hf, text)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("COLUMNS", None)
    return env


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    seconds: float
    signalled: bool = False  # the signal was sent while the command was still running
    pid: int = 0


def run_cli(args: list[str], *, cwd: Path, timeout: float = 120) -> Run:
    """`python -m llmtk.cli ARGS` to completion."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "llmtk.cli", *args], cwd=cwd, env=_env(), capture_output=True,
                       text=True, timeout=timeout)
    return Run(p.returncode, p.stdout, p.stderr, time.perf_counter() - t0)


def run_and_signal(args: list[str], *, cwd: Path, delay: float, sig: int, timeout: float = 120) -> Run:
    """Start the command, send `sig` after `delay` seconds if it is still running, wait for it."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "llmtk.cli", *args], cwd=cwd, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=delay)
        return Run(p.returncode, out, err, time.perf_counter() - t0, signalled=False, pid=p.pid)
    except subprocess.TimeoutExpired:
        pass
    p.send_signal(sig)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"{args[0]}: still running {timeout} s after signal {sig}")
    return Run(p.returncode, out, err, time.perf_counter() - t0, signalled=True, pid=p.pid)


def temporaries(folder: Path) -> list[Path]:
    """Every temporary file or folder under `folder` (our `.NAME.<pid>.*.tmp` and any `*.tmp`)."""
    if not folder.exists():
        return []
    return sorted(p for p in folder.rglob("*") if p.name.endswith(".tmp"))


def error_lines(run: Run) -> list[str]:
    return [line for line in run.stderr.splitlines() if line.strip()]


def assert_one_error_line(run: Run, *, naming: str) -> str:
    """Exit 2, no traceback, and exactly one `llmtk: error:` line that names `naming`."""
    assert "Traceback" not in run.stderr, run.stderr
    errors = [line for line in error_lines(run) if line.startswith("llmtk: error:")]
    assert run.rc == 2, (run.rc, run.stderr)
    assert len(errors) == 1, run.stderr
    assert naming in errors[0], errors[0]
    return errors[0]


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str = "64k") -> Iterator[Path]:
    """A tmpfs of `size` mounted on `folder` (created); skips when mounting is not permitted
    (not root, no CAP_SYS_ADMIN, no `mount`). Always unmounted at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        r = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
    except FileNotFoundError:
        pytest.skip("no `mount` command: cannot make a small tmpfs for the disk-full and read-only tests")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs on {folder} ({r.stderr.strip() or r.returncode}): "
                    "the disk-full and read-only tests need root or CAP_SYS_ADMIN")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> None:
    """Fill the filesystem of `folder` to the last byte, so that even a one-line file cannot be written."""
    with open(folder / "filler", "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
    assert (folder / "filler").stat().st_size > 0


def remount_read_only(folder: Path) -> None:
    r = _mount("-o", "remount,ro", str(folder))
    if r.returncode != 0:
        pytest.skip(f"cannot remount {folder} read-only: {r.stderr.strip()}")


SIGINT, SIGKILL = signal.SIGINT, signal.SIGKILL
