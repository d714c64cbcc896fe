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
def command(args, imatrix, include_weights, exclude_weights, output_tensor_type, token_embedding_type,
            tensor_types, tensor_type_file, pure, leave_output_tensor, allow_requantize, override_kv,
            prune_layers, keep_split, dry_run):
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
