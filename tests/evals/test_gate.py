"""Quality gates: threshold checks and the JUnit XML that CI systems read."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from llmtk.evals.gate import GATES, Threshold, evaluate_gates, junit_xml
from llmtk.evals.perplexity import KldStats


@pytest.fixture(scope="module")
def stats() -> KldStats:
    rng = np.random.default_rng(3)
    nll = rng.gamma(2.0, 1.0, 400).astype(np.float32)
    return KldStats.from_tokens(nll, (nll * 0.97).astype(np.float32), rng.gamma(0.5, 0.04, 400),
                                rng.normal(0, 0.03, 400).astype(np.float32), rng.random(400) < 0.92)


def test_thresholds_pass_and_fail_on_the_right_side(stats):
    gates = [Threshold("max-mean-kld", "mean", "max", stats.mean + 1e-9),
             Threshold("min-same-top-p", "same_top_p", "min", stats.same_top_p)]
    assert evaluate_gates(stats, gates).ok
    strict = [Threshold("max-mean-kld", "mean", "max", stats.mean * 0.5),
              Threshold("max-ppl-ratio", "ppl_ratio", "max", 10.0)]
    res = evaluate_gates(stats, strict)
    assert not res.ok and res.passed == [False, True]


def test_every_gate_names_a_real_statistic(stats):
    assert GATES
    for metric, kind in GATES.values():
        assert kind in ("max", "min")
        assert np.isfinite(getattr(stats, metric))


def test_junit_xml_has_one_case_per_gate_and_failures(stats):
    gates = [Threshold("max-mean-kld", "mean", "max", 0.0), Threshold("min-same-top-p", "same_top_p", "min", 0.0)]
    res = evaluate_gates(stats, gates)
    root = ET.fromstring(junit_xml(res, "llmtk.gate", "base.gguf", "cand <q4>.gguf"))
    suite = root.find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = suite.findall("testcase")
    assert cases[0].find("failure") is not None and "mean" in cases[0].find("failure").get("message")
    assert cases[1].find("failure") is None
    assert any(p.get("value") == "cand <q4>.gguf" for p in suite.iter("property"))
