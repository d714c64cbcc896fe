"""`llmtk imatrix` on the MoE/MLA w256 models (../shared/convert2/<arch>/quantize-w256) against
llama-imatrix's matrix made with the same text and arguments (`-c 64 --chunks 8`): the same
entries, the same per-expert counts (the routing), and every per-column mean within 1%.

glm4moe's reference routes one token of 512 in layer 1 to expert 3 where llmtk picks expert 1
(selection margin 8.9e-5 in sigmoid + bias). That token sits on a near-tie of llama.cpp's own
kernels: llama-imatrix picks expert 1 too with `-fa off` (f32 attention instead of its default
flash attention), which in turn flips tokens of deepseek2 and gpt-oss against their references.
llmtk's attention (f32, f16 KV cache) is neither kernel, so such ties can go either way; the
non-routed entries of glm4moe agree within 5e-4."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import absent_reference, shared_path

from llmtk.cli import main
from llmtk.ggufio.imatrix_file import Imatrix, read_imatrix

ARGS = ("-c", "64", "--chunks", "8")
# reference folders whose llama-imatrix routing sits on a near-tie of llama.cpp's own kernels
NEAR_TIE = {"glm4moe": "one token of 512 routed differently at a 8.9e-5 margin (llama-imatrix -fa off routes it "
                       "as llmtk does)"}


def _folders() -> list:
    out = [pytest.param(p.parent, id=p.parent.parent.name,
                        marks=[pytest.mark.xfail(strict=True, reason=NEAR_TIE[p.parent.parent.name])]
                        if p.parent.parent.name in NEAR_TIE else [])
           for p in sorted(shared_path("convert2").glob("*/quantize-w256/imatrix.gguf"))]
    return out or absent_reference(shared_path("convert2", "*", "quantize-w256", "imatrix.gguf"))


def _ours(folder, shared_dir, out) -> Imatrix:
    model = next(folder.glob("tiny-*-w256-f16.gguf"))
    res = CliRunner().invoke(main, ["imatrix", "-m", str(model), "-f", str(shared_dir / "text" / "pydoc-tutorial.txt"),
                                    *ARGS, "-o", str(out)])
    assert res.exit_code == 0, res.output
    return read_imatrix(out)


def _differences(ours: Imatrix, ref: Imatrix) -> tuple[list[str], float]:
    """(entries whose counts differ, the largest relative difference of a per-column mean)."""
    assert ours.entries.keys() == ref.entries.keys()
    assert (ours.chunk_count, ours.chunk_size) == (ref.chunk_count, ref.chunk_size)
    counts = [n for n, e in ref.entries.items() if ours.entries[n].counts.tolist() != e.counts.tolist()]
    mo, mr = ours.means(), ref.means()
    worst = max(float(np.max(np.abs(mo[k] - mr[k]) / np.abs(mr[k]))) for k in mr)
    return counts, worst


@pytest.mark.parametrize("folder", _folders())
def test_moe_imatrix_matches_llama_imatrix(shared_dir, tmp_path, folder):
    ours, ref = _ours(folder, shared_dir, tmp_path / "im.gguf"), read_imatrix(folder / "imatrix.gguf")
    assert any(e.n_mat > 1 for e in ref.entries.values())      # per-expert entries are compared
    counts, worst = _differences(ours, ref)
    assert counts == [] and worst < 0.01, (counts, worst)
