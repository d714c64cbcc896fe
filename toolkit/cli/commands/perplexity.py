"""`llmtk perplexity`: llama-perplexity's PPL and KL divergence, with JSON/CSV/report output."""
from __future__ import annotations

from pathlib import Path

import click

from llmtk.cli.common import (batch_options, cache_type_options, check_distinct, check_output_dir, check_output_file,
                              chunks_option, ignored_llamacpp_options, require_model, staged_file, staged_folder,
                              threads_option, write_text)
from llmtk.cli.progress import chunk_progress


@click.command("perplexity")
@click.option("-m", "--model", "model_path", type=click.Path(dir_okay=False),
              help="GGUF model (default: the embedded SmolLM2-135M-Instruct Q4_1).")
@click.option("-f", "--file", "text_path", help="Text to evaluate; '-' reads stdin (default: the text in data/).")
@click.option("--dataset", help="A locally cached `datasets` text split, as NAME[:CONFIG][/SPLIT].")
@click.option("-c", "--ctx-size", "n_ctx", default=512, show_default=True, type=click.IntRange(min=2),
              help="Tokens per chunk; the second half of each chunk is scored.")
@chunks_option()
@threads_option
@batch_options
@click.option("--kl-divergence-base", "kld_base", type=click.Path(dir_okay=False),
              help="Without --kl-divergence: save this model's log-probs here (llama.cpp's format). "
                   "With it: the base file to compare against.")
