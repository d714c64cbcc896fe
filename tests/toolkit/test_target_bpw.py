"""The --target-bpw solver and candidate sets (toolkit/quantize/target_bpw.py), without a model."""
from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from llmtk.errors import InputError
from llmtk.ggufio.constants import GGMLType as T
from llmtk.quantize.rules import file_type
from llmtk.quantize.target_bpw import (
    FAMILIES, TensorOptions, family_for, parse_candidates, parse_size, solve, tensor_candidates,
    tensor_type_file_text, tensor_type_pattern, weighted_error)


def _random_options(rng, n_tensors: int, n_types: int) -> list[TensorOptions]:
    out = []
    for i in range(n_tensors):
        base = int(rng.integers(1_000, 50_000))
        steps = np.sort(rng.integers(1, 20_000, n_types - 1))
        n_bytes = [base] + [base + int(s) for s in np.cumsum(steps)]
        dmg = np.sort(rng.random(n_types))[::-1] * rng.random() * 10
        out.append(TensorOptions(f"blk.{i}.w", [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K][:n_types], n_bytes,
                                 [float(d) for d in dmg]))
    return out


def _brute_force(opts: list[TensorOptions], budget: int) -> float:
    best = np.inf
    for pick in itertools.product(*[range(len(o.types)) for o in opts]):
        nb = sum(o.n_bytes[c] for o, c in zip(opts, pick))
        if nb <= budget:
            best = min(best, sum(o.damage[c] for o, c in zip(opts, pick)))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_solve_is_exact_and_never_exceeds_the_budget(seed):
    rng = np.random.default_rng(seed)
    opts = _random_options(rng, 5, 3)
    lo, hi = sum(min(o.n_bytes) for o in opts), sum(max(o.n_bytes) for o in opts)
    for budget in np.linspace(lo, hi, 9).astype(int):
        sol = solve(opts, int(budget), resolution=hi - lo)   # unit of 1 byte: the DP is exact
        assert sol.n_bytes <= budget
        assert sol.n_bytes == sum(o.n_bytes[o.types.index(sol.types[o.name])] for o in opts)
        assert sol.damage == pytest.approx(_brute_force(opts, int(budget)), rel=1e-12)


def test_solve_is_monotone_in_the_budget_and_rounds_costs_up():
    rng = np.random.default_rng(7)
    opts = _random_options(rng, 40, 5)
    lo, hi = sum(min(o.n_bytes) for o in opts), sum(max(o.n_bytes) for o in opts)
    last = np.inf
    for budget in np.linspace(lo, hi, 60).astype(int):
        sol = solve(opts, int(budget), resolution=4096)      # coarse units: costs rounded up
        assert sol.n_bytes <= budget
        assert sol.damage <= last + 1e-12
        last = sol.damage
    # rounding each cost up wastes less than one unit per tensor: the best mix needs that much slack
    unit = -(-(hi - lo) // 4096)
    assert solve(opts, hi + len(opts) * unit, resolution=4096).damage == \
        pytest.approx(sum(min(o.damage) for o in opts), rel=1e-12)
    assert solve(opts, lo).n_bytes == lo


def test_a_budget_below_the_smallest_mix_is_refused():
    opts = _random_options(np.random.default_rng(1), 3, 2)
    with pytest.raises(InputError, match="below the smallest mix"):
        solve(opts, sum(min(o.n_bytes) for o in opts) - 1)


def test_candidates_follow_llama_quantize_fallbacks_and_imatrix_rules():
    k = file_type("Q4_K_M")
    # a 576-wide row takes no 256-block type: each K type becomes its 32-block fallback
    assert tensor_candidates("blk.0.attn_q.weight", 576, FAMILIES["k"], k, has_imatrix_entry=False) == \
        [T.Q4_0, T.Q5_0, T.Q5_1, T.Q8_0]
    assert tensor_candidates("blk.0.ffn_down.weight", 1536, FAMILIES["k"], k, has_imatrix_entry=False) == \
        [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q8_0]
    iq = file_type("IQ2_M")
    without = tensor_candidates("blk.0.ffn_down.weight", 1536, FAMILIES["iq"], iq, has_imatrix_entry=False)
    with_im = tensor_candidates("blk.0.ffn_down.weight", 1536, FAMILIES["iq"], iq, has_imatrix_entry=True)
    assert T.IQ2_XXS not in without and T.IQ1_S not in without and T.IQ3_XXS not in without
    assert {T.IQ2_XXS, T.IQ2_XS, T.IQ1_S, T.IQ3_XXS} <= set(with_im)
    # IQ2_S needs no imatrix in ggml, but llama-quantize refuses it without one (tensor_requires_imatrix)
    assert T.IQ2_S not in without
    # the token embedding is exempt from llama-quantize's rule, not from ggml's
    emb = tensor_candidates("token_embd.weight", 1536, FAMILIES["iq"], iq, has_imatrix_entry=False)
    assert T.IQ2_S in emb and T.IQ2_XXS not in emb
    # a type with no fallback that does not fit is dropped; the cheapest comes first
    assert tensor_candidates("blk.0.attn_q.weight", 576, [T.Q1_0, T.Q8_0, T.Q4_0], k,
                             has_imatrix_entry=False) == [T.Q4_0, T.Q8_0]


def test_families_and_parsing():
    assert family_for(file_type("Q3_K_M")) == "k"
    assert family_for(file_type("IQ3_XXS")) == "iq"
    assert family_for(file_type("Q5_0")) == "legacy"
    with pytest.raises(InputError, match="--candidates"):
        family_for(file_type("TQ1_0"))
    assert parse_candidates("q4_k, Q6_K,q4_k") == [T.Q4_K, T.Q6_K]
    assert parse_candidates("iq") == list(FAMILIES["iq"])
    with pytest.raises(InputError, match="unknown ggml type"):
        parse_candidates("Q4_K,Q9_Z")
    assert parse_size("3.2GiB") == int(3.2 * 2**30)
    assert parse_size("850MB") == 850_000_000
    assert parse_size("123456") == 123456
    with pytest.raises(InputError, match="--target-size"):
        parse_size("3 parsecs")


def test_the_tensor_type_file_names_each_tensor_exactly():
    text = tensor_type_file_text({"blk.1.attn_q.weight": T.Q4_K, "token_embd.weight": T.Q8_0})
    assert text == "^blk\\.1\\.attn_q\\.weight$=q4_K\n^token_embd\\.weight$=q8_0\n"
    pat = re.compile(tensor_type_pattern("blk.1.attn_q.weight"))
    assert pat.search("blk.1.attn_q.weight")
    assert not pat.search("blk.11.attn_q.weight") and not pat.search("blk.1.attn_qa.weight")


def test_weighted_error_weights_columns_and_orders_types():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 256)).astype(np.float32) * 0.02
    ones = np.ones(256, np.float32)
    errs = [weighted_error(w, t, ones) for t in (T.Q2_K, T.Q4_K, T.Q6_K, T.Q8_0)]
    assert errs == sorted(errs, reverse=True) and errs[-1] > 0
    half = ones.copy()
    half[128:] = 0
    assert 0 < weighted_error(w, T.Q4_K, half) < weighted_error(w, T.Q4_K, ones)
