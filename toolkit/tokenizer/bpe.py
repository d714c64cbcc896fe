"""Byte-pair merging of one pre-tokenized word, as llama.cpp's `llm_tokenizer_bpe_session`.

The word starts as one symbol per character; the adjacent pair with the lowest merge rank (then the
leftmost) is merged until no ranked pair is left. A final symbol that is not a token falls back to
its single-byte tokens. Results are cached per word: the same word always gives the same ids.
"""
from __future__ import annotations

import heapq

_CACHE_LIMIT = 1 << 17


class BPEModel:
    """Merge ranks plus the vocabulary lookup that turns merged symbols into ids."""

    def __init__(self, token_to_id: dict[str, int], merges: list[str], *, ignore_merges: bool,
                 byte_fallback_hex: bool, newline_runs_whole: bool = False) -> None:
        self.token_to_id = token_to_id
        self.ranks: dict[tuple[str, str], int] = {}
        for rank, merge in enumerate(merges):
            cut = merge.find(" ", 1)
            pair = (merge[:cut], merge[cut + 1:]) if cut >= 0 else ("", "")
            self.ranks.setdefault(pair, rank)      # the first rank of a duplicated pair wins
        self.ignore_merges = ignore_merges
        self.byte_fallback_hex = byte_fallback_hex    # "<0x0A>" byte tokens (SPM-style BPE)
        self.newline_runs_whole = newline_runs_whole  # gemma4: a run of newlines that is a token
        self._cache: dict[str, tuple[int, ...]] = {}

    def encode_word(self, word: str) -> tuple[int, ...]:
        ids = self._cache.get(word)
        if ids is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            ids = self._cache[word] = tuple(self._encode_word(word))
        return ids

    def _encode_word(self, word: str) -> list[int]:
        tid = self.token_to_id.get(word)
        if tid is not None and (self.ignore_merges or (self.newline_runs_whole and not word.strip("\n"))):
            return [tid]
        syms = list(word)
        n = len(syms)
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        ranks = self.ranks
        heap = []
        for i in range(n - 1):
            r = ranks.get((syms[i], syms[i + 1]))
            if r is not None:
                heap.append((r, i, i + 1, syms[i] + syms[i + 1]))
        heapq.heapify(heap)

        def push(left: int, right: int) -> None:
            if left >= 0 and right >= 0:
                r = ranks.get((syms[left], syms[right]))
                if r is not None:
                    heapq.heappush(heap, (r, left, right, syms[left] + syms[right]))

        while heap:
            _, left, right, text = heapq.heappop(heap)
            a, b = syms[left], syms[right]
            if not a or not b or a + b != text:   # stale: one side has merged since
                continue
            syms[left] = text
            syms[right] = ""
            after = nxt[right]
            nxt[left] = after
            if after >= 0:
                prv[after] = left
            push(prv[left], left)
            push(left, after)

        out = []
        i = 0
        while i != -1:
            sym = syms[i]
            tid = self.token_to_id.get(sym)
            if tid is not None:
                out.append(tid)
            else:
                out.extend(self._byte_tokens(sym))
            i = nxt[i]
        return out

    def _byte_tokens(self, sym: str) -> list[int]:
        out = []
        for b in sym.encode("utf-8", "surrogatepass"):
            if self.byte_fallback_hex:
                tid = self.token_to_id.get(f"<0x{b:02X}>")
            else:
                # llama.cpp looks the raw byte up as a one-byte string: only ASCII can match
                tid = self.token_to_id.get(chr(b)) if b < 0x80 else None
            if tid is not None:
                out.append(tid)
        return out
