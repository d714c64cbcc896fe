"""Split and merge as llama-gguf-split does them, and reading a model spread over shards.

Byte-identity with llama-gguf-split itself is checked by the slow test at the end, against a
binary named by $LLAMA_GGUF_SPLIT; the fast tests pin the layout it produces (metadata order,
split keys, ggml's n_dims, packing by size and count) and the round trips it guarantees.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from llmtk.errors import GGUFFormatError, InputError, LlmtkError, UnsupportedError
from llmtk.ggufio import GGUFReader, GGUFWriter
from llmtk.ggufio.constants import GGUFValueType as VT
from llmtk.ggufio.constants import Key
from llmtk.ggufio.shards import (
    ShardedReader,
    open_gguf,
    open_shards,
    split_path,
    split_prefix,
)
from llmtk.ggufio.split import (
    ggml_shape,
    merge_gguf,
    parse_split_size,
    plan_split,
    split_gguf,
)

TINY = "convert/llama/tiny-llama-f16.gguf"
SPLIT_TAIL = [Key.SPLIT_NO, Key.SPLIT_TENSORS_COUNT, Key.SPLIT_COUNT]


def sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def make_gguf(path: Path, sizes: list[int], *, kv: dict | None = None, shapes: dict | None = None,
              alignment: int | None = None) -> Path:
    """A GGUF of F32 tensors t0, t1, ... of `sizes` values each (seeded data)."""
    rng = np.random.default_rng(0)
    with GGUFWriter(path, alignment=alignment) as w:
        w.add_kv(Key.ARCHITECTURE, "llama")
        for k, v in (kv or {}).items():
            w.add_kv(k, *v) if isinstance(v, tuple) else w.add_kv(k, v)
        data = {}
        for i, n in enumerate(sizes):
            shape = (shapes or {}).get(f"t{i}", (n,))
            data[f"t{i}"] = rng.standard_normal(n).astype(np.float32).reshape(shape)
            w.add_tensor_info(f"t{i}", shape, "F32")
        for name, a in data.items():
            w.write_tensor(name, a)
    return path


def shard_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def tiny(shared_dir) -> Path:
    return shared_dir / TINY


# --- names and sizes ---------------------------------------------------------------------------

def test_split_path_and_prefix_are_llama_cpps():
    assert split_path("out/m", 0, 3) == Path("out/m-00001-of-00003.gguf")
    assert split_prefix("out/m-00002-of-00003.gguf", 1, 3) == "out/m"
    assert split_prefix("out/m-00002-of-00003.gguf", 0, 3) is None
    assert split_prefix("-00001-of-00001.gguf", 0, 1) is None  # an empty prefix, as llama.cpp


@pytest.mark.parametrize("text, n", [("500M", 500_000_000), ("2G", 2_000_000_000), ("1M", 1_000_000)])
def test_parse_split_size(text, n):
    assert parse_split_size(text) == n


@pytest.mark.parametrize("text", ["0M", "1.5G", "500", "500K", "-1G", "G", "5 00M", "500m"])
def test_parse_split_size_rejects(text):
    with pytest.raises(InputError, match="split size"):
        parse_split_size(text)


@pytest.mark.parametrize("shape, expected", [((4, 1), (4, 1)), ((1, 4), (4,)), ((1, 1, 8), (8,)), ((), (1,)),
                                             ((1,), (1,)), ((2, 1, 8), (2, 1, 8))])
def test_ggml_shape_drops_trailing_ne_of_one(shape, expected):
    assert ggml_shape(shape) == expected


# --- layout ------------------------------------------------------------------------------------

def test_split_layout(tmp_path):
    src = make_gguf(tmp_path / "in.gguf", [8] * 5, kv={"x.a": 1, Key.SPLIT_NO: (0, VT.UINT16),
                                                      Key.SPLIT_COUNT: (1, VT.UINT16), "x.b": "s"})
    res = split_gguf(src, tmp_path / "out", max_tensors=2)
    assert [p.name for p in res.paths] == [f"out-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    with GGUFReader(src) as r0:
        base = [k for k in r0.kv if not k.startswith("split.")]
    for i, p in enumerate(res.paths):
        with GGUFReader(p) as r:
            assert list(r.kv) == (base if i == 0 else []) + SPLIT_TAIL  # the count is set last
            assert [r.kv_types[k][0] for k in SPLIT_TAIL] == [VT.UINT16, VT.INT32, VT.UINT16]
            assert (r.kv[Key.SPLIT_NO], r.kv[Key.SPLIT_TENSORS_COUNT], r.kv[Key.SPLIT_COUNT]) == (i, 5, 3)
            assert list(r.tensors) == [f"t{j}" for j in range(2 * i, min(2 * i + 2, 5))]
            assert r.version == 3 and r.alignment == 32


def test_shapes_are_written_with_ggmls_n_dims(tmp_path):
    src = make_gguf(tmp_path / "in.gguf", [8, 8], shapes={"t0": (1, 8), "t1": (8, 1)})
    res = split_gguf(src, tmp_path / "out", max_tensors=1)
    with GGUFReader(res.paths[0]) as a, GGUFReader(res.paths[1]) as b:
        assert a.tensors["t0"].shape == (8,)  # ne [8, 1] -> n_dims 1, as ggml_n_dims
        assert b.tensors["t1"].shape == (8, 1)


def test_split_by_size_packs_as_llama_cpp(tmp_path):
    # 8 values = 32 bytes; 10 values = 40 bytes, padded to 64: only tensor bytes count
    src = make_gguf(tmp_path / "in.gguf", [8, 8, 10, 8, 40, 8])
    with GGUFReader(src) as r:
        groups = [[t.name for t in s.tensors] for s in plan_split(r, tmp_path / "o", max_size=96)]
    assert groups == [["t0", "t1"], ["t2", "t3"], ["t4"], ["t5"]]  # t4 (160 B) alone past the limit
    with GGUFReader(src) as r:
        groups = [[t.name for t in s.tensors] for s in plan_split(r, tmp_path / "o", max_size=128)]
    assert groups == [["t0", "t1", "t2"], ["t3"], ["t4"], ["t5"]]


def test_first_tensor_larger_than_the_size_is_refused(tmp_path):
    src = make_gguf(tmp_path / "in.gguf", [64, 8])
    with pytest.raises(InputError, match=r"shard 1 would hold no tensor: tensor 't0' alone takes 256 bytes"):
        split_gguf(src, tmp_path / "o", max_size=100)
    assert shard_files(tmp_path) == ["in.gguf"]


def test_no_tensor_first_split(tmp_path):
    src = make_gguf(tmp_path / "in.gguf", [8] * 3)
    res = split_gguf(src, tmp_path / "o", max_tensors=2, no_tensor_first_split=True)
    assert [len(s.tensors) for s in res.shards] == [0, 2, 1]
    with open_gguf(res.paths[0]) as m, GGUFReader(src) as r:
        assert isinstance(m, ShardedReader) and m.kv[Key.ARCHITECTURE] == "llama"
        assert all(np.array_equal(m.array(n), r.array(n)) for n in r.tensors)


def test_default_is_128_tensors(tmp_path):
    src = make_gguf(tmp_path / "in.gguf", [8] * 130)
    assert [len(s.tensors) for s in split_gguf(src, tmp_path / "o", dry_run=True).shards] == [128, 2]
    assert shard_files(tmp_path) == ["in.gguf"]  # dry run: nothing written


def test_other_alignment_is_refused(tmp_path):
    src = make_gguf(tmp_path / "in.gguf", [8, 8], alignment=64)
    with pytest.raises(UnsupportedError, match="general.alignment is 64"):
        split_gguf(src, tmp_path / "o", max_tensors=1)


# --- round trips -------------------------------------------------------------------------------

@pytest.mark.parametrize("opts", [{"max_tensors": 1}, {"max_tensors": 7}, {"max_tensors": 128},
                                  {"max_size": 4_000_000}, {"max_size": 3_200_000}])
def test_round_trip_on_tiny_llama(tmp_path, tiny, opts):
    res = split_gguf(tiny, tmp_path / "a", **opts)
    for s in res.shards:
        assert s.path.stat().st_size == s.file_size
    merged = merge_gguf(res.paths[-1], tmp_path / "m.gguf").paths[0]
    with GGUFReader(tiny) as r0, GGUFReader(merged) as r1:
        # merge keeps the first shard's split keys, with split.count 0 (as llama-gguf-split)
        assert list(r1.kv) == list(r0.kv) + SPLIT_TAIL
        assert (r1.kv[Key.SPLIT_NO], r1.kv[Key.SPLIT_COUNT]) == (0, 0)
        assert all(np.array_equal(r1.kv[k], r0.kv[k]) if isinstance(r0.kv[k], np.ndarray) else r1.kv[k] == r0.kv[k]
                   for k in r0.kv)
        assert [(t.name, t.qtype, t.shape) for t in r1.tensors.values()] == \
               [(t.name, t.qtype, t.shape) for t in r0.tensors.values()]
        assert all(bytes(r1.raw(n)) == bytes(r0.raw(n)) for n in r0.tensors)
    # and the merged file splits into the same bytes again, merges into the same bytes again
    again = split_gguf(merged, tmp_path / "b", **opts)
    assert [sha(p) for p in again.paths] == [sha(p) for p in res.paths]
    assert sha(merge_gguf(again.paths[0], tmp_path / "m2.gguf").paths[0]) == sha(merged)


def test_merged_file_of_a_one_shard_split(tmp_path):
    src = make_gguf(tmp_path / "in.gguf", [8, 8])
    res = split_gguf(src, tmp_path / "o", max_tensors=10)
    assert [p.name for p in res.paths] == ["o-00001-of-00001.gguf"]
    with open_gguf(res.paths[0]) as m:
        assert isinstance(m, GGUFReader)  # one shard is a single file
    merge_gguf(res.paths[0], tmp_path / "m.gguf")
    with GGUFReader(tmp_path / "m.gguf") as r:
        assert r.kv[Key.SPLIT_COUNT] == 0 and list(r.kv)[-1] == Key.SPLIT_COUNT


def test_resplit_a_split_model(tmp_path, tiny):
    a = split_gguf(tiny, tmp_path / "a", max_tensors=5)
    b = split_gguf(a.paths[2], tmp_path / "b", max_tensors=7)  # any shard: the whole model
    direct = split_gguf(tiny, tmp_path / "c", max_tensors=7)
    assert [sha(p) for p in b.paths] == [sha(p) for p in direct.paths]


# --- reading shards ----------------------------------------------------------------------------

def test_sharded_reader_reads_like_the_single_file(tmp_path, tiny):
    res = split_gguf(tiny, tmp_path / "a", max_tensors=8)
    with GGUFReader(tiny) as r0:
        for given in res.paths:
            with open_gguf(given) as m:
                assert isinstance(m, ShardedReader) and m.n_split == 3
                assert m.path == res.paths[0] and m.paths == res.paths
                assert m.kv[Key.ARCHITECTURE] == "llama" and list(m.tensors) == list(r0.tensors)
                for name, t in r0.tensors.items():
                    assert m.tensors[name].shape == t.shape
                    assert np.array_equal(m.array(name), r0.array(name))
                    assert bytes(m.raw(name)) == bytes(r0.raw(name))
                readers = list(m)
            assert all(r._mm is None for r in readers)  # closed together
    with open_gguf(tiny) as single:
        assert isinstance(single, GGUFReader)


def test_model_runs_on_shards(tmp_path, tiny):
    from llmtk.model import load_model

    res = split_gguf(tiny, tmp_path / "a", max_tensors=6)
    tokens = np.array([1, 5, 9, 2], dtype=np.int32)
    with load_model(tiny) as m0, open_gguf(res.paths[1]) as shards, load_model(shards) as m1:
        np.testing.assert_array_equal(m1.forward(tokens), m0.forward(tokens))  # same weights, same logits


@pytest.fixture
def three(tmp_path):
    src = make_gguf(tmp_path / "in.gguf", [8] * 6)
    return split_gguf(src, tmp_path / "s", max_tensors=2).paths


def rewrite(path: Path, *, kv: dict | None = None, drop: tuple = (), tensors: dict | None = None) -> None:
    """Write `path` again with some split keys changed (`kv`: key -> (value, type)) or tensors renamed."""
    with GGUFReader(path) as r:
        entries = [(k, v, *r.kv_types[k]) for k, v in r.kv.items() if k not in drop]
        data = {(tensors or {}).get(n, n): (t, bytes(r.raw(n))) for n, t in r.tensors.items()}
    tmp = path.with_suffix(".new")
    with GGUFWriter(tmp) as w:
        for k, v, vt, it in entries:
            v, vt = (kv or {}).get(k, (v, vt))
            w.add_kv(k, v, vt, it)
        for n, (t, _) in data.items():
            w.add_tensor_info(n, t.shape, t.qtype)
        for n, (_, b) in data.items():
            w.write_tensor(n, b)
    os.replace(tmp, path)


def test_missing_shard(three):
    three[1].unlink()
    with pytest.raises(InputError, match=rf"^{three[1]}: no such file; shard 2 of the 3-way split model {three[0]}"):
        open_gguf(three[0])


def test_shard_with_other_count(three):
    rewrite(three[2], kv={Key.SPLIT_COUNT: (4, VT.UINT16)})
    with pytest.raises(GGUFFormatError, match=rf"^{three[2]}: split.count is 4, but {three[0]} says 3"):
        open_gguf(three[0])


def test_shard_with_wrong_number(tmp_path, three):
    rewrite(three[1], kv={Key.SPLIT_NO: (2, VT.UINT16)})
    with pytest.raises(GGUFFormatError, match=rf"^{three[1]}: split.no is 2, expected 1"):
        open_gguf(three[0])


def test_tensor_count_must_add_up(three):
    for p in three:
        rewrite(p, kv={Key.SPLIT_TENSORS_COUNT: (7, VT.INT32)})
    with pytest.raises(GGUFFormatError, match=rf"^{three[0]}: split.tensors.count is 7, but its 3 shards hold 6"):
        open_gguf(three[1])


def test_tensor_in_two_shards(three):
    rewrite(three[2], tensors={"t5": "t1"})
    with pytest.raises(GGUFFormatError, match=rf"^{three[2]}: tensor 't1' is also in {three[0]}"):
        open_gguf(three[0])


def test_shard_without_split_keys(three):
    rewrite(three[1], drop=(Key.SPLIT_COUNT,))
    with pytest.raises(GGUFFormatError, match=rf"^{three[1]}: has no split.count"):
        open_gguf(three[0])


def test_renamed_shard(tmp_path, three):
    moved = tmp_path / "model.gguf"
    shutil.copy(three[1], moved)
    with pytest.raises(InputError, match=rf"^{moved}: is shard 2 of 3 .* must end in -00002-of-00003.gguf"):
        open_gguf(moved)


def test_bad_split_no_type(three):
    rewrite(three[0], kv={Key.SPLIT_NO: ("zero", VT.STRING)})
    with pytest.raises(GGUFFormatError, match=rf"^{three[0]}: split.no has type STRING"):
        open_shards(three[0])


# --- merge inputs and outputs ------------------------------------------------------------------

def test_merge_refuses_existing_output(tmp_path, three):
    out = tmp_path / "m.gguf"
    out.write_bytes(b"keep")
    with pytest.raises(InputError, match="already exists"):
        merge_gguf(three[0], out)
    assert out.read_bytes() == b"keep"


def test_merge_refuses_non_split_and_merged(tmp_path, three):
    with pytest.raises(InputError, match="has no split.count"):
        merge_gguf(tmp_path / "in.gguf", tmp_path / "m.gguf")
    merge_gguf(three[0], tmp_path / "m.gguf")
    with pytest.raises(InputError, match="merged file already"):
        merge_gguf(tmp_path / "m.gguf", tmp_path / "m2.gguf")


def test_merge_dry_run_writes_nothing(tmp_path, three):
    res = merge_gguf(three[0], tmp_path / "m.gguf", dry_run=True)
    assert not res.written and res.n_tensors == 6 and res.inputs == three
    assert not (tmp_path / "m.gguf").exists()


# --- atomic writes -----------------------------------------------------------------------------

@pytest.mark.parametrize("fail_at", [1, 4, 6])
def test_failed_split_leaves_nothing(tmp_path, monkeypatch, fail_at):
    src = make_gguf(tmp_path / "in.gguf", [8] * 6)
    calls = {"n": 0}
    real = GGUFWriter.write_tensor

    def flaky(self, name, data):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise OSError(28, "No space left on device")
        return real(self, name, data)

    monkeypatch.setattr(GGUFWriter, "write_tensor", flaky)
    with pytest.raises(LlmtkError, match="No space left on device"):
        split_gguf(src, tmp_path / "s", max_tensors=2)
    assert shard_files(tmp_path) == ["in.gguf"]  # no shard, no temporary folder


def test_failed_rename_removes_placed_shards(tmp_path, monkeypatch):
    src = make_gguf(tmp_path / "in.gguf", [8] * 6)
    real = os.replace

    def replace(a, b):
        if str(b).endswith("-00003-of-00003.gguf"):
            raise OSError(13, "Permission denied")
        return real(a, b)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(LlmtkError, match="Permission denied"):
        split_gguf(src, tmp_path / "s", max_tensors=2)
    assert shard_files(tmp_path) == ["in.gguf"]


def test_split_refuses_to_overwrite_its_input(tmp_path, three):
    with pytest.raises(InputError, match="is also an input"):
        split_gguf(three[0], str(three[0])[:-len("-00001-of-00003.gguf")], max_tensors=2)


# --- byte-identity with llama-gguf-split (slow, needs the binary) ------------------------------

def _llama_gguf_split() -> str:
    exe = os.environ.get("LLAMA_GGUF_SPLIT")
    if not exe:
        pytest.skip("set LLAMA_GGUF_SPLIT to a llama-gguf-split binary to compare bytes with it")
    if not Path(exe).is_file():
        pytest.skip(f"LLAMA_GGUF_SPLIT={exe} is not a file")
    return exe


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--split-max-tensors", "1"], ["--split-max-tensors", "7"], [],
                                  ["--split-max-size", "4M"], ["--split-max-size", "10M"], ["--split-max-size", "40M"],
                                  ["--split-max-tensors", "5", "--no-tensor-first-split"]])
@pytest.mark.parametrize("model", [TINY, "smollm2"])
def test_same_bytes_as_llama_gguf_split(tmp_path, shared_dir, smollm2_path, model, args):
    exe = _llama_gguf_split()
    src = smollm2_path if model == "smollm2" else shared_dir / model
    ref = subprocess.run([exe, "--split", *args, str(src), str(tmp_path / "ref")], capture_output=True, check=False)
    opts: dict = {"no_tensor_first_split": "--no-tensor-first-split" in args}
    if "--split-max-tensors" in args:
        opts["max_tensors"] = int(args[args.index("--split-max-tensors") + 1])
    if "--split-max-size" in args:
        opts["max_size"] = parse_split_size(args[args.index("--split-max-size") + 1])
    if ref.returncode != 0:  # a first tensor larger than the size: both refuse, nothing is left
        with pytest.raises(InputError, match="would hold no tensor"):
            split_gguf(src, tmp_path / "ours", **opts)
        assert not list(tmp_path.glob("ours*"))
        return
    ours = split_gguf(src, tmp_path / "ours", **opts).paths
    refs = sorted(tmp_path.glob("ref-*.gguf"))
    assert [p.name[3:] for p in refs] == [p.name[4:] for p in ours]
    assert [sha(p) for p in ours] == [sha(p) for p in refs]
    subprocess.run([exe, "--merge", str(refs[0]), str(tmp_path / "ref-merged.gguf")], check=True, capture_output=True)
    merge_gguf(ours[0], tmp_path / "ours-merged.gguf")
    assert sha(tmp_path / "ours-merged.gguf") == sha(tmp_path / "ref-merged.gguf")
