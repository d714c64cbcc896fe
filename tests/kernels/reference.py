"""Helpers to hold kernels to ggml's own bytes in ../shared/quants/ggml-quants.npz."""
from __future__ import annotations

import numpy as np

from llmtk.ggufio.constants import type_traits


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

    ref = npz[f"dequant/{qtype}/{mode}/{case}/{cols}"]  # parametrised only where it exists
    data = npz[f"output/{qtype}/{mode}/{case}/{cols}"]
    ours = kernels.dequantize(data, qtype, ref.shape)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    # compare bit patterns so that -0.0 vs 0.0 and NaN payloads count too
    if not np.array_equal(ours.view(np.uint32), ref.view(np.uint32)):
        raise AssertionError(f"{qtype} {mode} {case}/{cols}: " + first_difference(ours, ref, qtype))


def reference_params(qtypes: list[str], kind: str) -> list:
    """pytest params (qtype, mode, case, cols) for `kind` "quantize" (ggml's bytes) or "dequantize"
    (ggml's floats, which the file holds at width 256 only), read at collection time from
    `conftest.SHARED`. A type with no reference arrays of that kind is one skipped param that
    says so: it is never a silent pass."""
    import pytest
    from conftest import SHARED

    path = SHARED / "quants" / "ggml-quants.npz"
    if not path.is_file():
        return [pytest.param("", "", "", "", marks=pytest.mark.skip(reason=f"reference data not found at {path}"))]
    npz = np.load(path)
    files = set(npz.files)
    params = []
    for q in qtypes:
        cases = reference_cases(npz, q)
        if kind == "dequantize":
            cases = [c for c in cases if f"dequant/{q}/{'/'.join(c)}" in files]
        if not cases:
            params.append(pytest.param(q, "", "", "", id=f"{q}-no-reference", marks=pytest.mark.skip(
                reason=f"{path.name} holds no {kind} reference for {q}: regenerate it with this type")))
        params += [pytest.param(q, *c, id="-".join((q, *c))) for c in cases]
    return params
