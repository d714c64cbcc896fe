"""`llmtk split IN OUT_PREFIX` and `llmtk merge FIRST_SHARD OUT`: llama-gguf-split, byte-identical."""
from __future__ import annotations

from pathlib import Path

import click


def _echo_plan(res) -> None:
    """The plan as llama-gguf-split prints it (`n_split: 3`, `split 00001: n_tensors = ...`)."""
    click.echo(f"n_split: {len(res.shards)}")
    for i, s in enumerate(res.shards):
        click.echo(f"split {i + 1:05d}: n_tensors = {len(s.tensors)}, total_size = {s.size_mb}M")


def _on_tensor(update):
    """The library's progress callback as a bar over tensors, with megabytes as its info."""
    def progress(n_done: int, n_total: int, done: int, total: int) -> None:
        update(n_done, n_total, info=f"{done / 1e6:.0f}/{total / 1e6:.0f} MB")
    return progress


def _merge(in_file: Path, out_file: Path, dry_run: bool) -> None:
    from llmtk.cli.progress import bar, plural
    from llmtk.ggufio.split import merge_gguf

    with bar("merge", plain=True, unit="tensor", enabled=not dry_run) as update:
        res = merge_gguf(in_file, out_file, dry_run=dry_run, progress=_on_tensor(update))
    what = f"{plural(len(res.inputs), 'shard')} of {res.source}, {plural(res.n_tensors, 'tensor')}"
    if dry_run:
        click.echo(f"dry run: would write {out_file} ({res.shards[0].file_size} bytes), {what}")
    else:
        click.echo(f"wrote {out_file} ({res.shards[0].file_size} bytes): merged {what}")


@click.command("split")
@click.argument("in_file", metavar="IN", type=click.Path(path_type=Path))
@click.argument("out", metavar="OUT_PREFIX", type=click.Path(path_type=Path))
@click.option("--split-max-size", "max_size", metavar="N(M|G)",
              help="Largest tensor data per shard: N megabytes (M, 10^6 bytes) or gigabytes (G, 10^9).")
@click.option("--split-max-tensors", "max_tensors", type=click.IntRange(min=1), metavar="N",
              help="Most tensors per shard (default 128 when no size is given).")
@click.option("--no-tensor-first-split", is_flag=True, help="Put only the metadata in the first shard.")
@click.option("--dry-run", is_flag=True, help="Print the shards that would be written and write nothing.")
@click.option("--merge", is_flag=True, help="Merge: IN is a shard, OUT_PREFIX the merged file (as `llmtk merge`).")
@click.option("--split", "split_flag", is_flag=True, help="Split (the default; accepted as llama-gguf-split has it).")
def command(in_file: Path, out: Path, max_size: str | None, max_tensors: int | None, no_tensor_first_split: bool,
            dry_run: bool, merge: bool, split_flag: bool) -> None:
    """Split the GGUF IN into OUT_PREFIX-00001-of-0000N.gguf, ... as llama-gguf-split does.

    The shards are byte-identical to llama-gguf-split's: shard 1 has all the metadata, every
    shard the split.* keys, tensors keep their order. IN may itself be a shard of a split model
    (all its shards are read). All shards appear together or not at all.

    \b
    Examples:
      llmtk split model-f16.gguf out/model-f16 --split-max-size 2G
      llmtk split model-f16.gguf out/model-f16 --split-max-tensors 64 --dry-run
      llmtk split --merge out/model-f16-00001-of-00003.gguf model-f16.gguf
    """
    from llmtk.cli.progress import bar, plural
    from llmtk.errors import InputError
    from llmtk.ggufio.split import parse_split_size, split_gguf

    if merge:
        if split_flag:
            raise InputError("--split and --merge cannot be given together")
        for flag, given in (("--split-max-size", max_size), ("--split-max-tensors", max_tensors),
                            ("--no-tensor-first-split", no_tensor_first_split or None)):
            if given is not None:
                raise InputError(f"{flag} applies to splitting, not to --merge")
        _merge(in_file, out, dry_run)
        return
    if max_size is not None and max_tensors is not None:
        raise InputError("give --split-max-size or --split-max-tensors, not both")
    try:
        n_bytes = parse_split_size(max_size) if max_size is not None else None
    except InputError as e:
        raise InputError(f"--split-max-size: {e}") from None

    with bar("split", plain=True, unit="tensor", enabled=not dry_run) as update:
        res = split_gguf(in_file, out, max_size=n_bytes, max_tensors=max_tensors,
                         no_tensor_first_split=no_tensor_first_split, dry_run=dry_run,
                         progress=_on_tensor(update))
    _echo_plan(res)
    shards = plural(len(res.shards), "shard")
    if dry_run:
        click.echo(f"dry run: would write {shards} with {plural(res.n_tensors, 'tensor')}, nothing written")
    else:
        for p in res.paths:
            click.echo(f"wrote {p}")
        click.echo(f"{shards} written with a total of {plural(res.n_tensors, 'tensor')}")


@click.command("merge")
@click.argument("in_file", metavar="FIRST_SHARD", type=click.Path(path_type=Path))
@click.argument("out_file", metavar="OUT", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check every shard and print the result's size; write nothing.")
def merge_command(in_file: Path, out_file: Path, dry_run: bool) -> None:
    """Merge the shards of a split model into the single GGUF OUT, as llama-gguf-split --merge.

    FIRST_SHARD is <prefix>-00001-of-0000N.gguf (any shard is accepted); every shard is checked
    first. OUT must not exist. Same bytes as llama-gguf-split: the first shard's metadata with
    split.count set to 0, then every shard's tensors in order.

    \b
    Examples:
      llmtk merge model-f16-00001-of-00003.gguf model-f16.gguf
    """
    _merge(in_file, out_file, dry_run)
