"""The fast seeded fuzz subset: every target for a few hundred cases, out of process, each under a
timeout and a memory cap; every case must be accepted or give one one-line LlmtkError."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine  # noqa: E402

CASES = {"gguf": 300, "model": 120, "imatrix_gguf": 250, "imatrix_dat": 250, "kld": 200, "safetensors": 40,
         "tokenizer": 400}


@pytest.mark.parametrize("target", sorted(engine.TARGETS))
def test_fuzz_fast(target):
    f = engine.Fuzzer(target, seed=17, timeout=20)
    if not f.seeds:
        pytest.skip(f"{target}: no seeds (../shared absent)")
    try:
        counts = f.run(CASES.get(target, 100))
        bad = {k: v for k, v in counts.items() if k not in ("ok", "llmtk")}
        assert not bad, f"{target}: {dict(counts)}; examples: {f.examples}"
    finally:
        f.close()
