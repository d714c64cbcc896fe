"""llama-imatrix's files of MoE models (../shared/convert2/<arch>/quantize-w256/imatrix.gguf):
per-expert sums (in_sum2 ne [n_cols, n_expert]) and per-expert counts (ne [1, n_expert]) read and
written back byte for byte, and the legacy `.dat`, which keeps one call count per entry, written
as llama-imatrix writes it (live check against llama-imatrix when a build is present)."""
from __future__ import annotations

import filecmp
import subprocess

import numpy as np
import pytest

from conftest import absent_reference, shared_path
from llamacpp_tools import llama_tool

from llmtk.ggufio import GGUFReader
from llmtk.ggufio.constants import Key
from llmtk.ggufio.imatrix_file import read_imatrix, write_imatrix_dat, write_imatrix_gguf

FOLDERS = sorted(p.parent for p in shared_path("convert2").glob("*/quantize-w256/imatrix.gguf"))


def _folders() -> list:
    out = [pytest.param(f, id=f.parent.name) for f in FOLDERS]
    return out or absent_reference(shared_path("convert2", "*", "quantize-w256", "imatrix.gguf"))


def _n_expert(folder) -> int:
    with GGUFReader(next(folder.glob("tiny-*-w256-f16.gguf"))) as r:
        arch = r.kv[Key.ARCHITECTURE]
        return int(r.kv[f"{arch}.expert_count"])


@pytest.mark.parametrize("folder", _folders())
def test_moe_imatrix_gguf_round_trips_byte_for_byte(shared_dir, tmp_path, folder):
    src = folder / "imatrix.gguf"
    im = read_imatrix(src)
    experts = {n: e for n, e in im.entries.items() if "_exps." in n}
    assert experts and all(e.n_mat == _n_expert(folder) for e in experts.values())
    # the routing is uneven: experts saw different numbers of tokens
    assert any(len(set(e.counts.tolist())) > 1 for e in experts.values())
    assert all(e.n_mat == 1 for n, e in im.entries.items() if n not in experts)
    out = write_imatrix_gguf(tmp_path / "rt.gguf", im)
    assert filecmp.cmp(out, src, shallow=False)


@pytest.mark.parametrize("folder", _folders())
def test_moe_imatrix_dat_keeps_the_per_expert_means(shared_dir, tmp_path, folder):
    """The .dat stores mean * ncall per column with ncall = ceil(max count / chunk size): each
    expert's own mean survives, and a .dat read and written again is the same bytes."""
    im = read_imatrix(folder / "imatrix.gguf")
    dat = write_imatrix_dat(tmp_path / "a.dat", im)
    back = read_imatrix(dat)
    assert back.is_legacy and back.chunk_count == im.chunk_count and back.datasets == im.datasets[-1:]
    means, legacy = im.means(), back.means()
    assert legacy.keys() == means.keys()
    for name, e in im.entries.items():
        assert back.entries[name].counts.tolist() == [-(-int(e.counts.max()) // im.chunk_size)]
        np.testing.assert_allclose(legacy[name], means[name], rtol=2e-7)
    assert filecmp.cmp(write_imatrix_dat(tmp_path / "b.dat", back), dat, shallow=False)


@pytest.mark.parametrize("folder", _folders())
def test_moe_imatrix_conversions_match_llama_imatrix(shared_dir, tmp_path, folder):
    """`llmtk imatrix --in-file` against `llama-imatrix --in-file` (no text: combine and save only)
    for gguf -> dat, dat -> gguf, dat -> dat and gguf -> gguf, with and without `-c 64`."""
    from click.testing import CliRunner

    from llmtk.cli import main

    tool = llama_tool("llama-imatrix")
    model = next(folder.glob("tiny-*-w256-f16.gguf"))
    src = folder / "imatrix.gguf"
    # (name, input, extra arguments); inputs named by a previous case are its llama-imatrix output
    cases = [("g2d.dat", src, ["--output-format", "dat"]), ("g2d64.dat", src, ["--output-format", "dat", "-c", "64"]),
             ("d2g.gguf", "g2d64.dat", ["-c", "64"]), ("d2d.dat", "g2d64.dat", ["--output-format", "dat", "-c", "64"]),
             ("g2g.gguf", src, [])]
    for out, inp, extra in cases:
        inp = tmp_path / f"ref-{inp}" if isinstance(inp, str) else inp
        ref, ours = tmp_path / f"ref-{out}", tmp_path / f"ours-{out}"
        subprocess.run([str(tool), "-m", str(model), "--in-file", str(inp), *extra, "-o", str(ref)],
                       check=True, capture_output=True)
        res = CliRunner().invoke(main, ["imatrix", "-m", str(model), "--in-file", str(inp), *extra, "-o", str(ours)])
        assert res.exit_code == 0, res.output
        assert filecmp.cmp(ours, ref, shallow=False), out
