"""Output paths: checked before any work, written atomically, write failures as `LlmtkError`.

Commands check every output they will write before they start (`check_output_file`,
`check_output_dir`): the folder exists and is writable, the path is not a folder where a file is
expected, and it is not one of the inputs. Text outputs (JSON, CSV, JUnit, Markdown) go through
`write_text_atomic`: a uniquely named temporary file beside the target, renamed over it when
complete, so a full disk, a read-only folder or a kill leaves the old file (or none), never half
of one. Temporary names carry the writer's process id (`.NAME.<pid>.<random>.tmp`), so
`clean_stale_temps` can remove those of processes that are gone without touching a live run's.
Light on purpose (no NumPy): `llmtk --help` imports it.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from llmtk.errors import InputError, LlmtkError

class OutputError(LlmtkError):
    """An output cannot be written: a missing or read-only folder, a full disk (exit 2)."""


def _reason(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


def write_error(path: str | os.PathLike, e: OSError) -> OutputError:
    """The one-line error for an OSError met while writing `path`."""
    return OutputError(f"{path}: cannot write: {_reason(e)}")


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn any OSError inside the block into an `OutputError` naming `path` (or the other file
    the error names, when it is not a temporary beside `path`)."""
    try:
        yield
    except OSError as e:
        other = getattr(e, "filename", None)
        if other is not None and Path(str(other)).parent != Path(path).parent:
            raise OutputError(f"{other}: {_reason(e)}") from None
        raise write_error(path, e) from None


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.abspath(a) == os.path.abspath(b)


def _nearest_existing(p: Path) -> Path:
    p = Path(os.path.abspath(p))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_writable_dir(folder: Path, path: Path, option: str) -> None:
    if not folder.exists():
        raise InputError(f"{option}{path}: folder {folder} does not exist")
    if not folder.is_dir():
        raise InputError(f"{option}{path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{option}{path}: folder {folder} is not writable")


def check_output_file(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike | None] = (),
                      option: str | None = None) -> Path:
    """Check, before any work, that a file can be written at `path`; returns it as a Path.

    Its folder must exist and be writable, `path` must not be a folder, nor an existing file we
    may not replace, nor the same file as one of `inputs`. `option` (e.g. "--json") prefixes the
    message so the user sees which output is meant."""
    p = Path(path)
    opt = f"{option} " if option else ""
    if str(path) == "":
        raise InputError(f"{opt}needs a file name")
    if p.is_dir():
        raise InputError(f"{opt}{p}: is a folder, expected a file name")
    folder = p.parent if str(p.parent) else Path(".")
    _check_writable_dir(folder, p, opt)
    for i in inputs:
        if i is not None and str(i) != "-" and _same_file(p, Path(i)):
            raise InputError(f"{opt}{p}: is also an input; write the output to another file")
    return p


def check_output_dir(path: str | os.PathLike, *, option: str | None = None) -> Path:
    """Check, before any work, that `path` is a writable folder or can be created as one."""
    p = Path(path)
    opt = f"{option} " if option else ""
    if p.exists():
        if not p.is_dir():
            raise InputError(f"{opt}{p}: is a file, expected a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise InputError(f"{opt}{p}: folder is not writable")
        return p
    base = _nearest_existing(p)
    if not base.is_dir():
        raise InputError(f"{opt}{p}: {base} is a file, so the folder cannot be created")
    if not os.access(base, os.W_OK | os.X_OK):
        raise InputError(f"{opt}{p}: cannot create the folder, {base} is not writable")
    return p


def check_distinct(outputs: dict[str, str | os.PathLike | None]) -> None:
    """Two options must not name the same output file (`{"--json": a, "--csv": b}`)."""
    seen: dict[str, str] = {}
    for opt, path in outputs.items():
        if path is None or str(path) == "-":
            continue
        key = os.path.abspath(path)
        if key in seen:
            raise InputError(f"{opt} {path}: the same file as {seen[key]}; give each output its own file")
        seen[key] = opt


def _temp_prefix(p: Path) -> str:
    return f".{p.name}.{os.getpid()}."


def temp_path(path: str | os.PathLike, *, folder: bool = False) -> Path:
    """A new, uniquely named temporary file (or folder) beside `path`, owned by this process."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    with writing(p):
        if folder:
            return Path(tempfile.mkdtemp(prefix=_temp_prefix(p), suffix=".tmp", dir=parent))
        fd, name = tempfile.mkstemp(prefix=_temp_prefix(p), suffix=".tmp", dir=parent)
        os.close(fd)
        return Path(name)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file beside it and a rename; an OSError
    (ENOSPC, EROFS, EACCES) becomes an `OutputError` and leaves neither a temp nor a partial file."""
    p = Path(path)
    clean_stale_temps(p)
    tmp = temp_path(p)
    try:
        with writing(p):
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


def write_text_atomic(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """`write_bytes_atomic` of `text` encoded as UTF-8 (newlines as given)."""
    return write_bytes_atomic(path, text.encode(encoding))


def replace_into(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Rename a finished temporary file onto `dest` (OSError -> OutputError), with the mode a
    plainly created file gets (0666 less the umask): `temp_path`'s mkstemp makes it 0600, which
    would hide the artifact from the other accounts of a shared sweep folder."""
    with writing(dest):
        if os.path.isfile(src) and not os.path.islink(src):
            os.chmod(src, 0o666 & ~_umask())
        os.replace(src, dest)
    return Path(dest)


def move_folder_contents(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Move every file of the finished temporary folder `src` into `dest` (created if needed),
    each by an atomic rename, then remove `src`."""
    s, d = Path(src), Path(dest)
    with writing(d):
        d.mkdir(parents=True, exist_ok=True)
        for f in sorted(s.iterdir()):
            os.replace(f, d / f.name)
        s.rmdir()
    return d


def remove_quietly(path: str | os.PathLike | None) -> None:
    """Remove a temporary file or folder of ours, ignoring every error."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            p.unlink()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or unknown: keep its files
    return True


def clean_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove temporaries beside `path` left by killed runs of ours (`.NAME.<pid>.*.tmp` whose
    process is gone on this machine, and a library writer's own temporary of such a temporary,
    `..NAME.<pid>.*.tmp.<pid>.*.tmp`); a live process's temporaries are kept. Returns those removed."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    pat = re.compile(r"\.+" + re.escape(f"{p.name}.") + r"(\d+)\..*\.tmp\Z")
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for e in entries:
        m = pat.match(e.name)
        if m and not _pid_alive(int(m.group(1))):
            remove_quietly(e)
            removed.append(e)
    return removed
