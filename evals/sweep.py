"""Which type to ship: quantize one model to several types, evaluate each against the base, report.

Everything is checked before the first step (types, files, the imatrix each type needs, the
output folder), so a typo in the fifth type is not found hours later. The sweep is resumable:
each artifact (base F16, base log-probs, imatrix, each quantized model and its evaluation) is
recorded in `sweep.json` with what it was made from (input sizes and mtimes, the text's sha256,
the options) and re-used only when that still matches; anything else is made again. The state is
written atomically, and a state file that cannot be read is reported and rebuilt.

Each step is a task (`llmtk.evals.distributed.Task`: a module-level function, its arguments, the
files it reads and writes) run by an executor: this process, or a Ray cluster. The driver here
decides what remains, hands each stage's tasks to the executor and records every outcome as it
arrives, so the report, `sweep.json` and resuming are one code path. A step that fails for good
is listed in the report; the others go on. Several models and texts are one matrix of plans whose
stages are scheduled together (`plan_matrix`, `run_sweeps`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from llmtk.errors import InputError, LlmtkError
from llmtk.ggufio.constants import Key

DEFAULT_TYPES = ("Q8_0", "Q6_K", "Q4_K_M", "IQ4_XS", "Q3_K_M", "Q2_K")
STATE_VERSION = 2
_FLOAT_FILE_TYPES = {0, 1, 32}  # general.file_type of F32, F16, BF16 models

Log = Callable[[str], None]
# progress(cells_done, cells_total, what is running now)
Progress = Callable[[int, int, str], None]


@dataclass
class SweepPlan:
    """What to sweep. `imatrix` is None, "auto" (computed from `calib_text`, else from a held-out
    half of `text`) or a path; `tensor_types` etc. are passed to every quantization."""

    model: Path
    types: list[str]
    text: str
    text_name: str
    out_dir: Path
    imatrix: str | None = None
    n_ctx: int = 512
    n_chunks: int | None = None
    calib_text: str | None = None
    calib_name: str | None = None
    tensor_types: list[tuple[str, str]] = field(default_factory=list)
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    threads: int | None = None
    max_mean_kld: float | None = None
    min_same_top: float | None = None
    json_schema: dict | None = None       # with `prompts`: how often the greedy answer is valid
    prompts: list[str] = field(default_factory=list)
    n_predict: int = 128
    target_bpw: list[float] = field(default_factory=list)   # --target-bpw cells (evals.sensitivity)
    target_type: str = "Q4_K_M"                              # their candidate family and file type

    def quantize_options(self) -> dict[str, Any]:
        return {"tensor_types": list(self.tensor_types), "output_tensor_type": self.output_tensor_type,
                "token_embedding_type": self.token_embedding_type}

    def split_calibration(self) -> None:
        """With `imatrix="auto"` and no calibration text, calibrate on the second half of the text
        (cut at a line) and evaluate on the first, so the imatrix never saw the scored tokens."""
        if self.imatrix != "auto" or self.calib_text is not None:
            return
        cut = self.text.find("\n", len(self.text) // 2)
        cut = len(self.text) // 2 if cut < 0 else cut + 1
        self.text, self.calib_text = self.text[:cut], self.text[cut:]
        self.calib_name = f"{self.text_name} (second half; evaluated on the first half)"
        self.text_name = f"{self.text_name} (first half)"


def check_plan(plan: SweepPlan) -> list[str]:
    """Validate everything before any work; returns llama-quantize's spelling of each type.

    Raises an `LlmtkError` naming the bad input: a missing or non-model file, an unknown or
    repeated type, a type that needs an imatrix when none is used, a bad option value, an output
    folder that cannot be written.
    """
    from llmtk.quantize import quantize_model
    from llmtk.quantize.rules import canonical_name

    if not plan.model.is_file():
        raise InputError(f"{plan.model}: model file not found")
    _check_model_file(plan.model)
    if not plan.types:
        raise InputError("--types names no type")
    names = [canonical_name(t) for t in plan.types]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"--types repeats {', '.join(repeated)}")
    if plan.n_ctx < 2:
        raise InputError(f"--ctx-size {plan.n_ctx}: must be at least 2")
    if plan.n_chunks is not None and plan.n_chunks < 1:
        raise InputError(f"--chunks {plan.n_chunks}: must be at least 1")
    if not plan.text.strip():
        raise InputError(f"{plan.text_name}: the evaluation text is empty")
    for name, value in (("--max-mean-kld", plan.max_mean_kld), ("--min-same-top", plan.min_same_top)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise InputError(f"{name} {value}: must be a finite number >= 0")
    if plan.min_same_top is not None and plan.min_same_top > 1:
        raise InputError(f"--min-same-top {plan.min_same_top}: a fraction in 0..1 (0.95 = 95%)")
    if (plan.json_schema is None) != (not plan.prompts):
        raise InputError("--json-schema and --prompts go together (the prompts whose answers must follow the schema)")
    if plan.json_schema is not None:
        from llmtk.grammar import json_schema_to_gbnf, parse

        parse(json_schema_to_gbnf(plan.json_schema))      # an unusable schema is refused now
        if plan.n_predict < 1:
            raise InputError(f"--n-predict {plan.n_predict}: must be at least 1")
    if plan.imatrix not in (None, "auto") and not Path(plan.imatrix).is_file():
        raise InputError(f"{plan.imatrix}: imatrix file not found")
    if plan.imatrix == "auto" and plan.calib_text is not None and not plan.calib_text.strip():
        raise InputError(f"{plan.calib_name}: the calibration text is empty")
    _check_out_dir(plan.out_dir)
    # every type planned now (llama-quantize's --dry-run), so that a refusal comes before hours of work
    imatrix_file = plan.imatrix if plan.imatrix not in (None, "auto") else None
    needs = []
    for name in names:
        res = quantize_model(plan.model, None, name, imatrix=imatrix_file, dry_run=True, allow_requantize=True,
                             **plan.quantize_options())
        if res.will_require_imatrix:
            needs.append(name)
    if needs and plan.imatrix is None:
        raise InputError(f"--types {', '.join(needs)} need an importance matrix: pass --imatrix auto "
                         f"(or a file), or drop them")
    from .sensitivity import target_cells

    return names + target_cells(plan.target_bpw, plan.target_type)


def _check_model_file(path: Path) -> None:
    from llmtk.ggufio.shards import open_gguf

    with open_gguf(path) as r:
        kind = r.kv.get(Key.TYPE)
        if kind not in (None, "model") or not isinstance(r.kv.get(Key.ARCHITECTURE), str):
            raise InputError(f"{path}: not a model (general.type {kind!r}, "
                             f"general.architecture {r.kv.get(Key.ARCHITECTURE)!r})")


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: the sweep folder is a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(f"{out}: cannot write the sweep folder ({e.strerror or e})") from None


# --- what an artifact was made from -------------------------------------------------------------

def fingerprint(path: Path) -> dict[str, int] | None:
    """Size and mtime of a file (cheap, and changes whenever the file is rewritten)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    # pid-tagged temporary beside the target, renamed into place; a killed run's are cleaned next time
    from llmtk.outputs import write_text_atomic

    write_text_atomic(path, text)


