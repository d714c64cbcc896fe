"""Quality gates: thresholds on a candidate's KL divergence / PPL against a base, with JUnit XML."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from .perplexity import KldStats


@dataclass(frozen=True)
class Threshold:
    """One gate: `metric` compared with `limit` (`max`: value must be <= limit, `min`: >= limit)."""

    name: str
    metric: str
    kind: str
    limit: float

    def check(self, stats: KldStats) -> tuple[float, bool]:
        value = float(getattr(stats, self.metric))
        ok = math.isfinite(value) and (value <= self.limit if self.kind == "max" else value >= self.limit)
        return value, ok


# CLI option -> (metric attribute of KldStats, direction); one row per supported gate.
GATES: dict[str, tuple[str, str]] = {
    "max_mean_kld": ("mean", "max"),
    "max_kld_p99": ("p99", "max"),
    "min_same_top_p": ("same_top_p", "min"),
    "max_ppl_ratio": ("ppl_ratio", "max"),
    "max_rms_dp": ("rms_dp", "max"),
}


@dataclass
class GateResult:
    thresholds: list[Threshold]
    values: list[float]
    passed: list[bool]
    stats: KldStats
    seconds: float

    @property
    def ok(self) -> bool:
        return all(self.passed)

    def rows(self) -> list[dict]:
        return [{"gate": t.name, "metric": t.metric, "value": v, "limit": t.limit,
                 "comparison": "<=" if t.kind == "max" else ">=", "passed": p}
                for t, v, p in zip(self.thresholds, self.values, self.passed)]


def evaluate_gates(stats: KldStats, thresholds: list[Threshold], seconds: float = 0.0) -> GateResult:
    checks = [t.check(stats) for t in thresholds]
    return GateResult(thresholds, [v for v, _ in checks], [p for _, p in checks], stats, seconds)


def junit_xml(result: GateResult, suite: str, base: str, candidate: str) -> str:
    """JUnit XML with one test case per threshold, which CI systems render as tests."""
    failures = result.passed.count(False)
    cases = []
    for row in result.rows():
        name = quoteattr(f"{row['gate']} ({row['metric']} {row['comparison']} {row['limit']:g})")
        body = ""
        if not row["passed"]:
            msg = f"{row['metric']} = {row['value']:.6g}, limit {row['comparison']} {row['limit']:g}"
            body = f"<failure message={quoteattr(msg)} type=\"QualityGate\">{escape(msg)}</failure>"
        cases.append(f'    <testcase classname={quoteattr(suite)} name={name} time="0">{body}</testcase>')
    props = (f'    <properties><property name="base" value={quoteattr(base)}/>'
             f'<property name="candidate" value={quoteattr(candidate)}/></properties>')
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<testsuites tests="{len(cases)}" failures="{failures}">\n'
            f'  <testsuite name={quoteattr(suite)} tests="{len(cases)}" failures="{failures}" errors="0" '
            f'time="{result.seconds:.2f}">\n{props}\n' + "\n".join(cases) + "\n  </testsuite>\n</testsuites>\n")


def write_atomic(path: str | Path, text: str) -> None:
    """`text` to `path` through a unique temporary beside it and a rename (`llmtk.outputs`): a
    full disk or a kill leaves the old file or none, and an OSError is a one-line `OutputError`."""
    from llmtk.outputs import write_text_atomic

    write_text_atomic(path, text)
