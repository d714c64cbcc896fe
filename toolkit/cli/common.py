"""Options and checks the commands share: llama.cpp's spellings (`-t`, `--chunks`, `-b`, `-ub`,
`-ctk/-ctv`), its GPU/runtime flags accepted and ignored with a note (`-ngl`, `-fa`, `--no-mmap`,
`-ot`), "is this GGUF a model?" before any work, and output checks/writes as one-line errors.

Light at import (click only): commands import it at module level, `llmtk --help` stays fast.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator

import click

from llmtk.errors import InputError
from llmtk.outputs import (check_distinct, check_output_dir, check_output_file, clean_stale_temps,
                           move_folder_contents, remove_quietly, replace_into, temp_path, write_text_atomic)

__all__ = ["threads_option", "chunks_option", "batch_options", "cache_type_options", "ignored_llamacpp_options",
           "require_model", "check_output_file", "check_output_dir", "check_distinct", "write_text",
           "staged_file", "staged_folder", "model_threads"]

CACHE_TYPES = ("f16", "bf16", "f32")


def _threads_cb(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is None or value == -1:        # llama.cpp's -1: the default
        return None
    if value < 1 or value > 4096:
        raise click.BadParameter(f"{value} is not a thread count: give 1..4096 (or -1 for the default)")
    return value


def threads_option(fn: Callable) -> Callable:
    """`-t/--threads N` as llama.cpp spells it (default: all cores)."""
    return click.option("-t", "--threads", "threads", type=int, default=None, callback=_threads_cb, metavar="N",
                        help="Threads for the forward pass (default: all cores).")(fn)


def _chunks_cb(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value != -1 and value < 1:
        raise click.BadParameter(f"{value}: give a number of chunks of at least 1, or -1 for all")
    return value


def chunks_option(default: int | None = -1, help: str = "Evaluate at most this many chunks (-1: all).") -> Callable:
    """`--chunks N`: -1 (all) or at least 1; 0 and other negatives are usage errors."""
    return click.option("--chunks", "n_chunks", default=default, type=int, callback=_chunks_cb, metavar="N", help=help)


def batch_options(fn: Callable) -> Callable:
    """llama.cpp's `-b/--batch-size` and `-ub/--ubatch-size`: accepted and range-checked; llmtk
    evaluates one whole chunk per pass, so they change nothing."""
    fn = click.option("-ub", "--ubatch-size", default=512, show_default=True, type=click.IntRange(min=1),
                      expose_value=False, help="Accepted for llama.cpp compatibility (no effect).")(fn)
    return click.option("-b", "--batch-size", default=2048, show_default=True, type=click.IntRange(min=1),
                        expose_value=False,
                        help="Accepted for llama.cpp compatibility; llmtk evaluates one whole chunk per pass.")(fn)


def cache_type_options(fn: Callable) -> Callable:
    """`-ctk/--cache-type-k`, `-ctv/--cache-type-v` as llama.cpp spells them."""
    fn = click.option("-ctv", "--cache-type-v", default="f16", show_default=True, type=click.Choice(CACHE_TYPES),
                      help="Precision of cached values, as llama.cpp's -ctv.")(fn)
    return click.option("-ctk", "--cache-type-k", default="f16", show_default=True, type=click.Choice(CACHE_TYPES),
                        help="Precision of cached keys, as llama.cpp's -ctk (f32: exact).")(fn)


_IGNORED_WHY = {
    "n_gpu_layers": "llmtk runs on the CPU",
    "flash_attn": "llmtk computes attention one way",
    "no_mmap": "llmtk always memory-maps the weights",
    "override_tensor": "llmtk has no devices to place tensors on",
}


def _ignored_cb(ctx: click.Context, param: click.Parameter, value) -> None:
    if value is None or value is False or value == ():
        return
    click.echo(f"llmtk: note: {'/'.join(param.opts)} is ignored ({_IGNORED_WHY[param.name]})", err=True)


def ignored_llamacpp_options(fn: Callable) -> Callable:
    """llama.cpp's GPU/runtime flags, accepted with a one-line note on stderr that they change
    nothing here (so `-fa` is not read as `-f a`, and llama.cpp command lines run as they are)."""
    opts = [
        click.option("-ngl", "--n-gpu-layers", "--gpu-layers", "n_gpu_layers", metavar="N", default=None,
                     expose_value=False, callback=_ignored_cb, help="Ignored (llama.cpp's GPU layers)."),
        click.option("-fa", "--flash-attn", "flash_attn", metavar="[on|off|auto]", is_flag=False, flag_value="on",
                     default=None, type=click.Choice(["on", "off", "auto", "1", "0"]), expose_value=False,
                     callback=_ignored_cb, help="Ignored (llama.cpp's flash attention)."),
        click.option("--no-mmap", "no_mmap", is_flag=True, default=False, expose_value=False, callback=_ignored_cb,
                     help="Ignored (llmtk always memory-maps)."),
        click.option("-ot", "--override-tensor", "override_tensor", metavar="PATTERN", multiple=True,
                     expose_value=False, callback=_ignored_cb, help="Ignored (llama.cpp's tensor placement)."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def require_model(path: str | os.PathLike, *, what: str = "model") -> Path:
    """Check that `path` is a GGUF model (not an imatrix or another GGUF; any shard of a split
    model, whose shards are all checked) before any work; the error names the file."""
    from llmtk.ggufio.constants import Key
    from llmtk.ggufio.shards import open_gguf

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: {what} file not found")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, expected a GGUF {what} file")
    with open_gguf(p) as r:  # any shard of a split model: every shard is checked, kv is the first's
        kind, arch = r.kv.get(Key.TYPE), r.kv.get(Key.ARCHITECTURE)
        first = r.path
    if kind is not None and kind != "model":
        hint = " (an importance matrix: pass it as --imatrix)" if kind == "imatrix" else ""
        raise InputError(f"{first}: is a GGUF of general.type {kind!r}, not a model{hint}")
    if arch is None:
        raise InputError(f"{first}: has no {Key.ARCHITECTURE}: not a GGUF model")
    return p


@contextlib.contextmanager
def model_threads(threads: int | None, **model_opts) -> Iterator[None]:
    """Make every ModelRunner built inside the block use `threads` and `model_opts` (cache types).

    For library calls that build their own runner and take no thread argument
    (`compute_imatrix`); the Model's thread count is fixed when it is built."""
    opts = {k: v for k, v in dict(threads=threads, **model_opts).items() if v is not None}
    if not opts:
        yield
        return
    from llmtk.evals import runner as R

    base = R.ModelRunner

    class _Runner(base):  # type: ignore[misc, valid-type]
        def __init__(self, model_path, **kw):
            super().__init__(model_path, **{**opts, **kw})

    R.ModelRunner = _Runner
    try:
        yield
    finally:
        R.ModelRunner = base


