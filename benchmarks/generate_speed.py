"""Generation tokens/s, unconstrained and grammar-constrained, as ratios to the forward pass's tg.

Run: python benchmarks/generate_speed.py [--model PATH ...] [-n 128] [-t THREADS] [--reps 3]

For each model (default: the embedded SmolLM2-135M Q4_1), in one process: `tg` is `llmtk bench
forward`'s figure (n single-token forward steps through the KV cache, nothing else); then
`llmtk.generate` makes n tokens from a prompt, unconstrained (end-of-generation masked) and
constrained by a JSON Schema that cannot end before (an array of at least 64 short strings),
greedy and with llama.cpp's default sampler chain (seeded), the grammar either checked on the
sampled token first (llama.cpp's default: a mask only when it is refused) or masked on every step
(`grammar_first`). Reported: tokens/s of generation (steps after the prompt: forward + sampling +
grammar) on the first run (grammar states and masks built as met) and the best of --reps later
runs (masks of states seen before are cached), the ratio to tg, masks computed on the first run
and their mean milliseconds.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

PROMPT = "Describe a person as a JSON object with name, age and hobbies:"


def tg_tps(model, n: int, reps: int) -> float:
    toks = np.random.default_rng(0).integers(0, model.n_vocab, n).astype(np.int32)
    best = float("inf")
    for _ in range(reps + 1):  # the first run warms up
        cache = model.new_cache(n)
        t0 = time.perf_counter()
        for i in range(n):
            model.forward(toks[i:i + 1], cache, all_logits=False)
        best = min(best, time.perf_counter() - t0)
    return n / best


def gen_row(model, n: int, reps: int, **kw) -> dict:
    """The first generation (grammar state table and masks built as they are met; the vocabulary's
    trie is built beforehand) and the best of `reps` later ones (masks of states seen before are
    cached: what a server repeating a grammar sees)."""
    from llmtk import generate as gen_mod

    gen_mod._MASKERS.clear()
    runs = []
    for _ in range(reps + 1):
        st: dict = {}
        t0 = time.perf_counter()
        count = sum(1 for _ in gen_mod.generate(model, PROMPT, n_predict=n, stats=st, **kw))
        wall = time.perf_counter() - t0 - st["t_prompt"]
        runs.append((count / wall, count, st))
    first, best = runs[0], max(runs[1:], key=lambda r: r[0])
    return {"first tok/s": first[0], "tok/s": best[0], "tokens": best[1], "masks": first[2]["n_mask"],
            "first mask ms": 1e3 * first[2]["t_mask"] / max(1, first[2]["n_mask"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="GGUF file (repeatable; default: the embedded SmolLM2)")
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-t", "--threads", type=int, default=None)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    from llmtk.model import load_model
    from llmtk.resources import smollm2_path

    from llmtk.generate import grammar_masker, model_tokenizer
    from llmtk.grammar.json_schema import json_schema_to_gbnf

    # a schema that keeps the model writing for n tokens: the grammar cannot end before
    schema = {"type": "array", "items": {"type": "string", "maxLength": 24}, "minItems": 64}
    grammar = json_schema_to_gbnf(schema)
    for path in args.model or [str(smollm2_path())]:
        with load_model(path, threads=args.threads) as m:
            t0 = time.perf_counter()
            grammar_masker("root ::= [a]", model_tokenizer(m))  # the vocabulary's trie, once per tokenizer
            trie_s = time.perf_counter() - t0
            tg = tg_tps(m, args.n, args.reps)
            print(f"\n{path}: tg{args.n} {tg:.1f} t/s ({m.threads} threads); vocabulary trie built in {trie_s:.2f} s")
            print("| generation (n=%d) | first run tok/s | later runs tok/s | / tg | tokens | masks (first run) | "
                  "ms/mask (first run) |" % args.n)
            print("|---|---|---|---|---|---|---|")
            rows = [("greedy", dict(temp=0, ignore_eos=True)),
                    ("sampled (seed 1)", dict(seed=1, ignore_eos=True)),
                    ("greedy, JSON schema", dict(temp=0, grammar=grammar)),
                    ("sampled, JSON schema", dict(seed=1, grammar=grammar)),
                    ("greedy, JSON schema, mask every step", dict(temp=0, grammar=grammar, grammar_first=True))]
            for label, kw in rows:
                r = gen_row(m, args.n, args.reps, **kw)
                print(f"| {label} | {r['first tok/s']:.1f} | {r['tok/s']:.1f} | {r['tok/s'] / tg:.2f} | {r['tokens']} | "
                      f"{r['masks']} | {r['first mask ms']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
