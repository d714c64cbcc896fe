"""Milliseconds per grammar token mask over a real vocabulary, at several positions of a text.

Run: python benchmarks/grammar_mask.py [--model PATH] [--repeat 5]

For the json and arithmetic grammars, feeds a sample text and at a few prefixes of it times
`TokenMasker.mask`: *cold* (the first mask of that grammar state, the prefixes visited in order by
one fresh `Automaton`: new byte transitions are computed in Python) and *warm* (the state's
transitions are in the table, the per-state mask cache cleared: the level-by-level NumPy walk of
the token trie alone); each is the best of `--repeat` runs (a fresh automaton per cold run). Also
prints the one-off cost of building the token trie. Default vocabulary: the embedded SmolLM2-135M
(49,152 tokens).

Measured (2-core CPU, best of 5, cold / warm ms): SmolLM2 json 1.2-2.9 / 0.7-0.9, arithmetic
0.2-0.5 / 0.1-0.2; gemma-3-270m (262,144 tokens) json 4.3-6.7 / 3.6-3.8, arithmetic 0.5-1.4 /
0.4-1.0. Before partial UTF-8 sequences were interned by the classes they match and transitions
computed by byte groups, a cold mask inside a JSON string cost 74-89 ms on gemma-3 (SmolLM2 3-3.6).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

CASES = {
    "json": '{"name": "Ada Lovelace", "born": 1815, "tags": ["math", "poet\\u00e9"], "ok": true}',
    "arithmetic": "(12.5 + 3) * -4 / (7 - 2.25) + 100",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="GGUF whose vocabulary is masked (default: SmolLM2)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    from llmtk.grammar import Automaton, Matcher, TokenMasker, TokenTrie, parse, shipped
    from llmtk.resources import smollm2_path
    from llmtk.tokenizer import Tokenizer

    tok = Tokenizer.from_gguf(args.model or smollm2_path())
    pieces = [tok.token_to_piece(i) for i in range(tok.n_vocab)]
    t0 = time.perf_counter()
    trie = TokenTrie(pieces)
    print(f"vocabulary {tok.n_vocab} tokens, trie {trie.n_nodes} nodes, {len(trie.levels)} levels, "
          f"built in {1e3 * (time.perf_counter() - t0):.0f} ms")
    print(f"{'grammar':<11} {'prefix':>6}  {'cold ms':>8}  {'warm ms':>8}  {'allowed':>7}  next text")
    for name, text in CASES.items():
        grammar = parse(shipped(name).read_text())
        cuts = sorted({0, 1, len(text) // 4, len(text) // 2, 3 * len(text) // 4, len(text)})
        cold = {cut: float("inf") for cut in cuts}
        warm = dict(cold)
        for _ in range(args.repeat):
            masker = TokenMasker(Automaton(grammar), pieces, tok.eog_ids, trie=trie)
            for cut in cuts:
                m = Matcher(masker.automaton)
                assert m.accept_text(text[:cut]), (name, cut)
                t0 = time.perf_counter()
                masker.mask(m)
                cold[cut] = min(cold[cut], time.perf_counter() - t0)
                masker._cache.clear()
                t0 = time.perf_counter()
                masker.mask(m)
                warm[cut] = min(warm[cut], time.perf_counter() - t0)
                masker._cache.clear()
        for cut in cuts:
            m = Matcher(masker.automaton)
            m.accept_text(text[:cut])
            print(f"{name:<11} {cut:>6}  {1e3 * cold[cut]:8.2f}  {1e3 * warm[cut]:8.2f}  "
                  f"{int(masker.mask(m).sum()):>7}  {text[cut:cut + 12]!r}")


if __name__ == "__main__":
    main()
