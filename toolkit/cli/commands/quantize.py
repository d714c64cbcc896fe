"""`llmtk quantize IN [OUT] TYPE [NTHREADS]`: llama-quantize's mixes, byte-identical."""
from __future__ import annotations

import click

_EPILOG = ("Types: Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q2_K_S Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S "
           "Q5_K_M Q6_K IQ1_S IQ1_M IQ2_XXS IQ2_XS IQ2_S IQ2_M IQ3_XXS IQ3_XS IQ3_S IQ3_M IQ4_NL "
           "IQ4_XS TQ1_0 TQ2_0 MXFP4_MOE Q1_0 Q2_0 F16 BF16 F32 COPY (aliases Q3_K Q4_K Q5_K).")


@click.command("quantize", epilog=_EPILOG)
@click.argument("args", nargs=-1, required=True, metavar="IN [OUT] TYPE [NTHREADS]")
@click.option("--imatrix", type=click.Path(dir_okay=False, exists=True), help="Importance matrix (GGUF or legacy .dat).")
@click.option("--include-weights", multiple=True, help="Use the imatrix only for tensors whose names contain this.")
@click.option("--exclude-weights", multiple=True, help="Do not use the imatrix for tensors whose names contain this.")
@click.option("--output-tensor-type", help="ggml type for output.weight.")
@click.option("--token-embedding-type", help="ggml type for the token embeddings.")
@click.option("--tensor-type", "tensor_types", multiple=True, metavar="PATTERN=TYPE",
              help="Quantize tensors whose names match this regex to TYPE (repeatable).")
@click.option("--tensor-type-file", type=click.Path(dir_okay=False, exists=True),
              help="File of PATTERN=TYPE entries separated by spaces or newlines.")
@click.option("--pure", is_flag=True, help="No mixes: every quantizable tensor gets TYPE's default type.")
@click.option("--leave-output-tensor", is_flag=True, help="Leave output.weight un(re)quantized.")
@click.option("--allow-requantize", is_flag=True, help="Allow requantizing tensors that are already quantized.")
@click.option("--override-kv", multiple=True, metavar="KEY=TYPE:VALUE", help="Set metadata (int, float, bool, str).")
@click.option("--prune-layers", metavar="L0,L1,...", help="Remove these layers and renumber the rest.")
@click.option("--keep-split", is_flag=True, help="Write one output per input split.")
@click.option("--dry-run", is_flag=True, help="Show per-tensor types and sizes without writing.")
@click.option("--target-bpw", type=float, help="Choose each tensor's type by measured sensitivity so that the "
              "tensor data is at most this many bits per weight (TYPE names the candidate family).")
@click.option("--target-size", help="Like --target-bpw, for the whole file's size (3.2GiB, 850MB, bytes).")
@click.option("--candidates", help="Candidate types for --target-*, e.g. Q3_K,Q4_K,Q6_K,Q8_0 (default: TYPE's family).")
@click.option("--calib-file", type=click.Path(dir_okay=False, exists=True),
              help="Calibration text of the sensitivity pass (default: the text in data/).")
@click.option("--sensitivity-cache", type=click.Path(dir_okay=False),
              help="Read the sensitivity measurements from this JSON file when they match, else measure and save.")
@click.option("--tensor-type-out", type=click.Path(dir_okay=False),
              help="Write the chosen types as a llama-quantize --tensor-type-file.")