def write_text(path: str | os.PathLike, text: str) -> Path:
    """An output text file (JSON, CSV, JUnit, Markdown), atomically; stops first on a swallowed Ctrl-C."""
    from llmtk.cli import interrupt

    interrupt.check()
    return write_text_atomic(path, text)


@contextlib.contextmanager
def staged_file(path: str | os.PathLike | None) -> Iterator[Path | None]:
    """A unique temporary path beside `path` for a library writer; renamed onto `path` when the
    block ends normally, removed otherwise. Stale temporaries of killed runs are removed first."""
    if path is None:
        yield None
        return
    from llmtk.cli import interrupt

    from llmtk.outputs import writing

    clean_stale_temps(path)
    tmp = temp_path(path)
    try:
        with writing(path):
            yield tmp
        interrupt.check()
        replace_into(tmp, path)
    finally:
        remove_quietly(tmp)  # library writers remove their own temporaries of `tmp`


@contextlib.contextmanager
def staged_folder(path: str | os.PathLike | None) -> Iterator[Path | None]:
    """A temporary folder beside `path`; its files are moved into `path` when the block ends
    normally, the folder removed otherwise."""
    if path is None:
        yield None
        return
    from llmtk.cli import interrupt

    target = Path(path)
    if not target.parent.exists():
        from llmtk.outputs import writing

        with writing(target.parent):
            target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(target)
    tmp = temp_path(target, folder=True)
    try:
        yield tmp
        interrupt.check()
        move_folder_contents(tmp, target)
    finally:
        remove_quietly(tmp)
