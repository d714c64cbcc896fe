"""llmtk.outputs: staged files end with the mode a plainly created file gets."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from llmtk.outputs import replace_into, temp_path, write_bytes_atomic


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_staged_files_get_the_umask_mode_not_mkstemps_0600(tmp_path: Path) -> None:
    """`temp_path` (mkstemp) makes 0600 files; renamed into place they must read like any other
    output (base.kld beside the 0644 models of a shared sweep folder)."""
    old = os.umask(0o022)
    try:
        tmp = temp_path(tmp_path / "base.kld")
        assert _mode(tmp) == 0o600
        tmp.write_bytes(b"x")
        out = replace_into(tmp, tmp_path / "base.kld")
        assert _mode(out) == 0o644
        assert _mode(write_bytes_atomic(tmp_path / "a.json", b"{}")) == 0o644
    finally:
        os.umask(old)
