"""llama.cpp's samplers on hand-made logits, against hand-computed results (src/llama-sampler.cpp)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from llmtk.errors import InputError
from llmtk.generate.sampling import (
    Candidates,
    Mt19937Uniform,
    Sampler,
    SamplerParams,
    apply_min_p,
    apply_penalties,
    apply_temp,
    apply_top_k,
    apply_top_p,
    apply_typical,
    draw,
)

# probabilities 0.5, 0.3, 0.15, 0.05 as logits, out of order: ids 2, 0, 3, 1 from most to least likely
PROBS = {2: 0.5, 0: 0.3, 3: 0.15, 1: 0.05}
LOGITS = np.log(np.array([PROBS[i] for i in range(4)], dtype=np.float32))


def cands(logits=LOGITS) -> Candidates:
    return Candidates.from_logits(logits)


def test_top_k_keeps_the_k_largest_sorted():
    c = cands([1.0, 5.0, 3.0, 4.0, 2.0])
    apply_top_k(c, 2)
    assert c.ids.tolist() == [1, 3] and c.sorted
    c = cands([1.0, 5.0, 3.0])
    apply_top_k(c, 0)                        # <= 0: off
    assert c.ids.tolist() == [0, 1, 2] and not c.sorted
    apply_top_k(c, 10)                       # k > size: all, sorted
    assert c.ids.tolist() == [1, 2, 0]


@pytest.mark.parametrize("p, kept", [(0.45, [2]), (0.75, [2, 0]), (0.85, [2, 0, 3]), (0.99, [2, 0, 3, 1]),
                                     (1.0, [0, 1, 2, 3])])
def test_top_p_keeps_the_smallest_set_reaching_p(p, kept):
    c = cands()
    apply_top_p(c, p)
    assert c.ids.tolist() == kept


def test_top_p_min_keep():
    c = cands()
    apply_top_p(c, 0.45, min_keep=3)
    assert c.ids.tolist() == [2, 0, 3]


@pytest.mark.parametrize("p, kept", [(0.05, {0, 1, 2, 3}), (0.2, {2, 0, 3}), (0.5, {2, 0}), (0.9, {2}), (0.0, {0, 1, 2, 3})])
def test_min_p_keeps_tokens_at_least_p_times_the_top(p, kept):
    # thresholds: p * 0.5 -> 0.025, 0.1, 0.25, 0.45
    c = cands()
    apply_min_p(c, p)
    assert set(c.ids.tolist()) == kept


def test_min_p_unsorted_keeps_the_order():
    c = cands()
    apply_min_p(c, 0.2)
    assert c.ids.tolist() == [0, 2, 3] and not c.sorted


@pytest.mark.parametrize("p, kept", [(0.2, [0]), (0.5, [0, 2]), (0.9, [0, 2, 3]), (1.0, [0, 1, 2, 3])])
def test_typical_orders_by_distance_to_the_entropy(p, kept):
    # H = -sum p ln p = 1.1421; |-ln p - H|: p=0.3 -> 0.062, 0.5 -> 0.449, 0.15 -> 0.755, 0.05 -> 1.853
    # keep until the cumulative mass exceeds p (strictly): the top token may be dropped
    c = cands()
    apply_typical(c, p)
    assert c.ids.tolist() == kept


def test_temperature_scales_and_zero_is_greedy():
    c = cands([1.0, 2.0, -4.0])
    apply_temp(c, 0.5)
    np.testing.assert_allclose(c.logits, [2.0, 4.0, -8.0])
    c = cands([1.0, 3.0, 3.0, 2.0])
    apply_temp(c, 0.0)                       # only the first largest stays finite
    assert np.isfinite(c.logits).tolist() == [False, True, False, False]


def test_penalties_divide_positive_multiply_negative_then_subtract():
    c = cands([2.0, -2.0, 1.0, 0.5])
    apply_penalties(c, Counter({0: 2, 1: 1, 3: 1}), repeat=2.0, freq=0.1, present=0.5)
    # 0: 2/2 - (2*0.1 + 0.5); 1: -2*2 - (0.1 + 0.5); 2: unseen; 3: 0.5/2 - 0.6
    np.testing.assert_allclose(c.logits, [0.3, -4.6, 1.0, -0.35], rtol=1e-6)


def test_penalty_window_forgets_old_tokens():
    s = Sampler(SamplerParams(repeat_penalty=2.0, repeat_last_n=2, seed=1))
    for t in (0, 1, 2):
        s.accept(t)
    assert dict(s._counts) == {1: 1, 2: 1}
    off = Sampler(SamplerParams(repeat_last_n=0))
    off.accept(5)
    assert not off._counts


def test_mt19937_uniform_matches_libstdcxx():
    # std::mt19937 rng(42); std::uniform_real_distribution<double> d(0.0f, 1.0f): d(rng), d(rng)
    # printed with %.17g by a g++ build (libstdc++'s generate_canonical takes two 32-bit outputs)
    r = Mt19937Uniform(42)
    assert r() == 0.79654298428784598
    assert r() == 0.18343478789336848


def test_draw_walks_the_cumulative_probabilities_in_order():
    c = cands()
    apply_top_k(c, 40)                       # sorted: ids 2, 0, 3, 1 with cumulative 0.5, 0.8, 0.95, 1
    i = draw(c, Mt19937Uniform(42))          # u = 0.7965 -> second
    assert c.ids[i] == 0


def test_chain_order_top_k_before_temperature():
    # top-k 2 then min-p 0.5 at temperature 1 -> {2}; temperature does not change which survive
    s = Sampler(SamplerParams(temp=5.0, top_k=2, top_p=1.0, min_p=0.7, seed=3))
    assert all(s.sample(LOGITS) == 2 for _ in range(20))


def test_sampling_frequencies_follow_the_probabilities():
    s = Sampler(SamplerParams(temp=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=123))
    n = 4000
    counts = Counter(s.sample(LOGITS) for _ in range(n))
    for tid, p in PROBS.items():
        assert abs(counts[tid] / n - p) < 0.03, (tid, counts[tid] / n, p)


def test_same_seed_same_tokens():
    logits = np.random.default_rng(0).normal(size=1000).astype(np.float32)
    a = [Sampler(SamplerParams(seed=7)).sample(logits) for _ in range(3)]
    s1, s2 = Sampler(SamplerParams(seed=7)), Sampler(SamplerParams(seed=7))
    assert [s1.sample(logits) for _ in range(10)] == [s2.sample(logits) for _ in range(10)]
    assert len(set(a)) == 1


def test_mask_is_respected():
    allowed = np.array([False, True, False, True])
    s = Sampler(SamplerParams(temp=1.0, seed=5))
    assert {s.sample(LOGITS, allowed) for _ in range(50)} <= {1, 3}
    assert Sampler(SamplerParams()).sample(LOGITS, np.zeros(4, bool)) is None


def test_bad_parameters_are_input_errors():
    with pytest.raises(InputError, match="repeat_last_n"):
        SamplerParams(repeat_last_n=-2).check()
    with pytest.raises(InputError, match="temp"):
        SamplerParams(temp=float("nan")).check()