class _State:
    """sweep.json: the recipe of every artifact, saved atomically after each step."""

    def __init__(self, path: Path, log: Log) -> None:
        self.path = path
        self.data: dict[str, Any] = {"version": STATE_VERSION, "artifacts": {}, "rows": {}}
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if not (isinstance(data, dict) and data.get("version") == STATE_VERSION
                        and isinstance(data.get("artifacts"), dict) and isinstance(data.get("rows"), dict)):
                    raise ValueError("not a sweep state of this version")
                self.data = data
            except (OSError, UnicodeDecodeError, ValueError) as e:
                log(f"{path}: unreadable ({e}); every artifact will be checked against a fresh state")

    def valid(self, name: str, recipe: dict[str, Any], artifact: Path) -> bool:
        """Whether `artifact` exists, is the file recorded, and was made from `recipe`."""
        rec = self.data["artifacts"].get(name)
        return (isinstance(rec, dict) and rec.get("recipe") == recipe
                and rec.get("file") == fingerprint(artifact) and fingerprint(artifact) is not None)

    def record(self, name: str, recipe: dict[str, Any], artifact: Path, **extra: Any) -> None:
        self.data["artifacts"][name] = {"recipe": recipe, "file": fingerprint(artifact), **extra}
        self.save()

    def save(self) -> None:
        from .report import dumps

        _write_atomic(self.path, dumps(self.data))


# --- the sweep ------------------------------------------------------------------------------------

class SweepFailed(LlmtkError):
    """Steps of a sweep failed for good (each retried as its executor allows). The reports of the
    rest are written first and list the failures; running again redoes only what is missing.
    `frames` holds each plan's table (None where its base could not be evaluated)."""

    exit_code = 1

    def __init__(self, message: str, frames: list) -> None:
        super().__init__(message)
        self.frames = frames


def run_sweep(plan: SweepPlan, log: Log = print, progress: Progress | None = None,
              executor: Any = None) -> "pandas.DataFrame":  # noqa: F821
    """Run (or resume) the sweep and write `sweep.md`, `sweep.csv`, `sweep.json`, `sweep.png`.

    `executor` runs the steps (`llmtk.evals.distributed`: `LocalExecutor`, the default, or
    `RayExecutor`); the report is the same whichever ran them. Raises `SweepFailed` after
    writing the report when a step failed for good."""
    return run_sweeps([plan], log, progress, executor)[0]


