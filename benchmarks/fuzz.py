"""Long fuzzing runs of llmtk's parsers: `python benchmarks/fuzz.py --minutes N [--target NAME]`.

Runs each target (or one) of `tests/fuzz/engine.py` for N minutes in a worker process with a
per-case timeout and an address-space cap, and prints the counts of outcomes: accepted (ok),
LlmtkError (llmtk), another exception (other), a multi-line message (badmsg), timeout, memory
blowup, crash. Failing cases are kept under the printed temporary folder. Exit status 1 when any
case ended other than ok/llmtk.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fuzz"))
import engine  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=1.0, help="minutes per target")
    ap.add_argument("--target", choices=sorted(engine.TARGETS), action="append",
                    help="a target (repeatable; default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per case")
    args = ap.parse_args()
    bad = 0
    for name in args.target or sorted(engine.TARGETS):
        f = engine.Fuzzer(name, seed=args.seed, timeout=args.timeout)
        t0 = time.monotonic()
        counts = f.run(seconds=args.minutes * 60)
        dt = time.monotonic() - t0
        failures = sum(v for k, v in counts.items() if k not in ("ok", "llmtk", "skipped"))
        bad += failures
        line = "  ".join(f"{k}={counts.get(k, 0)}" for k in engine.OUTCOMES)
        print(f"{name:<14} {sum(counts.values()):>7} cases in {dt:6.0f} s  {line}", flush=True)
        for kind, examples in f.examples.items():
            for ex in examples:
                print(f"    {kind}: {ex}")
        f.close(keep_failures=failures > 0)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
