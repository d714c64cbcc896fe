"""SentencePiece-style merging (`tokenizer.ggml.model = llama`), as llama.cpp's `llm_tokenizer_spm`.

The whole text fragment (spaces already turned into ▁) starts as one symbol per character; the
adjacent pair whose concatenation is a token with the highest score (then the leftmost) is merged
until no pair forms a token. Symbols that are not tokens become byte tokens `<0xXX>`. Merges may
cross word boundaries, so there is no per-word cache: the heap holds the whole fragment.
"""
from __future__ import annotations

import heapq


class SPMModel:
    def __init__(self, token_to_id: dict[str, int], scores: list[float]) -> None:
        self.token_to_id = token_to_id
        self.scores = scores
        self._byte_ids: list[int | None] = [self._lookup_byte(b) for b in range(256)]

    def _lookup_byte(self, b: int) -> int | None:
        tid = self.token_to_id.get(f"<0x{b:02X}>")
        if tid is None:
            tid = self.token_to_id.get(chr(b)) if b < 0x80 else None
        return tid

    def encode(self, text: str, out: list[int]) -> None:
        n = len(text)
        if n == 0:
            return
        token_to_id = self.token_to_id
        scores = self.scores
        start = list(range(n))            # symbol i covers text[start[i]:start[i] + size[i]]
        size = [1] * n
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        heap = []
        for i in range(n - 1):
            tid = token_to_id.get(text[i:i + 2])
            if tid is not None:
                heap.append((-scores[tid], i, i + 1, 2))
        heapq.heapify(heap)

        while heap:
            _, left, right, total = heapq.heappop(heap)
            n_left, n_right = size[left], size[right]
            if n_left == 0 or n_right == 0 or n_left + n_right != total:
                continue
            size[left] = total
            size[right] = 0
            after = nxt[right]
            nxt[left] = after
            if after >= 0:
                prv[after] = left
            before = prv[left]
            if before >= 0:
                s = start[before]
                tid = token_to_id.get(text[s:s + size[before] + total])
                if tid is not None:
                    heapq.heappush(heap, (-scores[tid], before, left, size[before] + total))
            if after >= 0:
                s = start[left]
                tid = token_to_id.get(text[s:s + total + size[after]])
                if tid is not None:
                    heapq.heappush(heap, (-scores[tid], left, after, total + size[after]))

        i = 0
        while i != -1:
            s = start[i]
            piece = text[s:s + size[i]]
            tid = token_to_id.get(piece)
            if tid is not None:
                out.append(tid)
            else:
                for b in _utf8(piece):
                    bid = self._byte_ids[b]
                    if bid is None:
                        raise KeyError(f"byte 0x{b:02X} has no token")
                    out.append(bid)
            i = nxt[i]


def _utf8(piece: str) -> bytes:
    """UTF-8 bytes of a symbol; bytes of a text read with surrogateescape come back unchanged."""
    try:
        return piece.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return piece.encode("utf-8", "surrogatepass")