def command(args, imatrix, include_weights, exclude_weights, output_tensor_type, token_embedding_type,
            tensor_types, tensor_type_file, pure, leave_output_tensor, allow_requantize, override_kv,
            prune_layers, keep_split, dry_run, target_bpw, target_size, candidates, calib_file, sensitivity_cache,
            tensor_type_out):
    """Quantize a GGUF model the way llama-quantize does (same types, same bytes).

    OUT defaults to <IN stem>-<TYPE>.gguf beside IN; NTHREADS to all cores.

    \b
    Examples:
      llmtk quantize model-f16.gguf Q4_K_M
      llmtk quantize --imatrix imatrix.gguf model-f16.gguf model-iq2.gguf IQ2_XS 2
      llmtk quantize --dry-run model-f16.gguf Q3_K_M
    """
    import os

    # Idle kernel threads sleep instead of spinning: on a shared, busy machine spinning threads
    # steal the cores the working ones need (Q8_0 of SmolLM2: 31 s -> 5 s wall under load 9 on
    # 2 cores); on a quiet one the wake-ups cost microseconds. Set before numba starts OpenMP.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from pathlib import Path

    import re

    from llmtk.cli.common import check_output_file, require_model
    from llmtk.cli.progress import bar, plural
    from llmtk.errors import InputError
    from llmtk.ggufio.constants import parse_ggml_type
    from llmtk.outputs import writing
    from llmtk.quantize import quantize_model
    from llmtk.quantize.requantize import KVOverride, default_output_path
    from llmtk.quantize.rules import FILE_TYPES, file_type, parse_file_type

    # every argument checked before any work, as llama-quantize reads them: IN, then OUT unless
    # the next word is a type (a lone word after IN is always the TYPE), then TYPE, then NTHREADS
    if len(args) < 2:
        raise InputError("expected IN [OUT] TYPE [NTHREADS]")
    in_path, rest = args[0], list(args[1:])
    out_path = None if len(rest) == 1 or parse_file_type(rest[0]) else rest.pop(0)
    ft = file_type(rest[0])
    if rest[0].strip().lstrip("+-").isdigit():  # a number names its type as llama.cpp does (17: Q5_K_M, not the alias)
        ft = next((f for f in FILE_TYPES.values() if f.ftype == ft.ftype and not f.desc.startswith("alias")), ft)
    rest = rest[1:]
    try:
        nthreads = int(rest[0]) if rest else None
    except ValueError:
        raise InputError(f"invalid NTHREADS {rest[0]!r}: expected an integer") from None
    if nthreads is not None and nthreads > 4096:
        raise InputError(f"invalid NTHREADS {nthreads}: at most 4096 (0 or less: all cores)")
    if len(rest) > 1:
        raise InputError(f"unexpected arguments after NTHREADS: {' '.join(rest[1:])}")
    if tensor_type_file:
        try:
            type_file_text = Path(tensor_type_file).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{tensor_type_file}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except OSError as e:
            raise InputError(f"{tensor_type_file}: cannot read: {e.strerror}") from None
    specs = list(tensor_types) + (type_file_text.split() if tensor_type_file else [])
    pairs = []
    for s in specs:
        pat, sep, typ = s.partition("=")
        if not sep or not pat or not typ:
            raise InputError(f"malformed tensor type {s!r}: expected PATTERN=TYPE")
        try:
            re.compile(pat)
        except re.error as e:
            raise InputError(f"--tensor-type {s!r}: bad regular expression ({e})") from None
        parse_ggml_type(typ)
        pairs.append((pat, typ))
    for t in (output_tensor_type, token_embedding_type):
        if t is not None:
            parse_ggml_type(t)
    for o in override_kv:
        KVOverride.parse(o)
    try:
        prune = [int(x) for x in prune_layers.split(",")] if prune_layers else []
    except ValueError:
        raise InputError(f"invalid layer ids {prune_layers!r}: expected L0,L1,...") from None
    if any(p < 0 for p in prune):
        raise InputError(f"invalid layer ids {prune_layers!r}: must be >= 0")
    require_model(in_path, what="input model")
    out = Path(out_path) if out_path is not None else default_output_path(in_path, ft.name)
    if not dry_run:
        check_output_file(out, inputs=[in_path, imatrix, tensor_type_file], option="OUT")

    target = None
    if target_bpw is not None or target_size is not None:
        if prune or include_weights or exclude_weights or keep_split:
            raise InputError("--target-bpw/--target-size plan every tensor of the input with the whole imatrix: "
                             "drop --prune-layers, --include-weights, --exclude-weights and --keep-split")
        target = _target_plan(in_path, out, ft, imatrix, target_bpw, target_size, candidates, calib_file,
                              sensitivity_cache, tensor_type_out, pairs, pure, output_tensor_type,
                              token_embedding_type, nthreads)
        pairs, override_kv = target.pairs, list(override_kv) + target.overrides
    elif candidates or calib_file or sensitivity_cache or tensor_type_out:
        raise InputError("--candidates, --calib-file, --sensitivity-cache and --tensor-type-out go with "
                         "--target-bpw or --target-size")

    with bar("quantize", enabled=not dry_run) as update, writing(out):
        def on_tensor(rep, n_total: int) -> None:
            update(rep.index, n_total, rep.name)

        res = quantize_model(in_path, out_path, ft.name, imatrix=imatrix, nthreads=nthreads,
                             allow_requantize=allow_requantize, leave_output_tensor=leave_output_tensor,
                             pure=pure, output_tensor_type=output_tensor_type,
                             token_embedding_type=token_embedding_type, tensor_types=pairs,
                             include_weights=include_weights, exclude_weights=exclude_weights,
                             override_kv=override_kv, prune_layers=prune, keep_split=keep_split,
                             dry_run=dry_run, on_tensor=on_tensor)
    if dry_run:
        for rep in res.tensors:
            click.echo(rep.log_line(len(res.tensors), dry_run=True))
    for line in res.summary_lines():
        click.echo(line, err=line.startswith("WARNING"))
    if dry_run:
        click.echo(f"dry run: {res.file_type.name}, {plural(len(res.tensors), 'tensor')}, nothing written")
    for p in res.out_paths:
        click.echo(f"wrote {p} ({res.file_type.name}, {plural(len(res.tensors), 'tensor')}, {res.seconds:.2f} s)")
    if target is not None:
        _report_target(target, in_path, out, ft.name, imatrix, override_kv, tensor_type_out)


