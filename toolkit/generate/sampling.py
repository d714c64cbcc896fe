"""llama.cpp's sampler chain over one row of logits: penalties, top-k, typical, top-p, min-p,
temperature, then a draw (`common_sampler_init` in common/sampling.cpp with the default
`samplers` order; each step follows its `llama_sampler_*_apply` in src/llama-sampler.cpp).

The candidates are `(ids, logits)` in llama.cpp's order plus its `sorted` flag, because the
order decides which token a draw lands on. The draw is `llama_sampler_dist`: probabilities
`expf(l - max)` summed in double, one `std::uniform_real_distribution<double>` number from a
`std::mt19937` seeded like llama.cpp (libstdc++'s `generate_canonical`: two 32-bit outputs), so a
seed picks the same token as llama.cpp from the same logits. `temp <= 0` keeps only the first
largest logit (greedy), still drawing once so the generator stays aligned.
"""
from __future__ import annotations

import math
import os
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np
from numba import njit
import numpy.typing as npt
from llmtk.errors import InputError

F32 = np.float32
LLAMA_DEFAULT_SEED = 0xFFFFFFFF


@dataclass
class SamplerParams:
    """llama.cpp's `common_params_sampling` defaults (common/common.h)."""

    temp: float = 0.8               # <= 0: greedy
    top_k: int = 40                 # <= 0: the whole vocabulary
    top_p: float = 0.95             # 1.0: off
    min_p: float = 0.05             # 0.0: off
    typical_p: float = 1.0          # 1.0: off
    repeat_penalty: float = 1.0     # 1.0: off
    repeat_last_n: int = 64         # 0: off, -1: every token seen
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    min_keep: int = 0
    seed: int = -1                  # -1 (LLAMA_DEFAULT_SEED): a random seed

    def check(self) -> None:
        if self.repeat_last_n < -1:
            raise InputError(f"repeat_last_n {self.repeat_last_n} must be >= -1 (-1: all tokens)")
        if self.min_keep < 0:
            raise InputError(f"min_keep {self.min_keep} must be >= 0")
        for name in ("temp", "top_p", "min_p", "typical_p", "repeat_penalty"):
            if not math.isfinite(getattr(self, name)):
                raise InputError(f"{name} {getattr(self, name)} must be a finite number")


class Mt19937Uniform:
    """`std::uniform_real_distribution<double>(0, 1)` over `std::mt19937(seed)` (libstdc++)."""

    def __init__(self, seed: int) -> None:
        seed &= 0xFFFFFFFF
        if seed == LLAMA_DEFAULT_SEED:
            seed = int.from_bytes(os.urandom(4), "little")
        self.seed = seed
        # RandomState(int) seeds MT19937 with init_genrand, as std::mt19937(seed) does
        self._rs = np.random.RandomState(seed)

    def __call__(self) -> float:
        g0, g1 = (int(x) for x in self._rs.randint(0, 2**32, size=2, dtype=np.uint32))
        r = (float(g0) + float(g1) * 4294967296.0) / 18446744073709551616.0
        return r if r < 1.0 else math.nextafter(1.0, 0.0)


@njit(cache=True, nogil=True)
def _top_k_order(logits, k):
    """Positions of the k largest logits, descending, ties in position order: one pass with a
    min-heap of k (most logits fail one comparison with its root), where a partition of a 262k
    vocabulary took 3 ms a token. Worst-ranked root: the smallest logit, the latest position
    among equals, so equal logits at the boundary keep the earliest positions."""
    hv = np.empty(k, dtype=np.float32)
    hi = np.empty(k, dtype=np.int64)
    size = 0
    for i in range(logits.size):
        v = logits[i]
        if size < k:  # push, sift up
            j = size
            size += 1
            while j > 0:
                parent = (j - 1) // 2
                if hv[parent] < v or (hv[parent] == v and hi[parent] > i):
                    break
                hv[j], hi[j] = hv[parent], hi[parent]
                j = parent
            hv[j], hi[j] = v, i
        elif v > hv[0]:  # replace the root, sift down
            j = 0
            while True:
                c = 2 * j + 1
                if c >= k:
                    break
                if c + 1 < k and (hv[c + 1] < hv[c] or (hv[c + 1] == hv[c] and hi[c + 1] > hi[c])):
                    c += 1
                if v < hv[c] or (v == hv[c] and i > hi[c]):
                    break
                hv[j], hi[j] = hv[c], hi[c]
                j = c
            hv[j], hi[j] = v, i
    order = np.argsort(hi[:size])          # position order, then a stable sort by logit
    hv2, hi2 = hv[:size][order], hi[:size][order]
    return hi2[np.argsort(-hv2, kind="mergesort")]