def run_sweeps(plans: list[SweepPlan], log: Log = print, progress: Progress | None = None, executor: Any = None,
               index_dir: Path | None = None) -> list:
    """Several sweeps (models x texts) as one matrix: every plan is checked first, then each
    stage's tasks of all plans go to the executor together (base F16s, then base log-probs and
    imatrices, then every cell), each outcome recorded in its plan's folder as it arrives. With
    `index_dir`, `sweep.md` there links the plans' reports. Returns one DataFrame per plan."""
    from .distributed import LocalExecutor

    executor = executor or LocalExecutor()
    for plan in plans:
        plan.split_calibration()
    checked = [check_plan(plan) for plan in plans]
    folders = [p.out_dir.resolve() for p in plans]
    if len(set(folders)) != len(folders):
        raise InputError("two sweeps of the matrix would share one folder: give the models or texts distinct names")
    tracker = _Tracker(sum(len(names) + 2 + (p.imatrix == "auto") for p, names in zip(plans, checked)),
                       progress or (lambda done, total, what: None), log,
                       None if executor.name == "local" else executor.running)
    # in a matrix, each step is named after its plan's folder (`model/text: quantize Q4_0, ...`)
    runs = [_PlanRun(plan, names, log, tracker, executor.task_threads(plan.threads),
                     f"{plan.out_dir.parent.name}/{plan.out_dir.name}: " if len(plans) > 1 else "")
            for plan, names in zip(plans, checked)]
    with executor:                      # joins the cluster, or refuses its address, before any work
        for stage in ("base", "prep", "cells"):
            owner = {}
            for run in runs:
                for task in run.tasks(stage):
                    owner[task.key] = (run, task)
            if owner and executor.name != "local":
                log(f"{len(owner)} task(s) to the {executor.name} cluster: "
                    + ", ".join(t.label for _, t in owner.values()))
            for outcome in executor.run([t for _, t in owner.values()], tracker.started):
                owner[outcome.task.key][0].finish(outcome)
                tracker.finished(outcome)
    tracker.report()
    frames = [run.report() for run in runs]
    if index_dir is not None:
        _write_atomic(index_dir / "sweep.md", matrix_markdown(plans, frames, index_dir))
    failed = [(run, key, why) for run in runs for key, why in run.failures.items()]
    if failed:
        shown = "; ".join(f"{run.prefix}{key}: {why}" for run, key, why in failed[:3])
        raise SweepFailed(f"{len(failed)} step(s) of the sweep failed ({shown}{' …' if len(failed) > 3 else ''}); "
                          "the report lists them, and running again redoes only those", frames)
    return frames