@click.option("--kl-divergence", "kld", is_flag=True, help="Compare against --kl-divergence-base and print KLD statistics.")
@click.option("--json", "json_out", help="Write results as JSON to this file ('-' for stdout).")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), help="Write per-chunk running PPL as CSV.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), help="Write report.md, results.json and PNG plots here.")
@click.option("--hellaswag", is_flag=True, help="Score -f as a HellaSwag file (llama.cpp's 6-lines-per-task format).")
@click.option("--hellaswag-tasks", type=click.IntRange(min=1), help="Number of HellaSwag tasks (drawn as llama.cpp draws them).")
@click.option("--winogrande", is_flag=True, help="Score -f as a Winogrande CSV (index,sentence,option1,option2,answer).")
@click.option("--winogrande-tasks", type=click.IntRange(min=1), help="Number of Winogrande tasks.")
@click.option("--multiple-choice", is_flag=True, help="Score -f as llama.cpp's binary multiple-choice file.")
@click.option("--multiple-choice-tasks", type=click.IntRange(min=1), help="Number of multiple-choice tasks.")
@cache_type_options
@ignored_llamacpp_options
def command(model_path, text_path, dataset, n_ctx, n_chunks, threads, kld_base, kld, json_out, csv_out, report_dir,
            hellaswag, hellaswag_tasks, winogrande, winogrande_tasks, multiple_choice, multiple_choice_tasks,
            cache_type_k, cache_type_v):
    """Perplexity of MODEL on a text, the way llama-perplexity measures it.

    The text is tokenized once, cut into --ctx-size chunks (each starting with BOS when the
    vocabulary adds one), and the second half of every chunk is scored, so numbers compare
    directly with llama-perplexity run with the same -c and --chunks.

    \b
    Examples:
      llmtk perplexity -m model-f16.gguf -f wiki.test.raw -c 512 --chunks 16
      llmtk perplexity -m model-f16.gguf -f wiki.test.raw --kl-divergence-base base.kld
      llmtk perplexity -m model-q4km.gguf --kl-divergence-base base.kld --kl-divergence --report out/
    """
    from llmtk.errors import InputError
    from llmtk.evals.report import dumps, write_perplexity_report
    from llmtk.evals.runner import ModelRunner, check_dataset_spec, evaluate, read_text
    from llmtk.resources import smollm2_path

    # every argument, input and output checked before any work
    task = "hellaswag" if hellaswag else "winogrande" if winogrande else "multiple-choice" if multiple_choice else None
    if task and (sum((hellaswag, winogrande, multiple_choice)) > 1 or not text_path):
        raise InputError("pick one of --hellaswag, --winogrande, --multiple-choice, with its task file as -f FILE")
    if kld and not kld_base:
        raise InputError("--kl-divergence needs --kl-divergence-base FILE (the base log-probs to compare against)")
    if kld and (text_path or dataset):
        raise InputError("--kl-divergence reads its tokens from --kl-divergence-base; drop -f/--dataset")
    if task and (kld or kld_base or csv_out or report_dir):
        raise InputError(f"--{task} scores tasks: --kl-divergence-base, --csv and --report do not apply")
    if dataset:
        check_dataset_spec(dataset)
    model_path = require_model(model_path) if model_path else smollm2_path()
    inputs = [model_path, text_path, kld_base if kld else None]
    if kld and not Path(kld_base).is_file():
        raise InputError(f"{kld_base}: KL-divergence base file not found")
    if task and not Path(text_path).is_file():
        raise InputError(f"{text_path}: task file not found")
    json_file = None if json_out in (None, "-") else check_output_file(json_out, inputs=inputs, option="--json")
    if csv_out:
        check_output_file(csv_out, inputs=inputs, option="--csv")
    if report_dir:
        check_output_dir(report_dir, option="--report")
    kld_out = None
    if kld_base and not kld:
        kld_out = check_output_file(kld_base, inputs=inputs, option="--kl-divergence-base")
    check_distinct({"--json": json_file, "--csv": csv_out, "--kl-divergence-base": kld_out})
    model_opts = dict(threads=threads, cache_type_k=cache_type_k, cache_type_v=cache_type_v)
    if task:
        _score_tasks(ModelRunner(model_path, **model_opts), Path(text_path), task,
                     hellaswag_tasks or winogrande_tasks or multiple_choice_tasks, json_out)
        return
    text, text_name = (None, Path(kld_base).name) if kld else read_text(text_path, dataset)
    runner = ModelRunner(model_path, **model_opts)
    with chunk_progress("perplexity") as (on_start, on_chunk), staged_file(kld_out) as kld_tmp:
        result = evaluate(model_path, text, n_ctx=n_ctx, n_chunks=n_chunks, runner=runner,
                          kld_base_out=kld_tmp, kld_base_in=kld_base if kld else None,
                          progress=on_chunk, on_start=on_start)
    out = click.echo if json_out != "-" else (lambda *a, **k: click.echo(*a, err=True, **k))
    if result.kld is not None:  # llama-perplexity's --kl-divergence output: the per-chunk table, then the statistics
        out(result.kld_chunk_table())
        out("")
        out(result.kld.format_llamacpp())
    else:
        out(",".join(f"[{i + 1}]{p:.4f}" for i, p in enumerate(result.running_ppl)) + ",")
        out(f"Final estimate: PPL = {result.ppl:.4f} +/- {result.ppl_stderr:.5f}")
    meta = {"model": str(model_path), "text": text_name, "n_ctx": n_ctx}
    if json_out:
        payload = dumps({**meta, **result.to_dict()})
        if json_out == "-":
            click.echo(payload)
        else:
            write_text(json_out, payload + "\n")
    if csv_out:
        rows = "".join(f"{i},{float(p)!r}\n" for i, p in enumerate(result.running_ppl, 1))
        write_text(csv_out, "chunk,running_ppl\n" + rows)
    if report_dir:
        with staged_folder(report_dir) as tmp:
            write_perplexity_report(result, tmp, meta)
        click.echo(f"report written to {Path(report_dir) / 'report.md'}", err=True)


def _score_tasks(runner, task_path, kind: str, n_tasks: int | None, json_out: str | None) -> None:
    """Run one of llama-perplexity's multiple-choice benchmarks and print its running accuracy."""
    from llmtk.errors import InputError
    from llmtk.evals import tasks as T
    from llmtk.evals.report import dumps

    if not task_path.is_file():
        raise InputError(f"{task_path}: task file not found")
    task = T.TASKS[kind]
    tasks = task.load(task_path, n_tasks)
    out = click.echo if json_out != "-" else (lambda *a, **k: click.echo(*a, err=True, **k))
    out(f"task\tacc ({kind}, {len(tasks)} tasks)")
    step = lambda i, acc: out(f"{i}\t{100 * acc:.8f}")  # noqa: E731
    score = task.score(tasks, runner.tokenize, runner.logits, step)
    lo, hi = score.wilson_interval()
    out(f"Final {kind} score ({score.n_done} tasks): {100 * score.accuracy:.4f} +/- {100 * score.stderr:.4f} "
        f"(95% Wilson [{100 * lo:.4f}%, {100 * hi:.4f}%])")
    if json_out:
        payload = dumps({"model": str(runner.path), "file": str(task_path), **score.to_dict()})
        click.echo(payload) if json_out == "-" else write_text(json_out, payload + "\n")
