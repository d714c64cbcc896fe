"""`llmtk gate`: pass/fail quality gate of a candidate model against a base, for CI."""
from __future__ import annotations

import sys

import click

from llmtk.cli.common import (batch_options, cache_type_options, check_distinct, check_output_file, chunks_option,
                              ignored_llamacpp_options, require_model, threads_option, write_text)
from llmtk.cli.progress import chunk_progress


def _limit(low: float | None = None, high: float | None = None, *, positive: bool = False):
    """A click callback: a finite threshold inside [low, high] (above 0 with `positive`)."""
    import math

    def check(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
        if value is None:
            return value
        bad = not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high) \
            or (positive and value <= 0)
        if bad:
            want = "above 0" if positive else f"in [{low:g}, {high:g}]" if high is not None else f"at least {low:g}"
            raise click.BadParameter(f"{value:g}: the limit must be a finite number {want}")
        return value
    return check


@click.command("gate")
@click.option("--base", "base_path", required=True, type=click.Path(dir_okay=False),
              help="Reference model (e.g. the F16 GGUF), or a KL-divergence base file written by "
                   "`llmtk perplexity --kl-divergence-base` / llama-perplexity.")
@click.option("--candidate", "cand_path", required=True, type=click.Path(dir_okay=False), help="Model to judge.")
@click.option("-f", "--file", "text_path", help="Evaluation text (default: the text in data/); unused with a base file.")
@click.option("-c", "--ctx-size", "n_ctx", default=512, show_default=True, type=click.IntRange(min=2))
@chunks_option(help="At most this many chunks (-1: all).")
@threads_option
@batch_options
@cache_type_options
@ignored_llamacpp_options
@click.option("--max-mean-kld", type=float, callback=_limit(0), help="Fail when mean KL divergence exceeds this (nats).")
@click.option("--max-kld-p99", type=float, callback=_limit(0), help="Fail when the 99th percentile of KLD exceeds this.")
@click.option("--min-same-top-p", type=float, callback=_limit(0, 1),
              help="Fail when the top-token agreement (0..1) is below this.")
@click.option("--max-ppl-ratio", type=float, callback=_limit(positive=True),
              help="Fail when PPL(candidate)/PPL(base) exceeds this.")
@click.option("--max-rms-dp", type=float, callback=_limit(0, 1), help="Fail when the RMS of Δp (0..1) exceeds this.")
@click.option("--junit", "junit_out", type=click.Path(dir_okay=False), help="Write JUnit XML (one test per threshold).")
@click.option("--json", "json_out", help="Write the verdict and statistics as JSON ('-' for stdout).")
def command(base_path, cand_path, text_path, n_ctx, n_chunks, threads, cache_type_k, cache_type_v, junit_out,
            json_out, **limits):
    """Judge CANDIDATE against BASE on KL divergence and perplexity; exit 0 pass, 1 fail, 2 error.

    \b
    Example (a CI step):
      llmtk gate --base model-f16.gguf --candidate model-q4km.gguf -f eval.txt \\
          --max-mean-kld 0.05 --min-same-top-p 0.9 --max-ppl-ratio 1.05 --junit gate.xml
    """
    import tempfile
    import time
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from llmtk.errors import InputError
    from llmtk.evals.gate import GATES, Threshold, evaluate_gates, junit_xml
    from llmtk.evals.perplexity import KLD_MAGIC
    from llmtk.evals.report import dumps
    from llmtk.evals.runner import ModelRunner, evaluate, read_text

    thresholds = [Threshold(opt.replace("_", "-"), *GATES[opt], limit) for opt, limit in limits.items() if limit is not None]
    if not thresholds:
        raise InputError("no thresholds given: pass at least one of " + ", ".join("--" + g.replace("_", "-") for g in GATES))
    # every input and output checked before any work
    for p in (base_path, cand_path):
        if not Path(p).is_file():
            raise InputError(f"{p}: file not found")
    with open(base_path, "rb") as f:
        base_is_kld = f.read(8) == KLD_MAGIC
    if not base_is_kld:
        require_model(base_path, what="base model")
    require_model(cand_path, what="candidate model")
    inputs = [base_path, cand_path, text_path]
    if junit_out:
        check_output_file(junit_out, inputs=inputs, option="--junit")
    if json_out not in (None, "-"):
        check_output_file(json_out, inputs=inputs, option="--json")
    check_distinct({"--junit": junit_out, "--json": json_out})
    text = None if base_is_kld else read_text(text_path)[0]
    model_opts = dict(threads=threads, cache_type_k=cache_type_k, cache_type_v=cache_type_v)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llmtk-gate-") as tmp:
        kld_file = Path(base_path) if base_is_kld else Path(tmp) / "base.kld"
        if not base_is_kld:
            with chunk_progress("base") as (on_start, on_chunk):
                evaluate(base_path, text, n_ctx=n_ctx, n_chunks=n_chunks, kld_base_out=kld_file,
                         runner=ModelRunner(base_path, **model_opts), progress=on_chunk, on_start=on_start)
        with chunk_progress("candidate") as (on_start, on_chunk):
            res = evaluate(cand_path, None, n_chunks=n_chunks, kld_base_in=kld_file,
                           runner=ModelRunner(cand_path, **model_opts), progress=on_chunk, on_start=on_start)
    verdict = evaluate_gates(res.kld, thresholds, time.perf_counter() - t0)
    console = Console(stderr=json_out == "-")
    table = Table(title=f"llmtk gate: {Path(cand_path).name} vs {Path(base_path).name} ({res.n_tokens_scored} tokens)")
    for col in ("gate", "value", "limit", "result"):
        table.add_column(col, justify="left" if col == "gate" else "right")
    for row in verdict.rows():
        table.add_row(row["gate"], f"{row['value']:.6g}", f"{row['comparison']} {row['limit']:g}",
                      "[green]PASS[/green]" if row["passed"] else "[red]FAIL[/red]")
    console.print(table)
    console.print(f"[bold]{'PASS' if verdict.ok else 'FAIL'}[/bold]: {verdict.passed.count(True)}/{len(thresholds)} gates hold")
    if junit_out:
        write_text(junit_out, junit_xml(verdict, "llmtk.gate", str(base_path), str(cand_path)))
    if json_out:
        payload = dumps({"passed": verdict.ok, "gates": verdict.rows(), "kld": res.to_dict()["kld"],
                         "base": str(base_path), "candidate": str(cand_path)})
        click.echo(payload) if json_out == "-" else write_text(json_out, payload + "\n")
    sys.exit(0 if verdict.ok else 1)
