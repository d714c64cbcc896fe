"""`llmtk edit`: set, delete, chat template and rename round trips keep everything else identical."""
from __future__ import annotations

import filecmp
import hashlib

import gguf
import numpy as np
import pytest
from click.testing import CliRunner

from llmtk.cli import main
from llmtk.ggufio import GGUFReader

TINY = "convert/llama/tiny-llama-f16.gguf"


def run(*args):
    return CliRunner().invoke(main, list(map(str, args)))


def gguf_manifest(path):
    """Every key (types, value) and tensor (type, shape, sha256) as the `gguf` package reads them."""
    r = gguf.GGUFReader(path)
    kv = {name: ([int(t) for t in f.types], f.contents()) for name, f in r.fields.items()
          if not name.startswith("GGUF.")}
    tensors = {t.name: (int(t.tensor_type), t.shape.tolist(),
                        hashlib.sha256(np.asarray(t.data).tobytes()).hexdigest()) for t in r.tensors}
    return kv, tensors


def manifest(path):
    """The same manifest from llmtk's reader (fast; `gguf_manifest` checks they agree)."""
    with GGUFReader(path) as r:
        kv = {k: ([int(t) for t in r.kv_types[k] if t is not None],
                  v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.kv.items()}
        tensors = {t.name: (int(t.qtype), list(t.ne), hashlib.sha256(r.raw(t.name)).hexdigest())
                   for t in r.tensors.values()}
    return kv, tensors


@pytest.fixture(scope="module")
def tiny(shared_dir):
    return shared_dir / TINY, manifest(shared_dir / TINY)


def edited(tmp_path, tiny, *opts):
    src, before = tiny
    out = tmp_path / "out.gguf"
    res = run("edit", src, out, *opts)
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith(f"wrote {out}:")
    return before, manifest(out)


def test_set_existing_and_new_keys(tmp_path, tiny):
    (kv0, t0), (kv1, t1) = edited(tmp_path, tiny, "--set", "general.name=Renamed: v2",
                                  "--set", "llama.context_length=4096", "--set", "my.flag=bool:true",
                                  "--set", "my.scale=f64:0.125", "--set", 'my.words=str[]:["a","b c"]')
    assert t1 == t0
    assert kv1["general.name"] == (kv0["general.name"][0], "Renamed: v2")
    assert kv1["llama.context_length"] == ([int(gguf.GGUFValueType.UINT32)], 4096)  # type kept
    assert kv1["my.flag"] == ([int(gguf.GGUFValueType.BOOL)], True)
    assert kv1["my.scale"] == ([int(gguf.GGUFValueType.FLOAT64)], 0.125)
    assert kv1["my.words"][1] == ["a", "b c"]
    changed = {"general.name", "llama.context_length"}
    assert {k: v for k, v in kv1.items() if k not in changed and not k.startswith("my.")} == \
        {k: v for k, v in kv0.items() if k not in changed}
    assert list(kv1)[: len(kv0)] == list(kv0)  # order kept, new keys appended


def test_all_edits_at_once_load_in_gguf_package(tmp_path, tiny):
    src, _ = tiny
    tpl = tmp_path / "t.jinja"
    tpl.write_text("{{ x }}")
    out = tmp_path / "out.gguf"
    res = run("edit", src, out, "--set", "general.name=N", "--set", "my.n=i64:-5", "--delete", "general.type",
              "--chat-template-file", tpl, "--rename-tensor", "token_embd.weight=tok.weight")
    assert res.exit_code == 0, res.output
    assert gguf_manifest(out) == manifest(out)
    assert gguf_manifest(src) == manifest(src)


def test_delete(tmp_path, tiny):
    (kv0, t0), (kv1, t1) = edited(tmp_path, tiny, "--delete", "general.size_label", "--delete", "llama.vocab_size")
    assert t1 == t0
    assert kv1 == {k: v for k, v in kv0.items() if k not in ("general.size_label", "llama.vocab_size")}


def test_chat_template_file(tmp_path, tiny):
    tpl = tmp_path / "t.jinja"
    text = "{% for m in messages %}<|{{ m.role }}|>\r\n{{ m.content }}{% endfor %} ✓"
    tpl.write_bytes(text.encode())
    (kv0, t0), (kv1, t1) = edited(tmp_path, tiny, "--chat-template-file", tpl)
    assert kv1["tokenizer.chat_template"][1] == text
    assert t1 == t0 and {k: v for k, v in kv1.items() if k != "tokenizer.chat_template"} == \
        {k: v for k, v in kv0.items() if k != "tokenizer.chat_template"}


def test_rename_tensor(tmp_path, tiny):
    (kv0, t0), (kv1, t1) = edited(tmp_path, tiny, "--rename-tensor", "output.weight=lm_head.weight")
    assert kv1 == kv0
    assert list(t1) == ["lm_head.weight" if n == "output.weight" else n for n in t0]
    assert t1["lm_head.weight"] == t0["output.weight"]
    assert {n: v for n, v in t1.items() if n != "lm_head.weight"} == {n: v for n, v in t0.items() if n != "output.weight"}


def test_no_changes_is_byte_identical(tmp_path, tiny):
    src, _ = tiny
    assert run("edit", src, tmp_path / "copy.gguf").exit_code == 0
    assert filecmp.cmp(src, tmp_path / "copy.gguf", shallow=False)


def test_in_place(tmp_path, tiny):
    src, (kv0, t0) = tiny
    work = tmp_path / "m.gguf"
    work.write_bytes(src.read_bytes())
    for args in (["edit", work], ["edit", work, work, "--set", "general.name=x"]):
        res = run(*args)
        assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert filecmp.cmp(src, work, shallow=False)
    assert run("edit", work, "--in-place", "--set", "general.name=x").exit_code == 0
    kv1, t1 = manifest(work)
    assert kv1["general.name"][1] == "x" and t1 == t0
    assert [p.name for p in tmp_path.iterdir()] == ["m.gguf"]  # no temporary file left


@pytest.mark.parametrize("opts,message", [
    (["--set", "new.key=5"], "new key needs a type"),
    (["--set", "llama.block_count=many"], "not a valid UINT32"),
    (["--set", "llama.block_count=-1"], "out of range for UINT32"),
    (["--set", "my.x=u8:300"], "out of range for UINT8"),
    (["--set", "novalue"], "expected KEY=VALUE"),
    (["--delete", "no.such.key"], "no metadata key 'no.such.key' to delete"),
    (["--set", "general.name=a", "--delete", "general.name"], "both set and deleted"),
    (["--rename-tensor", "nope=x"], "no tensor named 'nope'"),
    (["--rename-tensor", "output.weight=token_embd.weight"], "two tensors the name 'token_embd.weight'"),
    (["--rename-tensor", "output.weight=" + "x" * 70], "longer than 63 bytes"),
    (["--chat-template-file", "/nonexistent.jinja"], "no such chat template file"),
])
def test_errors_exit_2_and_write_nothing(tmp_path, tiny, opts, message):
    src, _ = tiny
    res = run("edit", src, tmp_path / "out.gguf", *opts)
    assert res.exit_code == 2, res.output
    assert message in res.stderr and res.stderr.count("\n") == 1 and res.stderr.startswith("llmtk: error: ")
    assert list(tmp_path.iterdir()) == []


def test_edit_smollm2_keeps_tensors(tmp_path, smollm2_path):
    out = tmp_path / "s.gguf"
    assert run("edit", smollm2_path, out, "--set", "general.name=SmolLM2 edited").exit_code == 0
    kv0, t0 = manifest(smollm2_path)
    kv1, t1 = manifest(out)
    assert t1 == t0 and kv1["general.name"][1] == "SmolLM2 edited"
    assert {k: v for k, v in kv1.items() if k != "general.name"} == {k: v for k, v in kv0.items() if k != "general.name"}
