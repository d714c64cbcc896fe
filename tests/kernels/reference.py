"""Helpers to hold kernels to ggml's own bytes in ../shared/quants/ggml-quants.npz."""
from __future__ import annotations

import numpy as np

from llmtk.ggufio.constants import parse_ggml_type, type_traits


def reference_cases(npz, qtype: str) -> list[tuple[str, str, str]]:
    """Every (mode, case, cols) the reference file holds for `qtype`."""
    prefix = f"output/{qtype}/"
    return sorted(tuple(k[len(prefix):].split("/")) for k in npz.files if k.startswith(prefix))


def first_difference(ours: np.ndarray, ref: np.ndarray, qtype: str) -> str:
    """Describe the first differing block: where, and both sides' bytes or float bits."""
    tt = type_traits(qtype)
    if ours.dtype == np.uint8:
        flat_o, flat_r = ours.reshape(-1), ref.reshape(-1)
        i = int(np.argmax(flat_o != flat_r))
        b = i // tt.type_size
        sl = slice(b * tt.type_size, (b + 1) * tt.type_size)
        return (f"{np.count_nonzero(flat_o != flat_r)} bytes differ; first at byte {i} (block {b}, "
                f"byte {i % tt.type_size} of {tt.type_size})\n ours: {flat_o[sl].tobytes().hex()}\n ggml: {flat_r[sl].tobytes().hex()}")
    o, r = ours.reshape(-1), ref.reshape(-1)
    bits_o, bits_r = o.view(np.uint32), r.view(np.uint32)
    i = int(np.argmax(bits_o != bits_r))
    return (f"{np.count_nonzero(bits_o != bits_r)} floats differ; first at value {i} (block {i // tt.block_size}): "
            f"ours {o[i]!r} (0x{bits_o[i]:08x}) ggml {r[i]!r} (0x{bits_r[i]:08x})")


def check_quantize(npz, qtype: str, mode: str, case: str, cols: str) -> None:
    from llmtk import kernels

    x = npz[f"input/{case}/{cols}"]
    imatrix = npz[f"imatrix/{cols}"] if mode == "imatrix" else None
    ref = npz[f"output/{qtype}/{mode}/{case}/{cols}"].reshape(x.shape[0], -1)
    ours = kernels.quantize(x, qtype, imatrix=imatrix)
    assert ours.shape == ref.shape
    if not np.array_equal(ours, ref):
        raise AssertionError(f"{qtype} {mode} {case}/{cols}: " + first_difference(ours, ref, qtype))


def check_dequantize(npz, qtype: str, mode: str, case: str, cols: str) -> None:
    from llmtk import kernels

    key = f"dequant/{qtype}/{mode}/{case}/{cols}"
    if key not in npz.files:
        return
    ref = npz[key]
    data = npz[f"output/{qtype}/{mode}/{case}/{cols}"]
    ours = kernels.dequantize(data, qtype, ref.shape)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    # compare bit patterns so that -0.0 vs 0.0 and NaN payloads count too
    if not np.array_equal(ours.view(np.uint32), ref.view(np.uint32)):
        raise AssertionError(f"{qtype} {mode} {case}/{cols}: " + first_difference(ours, ref, qtype))


def parametrize_reference(qtypes: list[str]):
    """(qtype, mode, case, cols) tuples for pytest.mark.parametrize, read from the shared file."""
    import pytest
    from pathlib import Path

    path = Path(__file__).resolve().parents[2].parent / "shared" / "quants" / "ggml-quants.npz"
    if not path.is_file():
        return pytest.mark.parametrize("qtype,mode,case,cols", [pytest.param(
            "", "", "", "", marks=pytest.mark.skip(reason=f"reference data not found at {path}"))])
    npz = np.load(path)
    params = [(q, *c) for q in qtypes for c in reference_cases(npz, q)]
    for q in qtypes:
        assert reference_cases(npz, q), f"no reference arrays for {q} in {path}"
        parse_ggml_type(q)
    return pytest.mark.parametrize("qtype,mode,case,cols", params)