class _Tracker:
    """Progress of the whole matrix: steps done (re-used ones included), running and failed. A
    local run names the step it runs; a cluster's tasks are counted (`running(in_flight)` says how
    many of the submitted ones the cluster's CPUs run at once)."""

    def __init__(self, total: int, progress: Progress, log: Log, running: Callable[[int], int] | None) -> None:
        self.total, self.progress, self.log, self.running = total, progress, log, running
        self.local = running is None
        self.done = self.failed = self.in_flight = 0

    def _update(self, what: str = "") -> None:
        if self.local:
            parts = [what] if what else []
        else:
            running = self.running(self.in_flight)
            parts = [f"{running} running", f"{self.in_flight - running} queued"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        self.progress(self.done, self.total, ", ".join(parts))

    def reused(self, n: int = 1) -> None:
        self.done += n
        self._update()

    def skipped(self, n: int) -> None:
        """Steps that cannot run because one they need failed: done, and failed."""
        self.done += n
        self.failed += n
        self._update()

    def started(self, task: Any) -> None:
        self.in_flight += 1
        if self.local:
            self.log(f"[{self.done + 1}/{self.total}] {task.label}")
        self._update(task.label)

    def finished(self, outcome: Any) -> None:
        self.in_flight -= 1
        self.done += 1
        self.failed += outcome.error is not None
        self._update()

    def report(self) -> None:
        self.progress(self.total, self.total, "report")


class _PlanRun:
    """One plan's stages: which tasks remain (the rest re-used from `sweep.json`), and what each
    outcome records. Artifact names and recipes are those of the local sweep, so a sweep resumes
    whichever executor made its artifacts."""

    def __init__(self, plan: SweepPlan, names: list[str], log: Log, tracker: _Tracker, threads: int | None,
                 prefix: str) -> None:
        self.plan, self.names, self.log, self.tracker, self.threads, self.prefix = \
            plan, names, log, tracker, threads, prefix
        self.state = _State(plan.out_dir / "sweep.json", log)
        self.failures: dict[str, str] = {}
        self.recipes: dict[str, tuple[str, dict[str, Any], Path]] = {}
        self.base: Path | None = None
        self.base_kld = plan.out_dir / "base.kld"
        self.imatrix: Path | None = None
        self.keep: set[str] = set()
        self.not_run: list[str] = []       # cells skipped because a step they need failed

    def _task(self, name: str, label: str, fn: Callable, recipe: dict[str, Any], artifact: Path,
              args: dict[str, Any], inputs: dict[str, Path], outputs: dict[str, Path]):
        from .distributed import Task

        self.recipes[self.prefix + name] = (name, recipe, artifact)
        return Task(self.prefix + name, f"{self.prefix}{label}", fn, {**args, "threads": self.threads}, inputs,
                    outputs, self.threads)

    def tasks(self, stage: str) -> list:
        return {"base": self._base_tasks, "prep": self._prep_tasks, "cells": self._cell_tasks}[stage]()

    def _base_tasks(self) -> list:
        # the base: the model itself when it is F16/BF16/F32, else an F16 made from it
        plan = self.plan
        if _file_type(plan.model) in _FLOAT_FILE_TYPES:
            self.base = plan.model
            self.tracker.reused()
            return []
        self.base = plan.out_dir / "base-F16.gguf"
        recipe = {"from": str(plan.model), "input": fingerprint(plan.model), "type": "F16"}
        if self.state.valid("base", recipe, self.base):
            self.tracker.reused()
            return []
        return [self._task("base", f"base F16 from {plan.model.name} (its tensors are quantized)", _base_step,
                           recipe, self.base, {}, {"src": plan.model}, {"dst": self.base})]

    def _prep_tasks(self) -> list:
        plan, tasks = self.plan, []
        if self.failures:
            self.tracker.skipped(1 + (plan.imatrix == "auto"))
            return []
        self.base_recipe = {"path": str(self.base), "file": fingerprint(self.base)}
        self.evaluation = {"base": self.base_recipe, "text_sha256": _sha256_text(plan.text), "text": plan.text_name,
                           "n_ctx": plan.n_ctx, "n_chunks": plan.n_chunks}
        if self.state.valid("base.kld", self.evaluation, self.base_kld):
            self.tracker.reused()
        else:
            tasks.append(self._task("base.kld", "base log-probs", _base_kld_step, self.evaluation, self.base_kld,
                                    {"text": plan.text, "n_ctx": plan.n_ctx, "n_chunks": plan.n_chunks},
                                    {"base": self.base}, {"kld_out": self.base_kld}))
        if plan.imatrix == "auto":
            self.imatrix = plan.out_dir / "imatrix.gguf"
            calib = {"base": self.base_recipe, "text_sha256": _sha256_text(plan.calib_text or ""),
                     "text": plan.calib_name, "n_ctx": plan.n_ctx}
            if self.state.valid("imatrix", calib, self.imatrix):
                self.tracker.reused()
            else:
                tasks.append(self._task("imatrix", f"imatrix on {plan.calib_name}", _imatrix_step, calib, self.imatrix,
                                        {"calib_text": plan.calib_text, "calib_name": plan.calib_name,
                                         "n_ctx": plan.n_ctx}, {"base": self.base}, {"out": self.imatrix}))
        elif plan.imatrix:
            self.imatrix = Path(plan.imatrix)
        return tasks

    def _cell_tasks(self) -> list:
        plan, tasks = self.plan, []
        if self.failures:
            self.tracker.skipped(len(self.names))
            self.not_run = list(self.names)
            return []
        kld_recipe = {"file": fingerprint(self.base_kld), **self.evaluation}
        imatrix_recipe = {"path": str(self.imatrix), "file": fingerprint(self.imatrix)} if self.imatrix else None
        rows = self.state.data["rows"]
        for name in self.names:
            key = name + ("-imatrix" if self.imatrix is not None and _imatrix_changes(name, self.base, plan) else "")
            self.keep.add(key)
            dst = plan.out_dir / f"model-{key}.gguf"
            recipe = {"base": self.base_recipe, "type": name, "imatrix": imatrix_recipe,
                      "options": _recipe_options(_cell_options(plan, name)), "evaluation": kld_recipe,
                      "structured": _structured_recipe(plan)}
            if self.state.valid(key, recipe, dst) and key in rows:
                self.log(f"{self.prefix}{key}: made and evaluated before from the same inputs, re-used")
                self.tracker.reused()
                continue
            inputs = {"base": self.base, "base_kld": self.base_kld, **({"imatrix": self.imatrix} if self.imatrix else {})}
            tasks.append(self._task(key, f"quantize {key}, evaluate it", _cell_step, recipe, dst,
                                    {"name": name, "options": _cell_options(plan, name),
                                     "imatrix_name": str(self.imatrix) if self.imatrix else None,
                                     "structured": _structured_args(plan)}, inputs, {"dst": dst}))
        return tasks

    def finish(self, outcome: Any) -> None:
        """Record a task's artifact (or its failure) in `sweep.json` as soon as it arrives."""
        name, recipe, artifact = self.recipes[outcome.task.key]
        if outcome.error is not None:
            self.failures[name] = outcome.error
            self.log(f"{self.prefix}{name}: failed: {outcome.error}")
            return
        res = outcome.result
        if name in ("base", "imatrix"):
            self.state.record(name, recipe, artifact)
        elif name == "base.kld":
            self.state.record(name, recipe, artifact, **res)
        else:
            self.state.data["rows"][name] = row = {"type": name, **res}
            self.state.record(name, recipe, artifact)
            self.log(f"{self.prefix}{name}: {_size(row['size_bytes'])}, {row['bpw']:.2f} bpw, PPL {row['ppl']:.4f} ± "
                     f"{row['ppl_stderr']:.4f}, mean KLD {row['mean_kld']:.4g}, same top "
                     f"{100 * row['same_top_p']:.2f}%")

    def report(self):
        """The plan's table and report files (None when its base was never evaluated)."""
        import pandas as pd

        from .runner import ModelRunner

        plan, rows = self.plan, self.state.data["rows"]
        kld_info = self.state.data["artifacts"].get("base.kld")
        if kld_info is None or "base.kld" in self.failures or "base" in self.failures:
            return None
        base_row = _base_row(self.base, kld_info)
        if plan.json_schema is not None:
            self.log(f"{self.prefix}structured answers of the base")
            base_row["schema_valid"] = _schema_valid(ModelRunner(self.base, threads=plan.threads).model, plan)
        done = [rows[k] for k in rows if k in self.keep and k not in self.failures]
        df = pd.DataFrame([base_row] + done).sort_values("bpw", ascending=False)
        df["pareto"] = _pareto_with_uncertainty(df)
        df["recommended"] = df["type"] == recommend(df, plan.max_mean_kld, plan.min_same_top)
        from . import report

        out = plan.out_dir
        _write_atomic(out / "sweep.csv", df.drop(columns=["fallbacks"]).to_csv(index=False))
        report.plot_sweep(df, out / "sweep.png", f"{plan.model.name}: quality against size on {plan.text_name}")
        md = sweep_markdown(df, plan, self.base, self.imatrix)
        if self.failures:
            md += ("\n## Failed\n\nThese steps failed for good (after the retries their executor allows); running "
                   "the sweep again redoes only them.\n\n"
                   + "".join(f"- {name}: {why}\n" for name, why in self.failures.items())
                   + (f"- not run, as they need the step above: {', '.join(self.not_run)}\n" if self.not_run else ""))
        _write_atomic(out / "sweep.md", md)
        return df


def _base_step(*, src: Path, dst: Path, threads: int | None) -> dict[str, Any]:
    """Task: the F16 base made from a quantized model."""
    _quantize(src, dst, "F16", None, {}, threads)
    return {}


def _base_kld_step(*, base: Path, kld_out: Path, text: str, n_ctx: int, n_chunks: int | None,
                   threads: int | None) -> dict[str, Any]:
    """Task: the base's log-probs on the text (`base.kld`) and its PPL, size and bpw."""
    from .runner import ModelRunner, evaluate

    res = evaluate(base, text, n_ctx=n_ctx, n_chunks=n_chunks, kld_base_out=kld_out,
                   runner=ModelRunner(base, threads=threads))
    n_weights, n_bytes = _tensor_totals(base)
    return {"ppl": res.ppl, "ppl_stderr": res.ppl_stderr, "n_weights": n_weights, "tensor_bytes": n_bytes,
            "size": base.stat().st_size}


def _imatrix_step(*, base: Path, out: Path, calib_text: str, calib_name: str, n_ctx: int,
                  threads: int | None) -> dict[str, Any]:
    """Task: the importance matrix of the base on the calibration text."""
    from llmtk.ggufio.imatrix_file import write_imatrix_gguf
    from llmtk.model._blas import numba_threads

    from .imatrix import compute_imatrix

    with numba_threads(threads):
        run = compute_imatrix(base, calib_text, n_ctx=n_ctx, n_chunks=-1, compute_ppl=False, dataset_name=calib_name)
    write_imatrix_gguf(out, run.imatrix)
    return {}


def _cell_step(*, base: Path, base_kld: Path, dst: Path, name: str, options: dict[str, Any],
               structured: dict[str, Any] | None, threads: int | None, imatrix: Path | None = None,
               imatrix_name: str | None = None) -> dict[str, Any]:
    """Task: one cell, quantize `base` to `name` and evaluate it against `base_kld`; its report row.
    `imatrix_name` is the imatrix's path on the driver, which the model records wherever it is made."""
    from .runner import ModelRunner, evaluate

    t0 = time.perf_counter()
    qres = _quantize(base, dst, name, imatrix, options, threads, imatrix_name)
    q_seconds = time.perf_counter() - t0
    runner = ModelRunner(dst, threads=threads)
    res = evaluate(dst, None, kld_base_in=base_kld, runner=runner)
    k = res.kld
    return {
        "size_bytes": dst.stat().st_size,
        "bpw": 8.0 * qres.size_out / qres.n_elements if qres.n_elements else math.nan,
        "ppl": k.ppl, "ppl_stderr": k.ppl_stderr, "delta_ppl": k.ppl - k.ppl_base,
        "ppl_ratio": k.ppl_ratio, "ppl_ratio_stderr": k.ppl_ratio_stderr,
        "mean_kld": k.mean, "mean_kld_stderr": k.mean_stderr, "median_kld": k.median, "kld_p99": k.p99,
        "max_kld": k.max, "same_top_p": k.same_top_p, "same_top_p_stderr": k.same_top_p_stderr,
        "rms_dp": k.rms_dp, "dp_p1": k.dp_percentiles.get("1.0", math.nan),
        "dp_p99": k.dp_percentiles.get("99.0", math.nan),
        "n_fallback": qres.n_fallback, "fallbacks": sorted(set(qres.fallbacks)),
        "quantize_s": q_seconds, "eval_s": res.seconds, "sha256": _sha256_file(dst),
        "schema_valid": (_schema_valid(runner.model, SweepPlan(**structured)) if structured is not None
                         else math.nan),
    }


def _structured_args(plan: SweepPlan) -> dict[str, Any] | None:
    """What a worker needs of the plan to check structured answers (a plan of its own)."""
    if plan.json_schema is None:
        return None
    return {"model": plan.model, "types": [], "text": "", "text_name": "", "out_dir": plan.out_dir,
            "json_schema": plan.json_schema, "prompts": list(plan.prompts), "n_predict": plan.n_predict}


def plan_matrix(models: list[Path], texts: list[tuple[str, str]], out_dir: Path, types: list[str],
                **options: Any) -> list[SweepPlan]:
    """One plan per model and text, sharing `options`. A single pair sweeps into `out_dir` itself;
    a matrix into `out_dir/<model>/<text>/` (file stems; a repeated stem gets `-2`, `-3`)."""
    def folder_names(stems: list[str]) -> list[str]:
        seen: dict[str, int] = {}
        names = []
        for stem in stems:
            seen[stem] = seen.get(stem, 0) + 1
            names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
        return names

    model_dirs = folder_names([Path(m).stem for m in models])
    text_dirs = folder_names([Path(name).stem or "text" for _, name in texts])
    plans = []
    for model, model_dir in zip(models, model_dirs):
        for (text, name), text_dir in zip(texts, text_dirs):
            out = out_dir if len(models) * len(texts) == 1 else out_dir / model_dir / text_dir
            plans.append(SweepPlan(Path(model), list(types), text, name, out, **options))
    return plans


def matrix_markdown(plans: list[SweepPlan], frames: list, index_dir: Path) -> str:
    """The matrix's index: one row per model and text, linking its report."""
    lines = ["# Quantization sweeps", "", "| model | text | types | recommended | report |", "|---|---|---|---|---|"]
    for plan, df in zip(plans, frames):
        rel = Path(os.path.relpath(plan.out_dir, index_dir)).as_posix()
        if df is None:
            lines.append(f"| {plan.model.name} | {plan.text_name} | – | – | failed (see the log) |")
            continue
        rec = df[df["recommended"]]
        lines.append(f"| {plan.model.name} | {plan.text_name} | {len(df) - 1} | "
                     f"{rec.iloc[0]['type'] if not rec.empty else '–'} | [sweep.md]({rel}/sweep.md) |")
    return "\n".join(lines) + "\n"


def _file_type(path: Path) -> int | None:
    from llmtk.ggufio.shards import open_gguf

    with open_gguf(path) as r:
        ft = r.kv.get(Key.FILE_TYPE)
    return int(ft) if isinstance(ft, int) else None


def _structured_recipe(plan: SweepPlan) -> dict[str, Any] | None:
    if plan.json_schema is None:
        return None
    return {"schema_sha256": _sha256_text(json.dumps(plan.json_schema, sort_keys=True)),
            "prompts_sha256": _sha256_text("\n".join(plan.prompts)), "n_predict": plan.n_predict}


def _schema_valid(model: Any, plan: SweepPlan) -> float:
    """Fraction of the prompts whose unconstrained greedy answer (up to n_predict tokens; as one
    chat turn when the model has a chat template) holds a JSON value valid against the schema, as
    its GBNF grammar (llama.cpp's json_schema_to_grammar semantics) decides. The value is what a
    reader would take: the first Markdown code block if there is one, else the text from the
    first `{` or `[`; prose after a code block is allowed, prose after a bare value is not."""
    from llmtk.generate import generate
    from llmtk.grammar import json_schema_to_gbnf, match_text, parse

    grammar = parse(json_schema_to_gbnf(plan.json_schema))
    chat = isinstance(model.reader.kv.get(Key.CHAT_TEMPLATE), str)
    valid = 0
    for prompt in plan.prompts:
        text = "".join(t.text for t in generate(model, prompt, n_predict=plan.n_predict, temp=0.0, chat=chat))
        valid += match_text(grammar, _answer_value(text)).accepted
    return valid / len(plan.prompts)


def _answer_value(text: str) -> str:
    if "```" in text:
        block = text.split("```", 2)[1]
        return block.split("\n", 1)[1].strip() if "\n" in block else block.strip()
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    return text[min(starts):].strip() if starts else text.strip()


def _tensor_totals(path: Path) -> tuple[int, int]:
    """(weights, bytes of tensor data): llama.cpp's bpw is 8 * bytes / weights."""
    from llmtk.ggufio.shards import open_gguf

    with open_gguf(path) as r:
        return sum(t.n_elements for t in r.tensors.values()), sum(t.n_bytes for t in r.tensors.values())


def _cell_options(plan: SweepPlan, name: str) -> dict[str, Any]:
    """A cell's quantization options; a --target-bpw cell's are its family and calibration text."""
    from .sensitivity import is_target_cell

    if not is_target_cell(name):
        return plan.quantize_options()
    return {"target_type": plan.target_type, "calib_text": plan.calib_text, "calib_name": plan.calib_name}


def _recipe_options(options: dict[str, Any]) -> dict[str, Any]:
    # a calibration text is recorded by its sha256
    return {k: (_sha256_text(v) if k == "calib_text" and v is not None else v) for k, v in options.items()}


def _quantize(src: Path, dst: Path, ftype: str, imatrix: Path | None, options: dict[str, Any], threads: int | None,
              imatrix_name: str | None = None):
    from llmtk.quantize import quantize_model

    from .sensitivity import is_target_cell, quantize_target_cell

    if is_target_cell(ftype):
        return quantize_target_cell(src, dst, ftype, imatrix, options, threads, imatrix_name)

    return quantize_model(src, dst, ftype, imatrix=imatrix, allow_requantize=True, nthreads=threads,
                          imatrix_name=imatrix_name, **options)


def _imatrix_changes(name: str, base: Path, plan: SweepPlan) -> bool:
    """Whether an imatrix changes any tensor of this type's mix (Q8_0, for one, ignores it)."""
    from llmtk import kernels
    from llmtk.quantize import quantize_model

    from .sensitivity import is_target_cell

    if is_target_cell(name):
        return True

    res = quantize_model(base, None, name, dry_run=True, allow_requantize=True, **plan.quantize_options())
    return any(t.dst_type != t.src_type and kernels.uses_imatrix(t.dst_type) for t in res.tensors)


def _base_row(base: Path, info: dict[str, Any]) -> dict[str, Any]:
    from llmtk.quantize.rules import file_type_names

    ft = _file_type(base)
    name = file_type_names().get(ft, "base") if ft is not None else "base"
    size, n_weights = info.get("size", base.stat().st_size), info.get("n_weights") or 0
    bpw = 8.0 * info.get("tensor_bytes", 0) / n_weights if n_weights else math.nan
    return {"type": f"{name} (base)", "size_bytes": size, "bpw": bpw,
            "ppl": info["ppl"], "ppl_stderr": info["ppl_stderr"], "delta_ppl": 0.0, "ppl_ratio": 1.0,
            "ppl_ratio_stderr": 0.0, "mean_kld": 0.0, "mean_kld_stderr": 0.0, "median_kld": 0.0, "kld_p99": 0.0,
            "max_kld": 0.0, "same_top_p": 1.0, "same_top_p_stderr": 0.0, "rms_dp": 0.0, "dp_p1": 0.0, "dp_p99": 0.0,
            "n_fallback": 0, "fallbacks": [], "quantize_s": math.nan, "eval_s": math.nan, "sha256": "",
            "schema_valid": math.nan}


def _pareto_with_uncertainty(df) -> list[bool]:
    """A type is on the front unless a type no larger is closer to the base by more than both
    uncertainties (mean KLD ± its standard error): a difference inside the noise decides nothing."""
    bpw = df["bpw"].to_numpy()
    lo = (df["mean_kld"] - df["mean_kld_stderr"]).to_numpy()
    hi = (df["mean_kld"] + df["mean_kld_stderr"]).to_numpy()
    return [not any(bpw[j] <= bpw[i] and hi[j] < lo[i] for j in range(len(bpw)) if j != i)
            for i in range(len(bpw))]


def recommend(df, max_mean_kld: float | None, min_same_top: float | None) -> str | None:
    """The smallest type within the budget (mean KLD at most, same-top fraction at least), or None."""
    if max_mean_kld is None and min_same_top is None:
        return None
    ok = df[~df["type"].str.endswith("(base)")]
    if max_mean_kld is not None:
        ok = ok[ok["mean_kld"] <= max_mean_kld]
    if min_same_top is not None:
        ok = ok[ok["same_top_p"] >= min_same_top]
    return None if ok.empty else str(ok.sort_values("size_bytes").iloc[0]["type"])


def _size(n: float) -> str:
    """Bytes as llama.cpp prints sizes (MiB, GiB above 1 GiB)."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.2f} MiB"


def _kld(v: float) -> str:
    return "0" if v == 0 else f"{v:.3g}" if v >= 1e-3 else f"{v:.2e}"


def sweep_markdown(df, plan: SweepPlan, base: Path, imatrix: Path | None) -> str:
    """The report: settings, one row per type with uncertainties, the recommendation, a model-card table."""
    rec = recommend(df, plan.max_mean_kld, plan.min_same_top)
    lines = [f"# Quantization sweep: {plan.model.name}", "",
             f"- base: `{base.name}`; evaluated on `{plan.text_name}`, context {plan.n_ctx}, "
             f"chunks {plan.n_chunks or 'all'}",
             f"- imatrix: {'none' if imatrix is None else f'`{imatrix.name}`'}"
             + (f", calibrated on `{plan.calib_name}`" if plan.imatrix == "auto" else ""),
             "- bpw: bits of the tensor data over the number of weights, as llama-quantize and inspect print it",
             "- ±: one standard error; ★: on the Pareto front (no type of at most this size is closer to the "
             "base by more than both uncertainties of mean KLD)"]
    if plan.json_schema is not None:
        lines.append(f"- valid JSON: share of {len(plan.prompts)} prompts whose unconstrained greedy answer "
                     f"(≤ {plan.n_predict} tokens) follows the JSON Schema")
    lines.append("")
    if plan.max_mean_kld is not None or plan.min_same_top is not None:
        budget = ", ".join(x for x in (f"mean KLD ≤ {plan.max_mean_kld}" if plan.max_mean_kld is not None else "",
                                       f"same top ≥ {100 * plan.min_same_top:.1f}%" if plan.min_same_top is not None
                                       else "") if x)
        lines += [f"**Recommended** ({budget}): **{rec}**" if rec else f"No type meets the budget ({budget}).", ""]
    schema = plan.json_schema is not None
    lines += ["| type | size | bpw | PPL | ΔPPL | mean KLD | median / 99% / max KLD | same top | Δp 1% / 99% | "
              "fallbacks | quantize |" + (" valid JSON |" if schema else "") + " Pareto |",
              "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if schema else "") + "---|"]
    for _, r in df.iterrows():
        lines.append(
            f"| {r['type']} | {_size(r['size_bytes'])} | {r['bpw']:.2f} | {r['ppl']:.4f} ± {r['ppl_stderr']:.4f} | "
            f"{r['delta_ppl']:+.4f} | {_kld(r['mean_kld'])} ± {_kld(r['mean_kld_stderr'])} | "
            f"{_kld(r['median_kld'])} / {_kld(r['kld_p99'])} / {_kld(r['max_kld'])} | "
            f"{100 * r['same_top_p']:.2f} ± {100 * r['same_top_p_stderr']:.2f}% | "
            f"{100 * r['dp_p1']:+.3g} / {100 * r['dp_p99']:+.3g}% | {int(r['n_fallback'])} | "
            + ("–" if math.isnan(r["quantize_s"]) else f"{r['quantize_s']:.1f} s")
            + (f" | {100 * r['schema_valid']:.0f}%" if schema else "")
            + f" | {'★' if r['pareto'] else ''} |")
    fell = [(r["type"], list(r["fallbacks"])) for _, r in df.iterrows() if len(r["fallbacks"])]
    if fell:
        lines += ["", "Fallbacks: a tensor whose rows do not fill the type's blocks gets another type, as "
                  "llama-quantize does (its warnings):", ""]
        for name, warnings in fell:
            shown = "; ".join(" ".join(w.replace("warning: ", "").split()) for w in warnings[:3])
            lines.append(f"- {name}: {len(warnings)} tensors, e.g. {shown}" + (" …" if len(warnings) > 3 else ""))
    lines += ["", "![mean KLD and PPL against bits per weight](sweep.png)", "",
              "## Model card", "", "| Type | Size | BPW | PPL | Mean KLD | Same top | SHA256 |", "|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        if r["sha256"]:
            lines.append(f"| {r['type']} | {_size(r['size_bytes'])} | {r['bpw']:.2f} | {r['ppl']:.4f} ± "
                         f"{r['ppl_stderr']:.4f} | {_kld(r['mean_kld'])} | {100 * r['same_top_p']:.2f}% | "
                         f"`{r['sha256']}` |")
    return "\n".join(lines) + "\n"