def _target_plan(in_path, out, ft, imatrix, target_bpw, target_size, candidates, calib_file, cache, type_out,
                 pairs, pure, output_tensor_type, token_embedding_type, nthreads):
    """The sensitivity-chosen mix for --target-bpw/--target-size (every argument checked first)."""
    from llmtk.cli.common import check_output_file
    from llmtk.cli.progress import bar
    from llmtk.errors import InputError
    from llmtk.evals.sensitivity import plan_for_quantize
    from llmtk.quantize.target_bpw import parse_candidates, parse_size

    if target_bpw is not None and target_size is not None:
        raise InputError("give one of --target-bpw and --target-size")
    if pairs or pure or output_tensor_type or token_embedding_type:
        raise InputError("--target-bpw/--target-size choose every tensor's type: drop --tensor-type(-file), "
                         "--pure, --output-tensor-type and --token-embedding-type")
    size = parse_size(target_size) if target_size is not None else None
    cands = parse_candidates(candidates) if candidates else None
    if type_out:
        check_output_file(type_out, inputs=[in_path, imatrix], option="--tensor-type-out")
    with bar("sensitivity", plain=True, unit="step") as update:
        plan = plan_for_quantize(in_path, ft.name, target_bpw=target_bpw, target_size=size, candidates=cands,
                                 imatrix=imatrix, calib_path=calib_file, cache=cache, threads=nthreads,
                                 log=lambda s: click.echo(s, err=True),
                                 progress=lambda done, total, what: update(done, total, what))
    return plan


def _report_target(plan, in_path, out, ftype, imatrix, override_kv, type_out) -> None:
    """What was chosen, and the llama-quantize command that writes the same bytes."""
    from collections import Counter

    from llmtk.cli.common import write_text
    from llmtk.quantize.rules import ggml_type_name
    from llmtk.quantize.target_bpw import llama_quantize_command

    sol = plan.solution
    counts = Counter(ggml_type_name(t) for t in sol.types.values())
    click.echo(f"target: {plan.target_bpw:.4f} bpw ({sol.n_bytes} of {sol.budget} budgeted bytes for "
               f"{len(sol.types)} tensors); predicted KLD {sol.damage:.4g}; types: "
               + ", ".join(f"{n} {t}" for t, n in counts.most_common()))
    type_file = type_out or "tensor-types.txt"
    if type_out:
        write_text(type_out, plan.tensor_type_file)
        click.echo(f"wrote {type_out}")
    click.echo("same file with llama.cpp: " + llama_quantize_command(
        str(in_path), str(out), ftype, type_file, list(override_kv), str(imatrix) if imatrix else None))
