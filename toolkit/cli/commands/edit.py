"""`llmtk edit IN [OUT]`: set, delete or rename GGUF metadata and tensors; tensor bytes copied as is."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("edit")
@click.argument("in_file", metavar="IN", type=click.Path(path_type=Path))
@click.argument("out_file", metavar="[OUT]", required=False, type=click.Path(path_type=Path))
@click.option("--set", "set_kv", multiple=True, metavar="KEY=[TYPE:]VALUE",
              help="Set a metadata key; the type of an existing key is kept unless TYPE is given "
                   "(str, bool, int32, uint32, float32, ...; arrays as TYPE[]:JSON-list). Repeatable.")
@click.option("--delete", multiple=True, metavar="KEY", help="Delete a metadata key. Repeatable.")
@click.option("--chat-template-file", type=click.Path(path_type=Path),
              help="Store this file's text as tokenizer.chat_template.")
@click.option("--rename-tensor", multiple=True, metavar="OLD=NEW", help="Rename a tensor. Repeatable.")
@click.option("--in-place", is_flag=True, help="Allow overwriting IN (atomically, via a temporary file).")
def command(in_file: Path, out_file: Path | None, set_kv: tuple[str, ...], delete: tuple[str, ...],
            chat_template_file: Path | None, rename_tensor: tuple[str, ...], in_place: bool) -> None:
    """Write IN to OUT (or over IN with --in-place) with metadata and tensor names changed.

    Untouched keys and tensors are kept byte for byte; tensor data is streamed, not loaded.

    \b
    Examples:
      llmtk edit model.gguf out.gguf --set general.name="My model"
      llmtk edit model.gguf out.gguf --set my.flag=bool:true --delete general.url
      llmtk edit model.gguf --in-place --chat-template-file template.jinja
      llmtk edit model.gguf out.gguf --rename-tensor output.weight=lm_head.weight
    """
    from llmtk.cli.common import check_output_file
    from llmtk.cli.progress import plural
    from llmtk.errors import InputError
    from llmtk.ggufio.edit import edit_gguf, read_chat_template
    from llmtk.outputs import writing

    if not in_file.is_file():
        raise InputError(f"{in_file}: " + ("is a folder, expected a GGUF file" if in_file.is_dir() else "no such file"))
    if out_file is not None and in_place:
        raise InputError("give OUT or --in-place, not both")
    if out_file is None and not in_place:
        raise InputError(f"{in_file}: give an output file, or --in-place to overwrite the input")
    if out_file is not None:
        check_output_file(out_file, inputs=[in_file, chat_template_file], option="OUT")
    else:
        check_output_file(in_file, option="--in-place")
    template = read_chat_template(chat_template_file) if chat_template_file else None
    with writing(out_file or in_file):
        res = edit_gguf(in_file, out_file, set_kv=set_kv, delete=delete, chat_template=template,
                        rename=rename_tensor, in_place=in_place)
    click.echo(f"wrote {res.path}: {plural(len(res.set_keys), 'key')} changed, {len(res.added_keys)} added, "
               f"{len(res.deleted_keys)} deleted, {plural(len(res.renamed), 'tensor')} renamed, "
               f"{plural(res.n_tensors, 'tensor')} copied")