class Candidates:
    """llama_token_data_array: token ids and logits (float32) in the current order."""

    def __init__(self, ids: npt.NDArray[np.int64], logits: npt.NDArray[np.float32], is_sorted: bool = False):
        self.ids, self.logits, self.sorted = ids, logits, is_sorted

    @classmethod
    def from_logits(cls, logits: npt.ArrayLike) -> Candidates:
        row = np.array(logits, dtype=F32).reshape(-1)
        return cls(np.arange(row.size, dtype=np.int64), row)

    def __len__(self) -> int:
        return int(self.ids.size)

    def take(self, order: npt.NDArray[np.int64], is_sorted: bool) -> None:
        self.ids, self.logits, self.sorted = self.ids[order], self.logits[order], is_sorted

    def sort(self, k: int | None = None) -> None:
        """The top `k` (all when None) by logit, descending (stable: ties keep their order)."""
        n = len(self)
        k = n if k is None else min(k, n)
        if k < n:
            order = _top_k_order(self.logits, k)
        else:
            order = np.argsort(-self.logits, kind="stable")
        self.take(order, True)

    def probs(self) -> npt.NDArray[np.float32]:
        """llama_sampler_softmax_impl: expf(l - max) / sum, in float32."""
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.exp(self.logits - self.logits.max(), dtype=F32)
            return p / p.sum(dtype=F32)


# -- the chain's steps, each as llama.cpp's apply ----------------------------------------------

def apply_penalties(c: Candidates, counts: Counter, repeat: float, freq: float, present: float) -> None:
    """llama_sampler_penalties_apply: a seen token's logit is divided by `repeat` when positive,
    multiplied when not, then lowered by count * freq + present."""
    if not counts:
        return
    seen = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    n = np.fromiter(counts.values(), dtype=F32, count=len(counts))
    pos = np.full(int(max(seen.max(), c.ids.max())) + 1, -1, dtype=np.int64)
    pos[c.ids] = np.arange(len(c))
    at = pos[seen]
    keep = at >= 0
    at, n = at[keep], n[keep]
    lg = c.logits[at]
    lg = np.where(lg <= 0, lg * F32(repeat), lg / F32(repeat)).astype(F32)
    c.logits = c.logits.copy()
    c.logits[at] = lg - (n * F32(freq) + F32(present))
    c.sorted = False


def apply_top_k(c: Candidates, k: int) -> None:
    if k <= 0:
        return
    k = min(k, len(c))
    if not c.sorted:
        c.sort(k)
    else:
        c.take(np.arange(k), True)


def apply_typical(c: Candidates, p: float, min_keep: int = 0) -> None:
    """Locally typical sampling: keep the tokens whose -log p is closest to the entropy until
    their mass exceeds p (strictly)."""
    if p >= 1.0:
        return
    if not c.sorted:
        c.sort()
    probs = c.probs()
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.log(probs)
        entropy = F32(-(probs * logp).sum(dtype=F32))
        shifted = np.abs(-logp - entropy)
    order = np.argsort(shifted, kind="stable")
    cum = np.cumsum(probs[order], dtype=F32)
    last = len(order)
    for i in np.flatnonzero(cum > F32(p)):
        if min_keep == 0 or i >= min_keep - 1:
            last = int(i) + 1
            break
    c.take(order[:last], False)


def apply_top_p(c: Candidates, p: float, min_keep: int = 0) -> None:
    """Nucleus: the most likely tokens until their float32 cumulative mass reaches p."""
    if p >= 1.0:
        return
    probs = c.probs()
    if not c.sorted:
        order = np.argsort(-c.logits, kind="stable")
        c.take(order, True)
        probs = probs[order]
    cum = np.cumsum(probs, dtype=F32)
    last = len(c)
    for i in np.flatnonzero(cum >= F32(p)):
        if i + 1 >= min_keep:
            last = int(i) + 1
            break
    c.take(np.arange(last), True)


