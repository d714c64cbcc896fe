"""The sampler's top-k selection (a min-heap pass) against a full sort: ties keep position order."""
from __future__ import annotations

import numpy as np
import pytest

from llmtk.generate.sampling import Candidates, _top_k_order


@pytest.mark.parametrize("seed", range(6))
def test_top_k_order_is_the_stable_sort_prefix(seed):
    rng = np.random.default_rng(seed)
    for _ in range(50):
        n = int(rng.integers(1, 2000))
        k = int(rng.integers(1, n + 1))
        x = rng.integers(-4, 4, n).astype(np.float32) if seed % 2 else rng.standard_normal(n).astype(np.float32)
        x[rng.integers(0, n, n // 4)] = -np.inf   # grammar-masked tokens
        want = np.lexsort((np.arange(n), -x))[:k]
        np.testing.assert_array_equal(_top_k_order(x, k), want)


def test_candidates_sort_k_keeps_ids_and_logits_together():
    logits = np.array([0.5, 2.0, 2.0, -1.0, 3.0], np.float32)
    c = Candidates.from_logits(logits)
    c.sort(3)
    assert c.ids.tolist() == [4, 1, 2] and c.logits.tolist() == [3.0, 2.0, 2.0] and c.sorted