def apply_min_p(c: Candidates, p: float, min_keep: int = 0) -> None:
    """Keep the tokens whose probability is at least p times the largest: logit >= max + logf(p)."""
    if p <= 0.0 or not len(c):
        return
    if not c.sorted:
        min_logit = F32(c.logits.max()) + F32(math.log(p))
        keep = np.flatnonzero(c.logits >= min_logit)
        if keep.size and keep.size >= min_keep:
            c.take(keep, False)
            return
        c.sort()
    min_logit = F32(c.logits[0]) + F32(math.log(p))
    i = 1
    while i < len(c) and not (c.logits[i] < min_logit and i >= min_keep):
        i += 1
    c.take(np.arange(i), True)


def apply_temp(c: Candidates, temp: float) -> None:
    """Divide by temp; temp <= 0 keeps only the first largest logit finite (greedy)."""
    if not len(c):
        return
    if temp <= 0.0:
        best = int(np.argmax(c.logits))
        lg = np.full(len(c), -np.inf, dtype=F32)
        lg[best] = c.logits[best]
        c.logits = lg
        return
    c.logits = (c.logits / F32(temp)).astype(F32)


def draw(c: Candidates, rng: Mt19937Uniform) -> int | None:
    """llama_sampler_dist_apply: index into `c` of the drawn token (None when empty)."""
    n = len(c)
    if n == 0:
        return None
    rnd = rng()
    if n == 1:
        return 0
    p = np.exp(c.logits - c.logits.max(), dtype=F32).astype(np.float64)
    cum = np.cumsum(p)
    i = int(np.searchsorted(cum, cum[-1] * rnd, side="left"))
    return min(i, n - 1)


class Sampler:
    """The chain with its state: the penalty window and the random generator.

    `accept(id)` records a token (prompt tokens too, as llama-cli does, so the window sees them);
    `sample(logits)` runs the chain over one row and returns the chosen id (None when no token
    has a finite logit).
    """

    def __init__(self, params: SamplerParams) -> None:
        params.check()
        self.params = params
        self.rng = Mt19937Uniform(params.seed)
        self._prev: deque[int] = deque()
        self._counts: Counter = Counter()

    @property
    def penalties_on(self) -> bool:
        p = self.params
        return p.repeat_last_n != 0 and not (p.repeat_penalty == 1.0 and p.frequency_penalty == 0.0
                                              and p.presence_penalty == 0.0)

    def accept(self, tid: int) -> None:
        n = self.params.repeat_last_n
        if n == 0:
            return
        self._counts[tid] += 1
        if n > 0 and len(self._prev) >= n:
            old = self._prev.popleft()
            self._counts[old] -= 1
            if self._counts[old] == 0:
                del self._counts[old]
        self._prev.append(tid)

    def chain(self, c: Candidates) -> None:
        """Every step but the draw, in llama.cpp's default order."""
        p = self.params
        if self.penalties_on:
            apply_penalties(c, self._counts, p.repeat_penalty, p.frequency_penalty, p.presence_penalty)
        apply_top_k(c, p.top_k)
        apply_typical(c, p.typical_p, p.min_keep)
        apply_top_p(c, p.top_p, p.min_keep)
        apply_min_p(c, p.min_p, p.min_keep)
        apply_temp(c, p.temp)

    def sample(self, logits: npt.ArrayLike, allowed: npt.NDArray[np.bool_] | None = None) -> int | None:
        c = Candidates.from_logits(logits)
        if allowed is not None and not allowed.any():
            self.rng()
            return None
        if allowed is not None:
            c.logits[~allowed] = -np.inf
        # tokens masked to -inf stay candidates (as in llama.cpp) but can never be drawn
        self.chain(c)
        finite = np.isfinite(c.logits)
        if not finite.any():
            self.rng()
            return None
        if not finite.all():
            c.take(np.flatnonzero(finite), c.sorted)
        i = draw(c, self.rng)
        return None if i is None else int(c.ids[i])
