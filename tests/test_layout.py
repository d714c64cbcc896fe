"""The house rules of docs/architecture.md, checked on the source (AST) and on what imports load.

- kernels import nothing from the model, the CLI, file I/O, click or rich;
- nothing outside `llmtk.cli` imports click or rich;
- the GGUF container package (`llmtk.ggufio`) never quantizes nor runs a model;
- each format fact and bit-exact helper is defined exactly once;
- GGUF metadata keys are spelled only in `ggufio/constants.py` (converters use `gguf.Keys`).
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# source folder -> import name, as pyproject.toml's package-dir maps them
PACKAGES = {"toolkit": "llmtk", "kernels": "llmtk.kernels", "converters": "llmtk.converters",
            "evals": "llmtk.evals"}


def _modules() -> dict[str, Path]:
    """Every module of the package by its import name."""
    out = {}
    for folder, name in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if folder == "toolkit" and parts and parts[0] in PACKAGES:
                continue
            out[".".join([name, *parts])] = path
    return out


MODULES = _modules()


def _imports(module: str, path: Path) -> set[str]:
    """Absolute names of everything `module` imports, at any depth of its code."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)
    return names


def _imports_any(names: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes))


def test_the_package_map_finds_every_folder():
    assert "llmtk.kernels" in MODULES and "llmtk.cli.main" in MODULES and "llmtk.ggufio.reader" in MODULES
    assert "llmtk.converters.registry" in MODULES and "llmtk.evals.tasks" in MODULES


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("llmtk.kernels")))
def test_kernels_know_no_model_cli_or_files(module):
    forbidden = ("llmtk.model", "llmtk.cli", "llmtk.quantize", "llmtk.evals", "llmtk.converters",
                 "llmtk.tokenizer", "llmtk.bench", "llmtk.ggufio.reader", "llmtk.ggufio.writer",
                 "llmtk.ggufio.edit", "llmtk.ggufio.imatrix_file", "llmtk.ggufio.inspect", "llmtk.resources",
                 "click", "rich")
    assert not _imports_any(_imports(module, MODULES[module]), forbidden)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.startswith("llmtk.cli")))
def test_only_the_cli_imports_click_or_rich(module):
    assert not _imports_any(_imports(module, MODULES[module]), ("click", "rich", "tqdm"))


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("llmtk.ggufio")))
def test_the_container_never_quantizes(module):
    forbidden = ("llmtk.kernels", "llmtk.quantize", "llmtk.model", "llmtk.evals", "llmtk.cli")
    assert not _imports_any(_imports(module, MODULES[module]), forbidden)


def test_importing_the_kernels_loads_no_model_cli_or_file_io():
    code = ("import sys, numpy as np; import llmtk.kernels as k; "
            "k.dequantize(k.quantize(np.ones((1, 256), np.float32), 'Q4_K'), 'Q4_K', (1, 256)); "
            "print(' '.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                text=True).stdout.split())
    bad = [m for m in loaded if m.split(".")[0] in ("click", "rich")
           or any(m == p or m.startswith(p + ".") for p in
                  ("llmtk.model", "llmtk.cli", "llmtk.ggufio.reader", "llmtk.ggufio.writer", "llmtk.quantize"))]
    assert not bad


# name -> where it must be defined (module-level assignment, def or class), and nowhere else
ONE_HOME = {
    "QK_K": "llmtk.ggufio.constants",
    "K_SCALE_SIZE": "llmtk.ggufio.constants",
    "GGML_QUANTIZATION_VERSION": "llmtk.ggufio.constants",
    "GGML_TYPE_TRAITS": "llmtk.ggufio.constants",
    "GGMLType": "llmtk.ggufio.constants",
    "LlamaFileType": "llmtk.ggufio.constants",
    "Key": "llmtk.ggufio.constants",
    "TokenizerKey": "llmtk.ggufio.constants",
    "Registry": "llmtk.registry",
}
# bit-exact helpers: exactly one definition each, wherever kernels/ keeps it
ONE_DEFINITION = ("GROUP_MAX_EPS", "fp32_to_fp16", "nearest_int", "make_qx_quants", "make_qkx2_quants",
                  "make_qkx3_quants", "make_qp_quants")


def _definitions() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for module, path in MODULES.items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                found.setdefault(node.name, []).append(module)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Name):
                        found.setdefault(t.id, []).append(module)
    return found


DEFINITIONS = _definitions()


@pytest.mark.parametrize("name", sorted(ONE_HOME))
def test_each_fact_has_one_home(name):
    assert DEFINITIONS.get(name) == [ONE_HOME[name]]


@pytest.mark.parametrize("name", ONE_DEFINITION)
def test_each_bit_exact_helper_is_defined_once(name):
    homes = DEFINITIONS.get(name, [])
    assert len(homes) <= 1, homes
    assert all(h.startswith("llmtk.kernels") for h in homes)


KEY_LITERAL = re.compile(r"^(?!.*\.gguf$)(general|split|quantize\.imatrix|imatrix|tokenizer\.ggml)\.[a-z_.]+$")


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "llmtk.ggufio.constants"))
def test_gguf_keys_are_spelled_in_one_place(module):
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    literals = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                and id(n) not in docstrings and KEY_LITERAL.match(n.value)]
    assert not literals


def test_keys_agree_with_the_gguf_package():
    import gguf

    from llmtk.ggufio.constants import GGML_QUANTIZATION_VERSION, Key, TokenizerKey

    assert GGML_QUANTIZATION_VERSION == gguf.GGML_QUANT_VERSION

    theirs = {"ALIGNMENT": gguf.Keys.General.ALIGNMENT, "ARCHITECTURE": gguf.Keys.General.ARCHITECTURE,
              "TYPE": gguf.Keys.General.TYPE, "NAME": gguf.Keys.General.NAME,
              "BASENAME": gguf.Keys.General.BASENAME, "SIZE_LABEL": gguf.Keys.General.SIZE_LABEL,
              "FILE_TYPE": gguf.Keys.General.FILE_TYPE,
              "QUANTIZATION_VERSION": gguf.Keys.General.QUANTIZATION_VERSION,
              "BLOCK_COUNT": gguf.Keys.LLM.BLOCK_COUNT, "EMBEDDING_LENGTH": gguf.Keys.LLM.EMBEDDING_LENGTH,
              "SPLIT_NO": gguf.Keys.Split.LLM_KV_SPLIT_NO, "SPLIT_COUNT": gguf.Keys.Split.LLM_KV_SPLIT_COUNT,
              "SPLIT_TENSORS_COUNT": gguf.Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT,
              "CHAT_TEMPLATE": gguf.Keys.Tokenizer.CHAT_TEMPLATE}
    for attr, value in theirs.items():
        assert getattr(Key, attr) == value, attr
    assert TokenizerKey.TOKENS == gguf.Keys.Tokenizer.LIST
    shared = [a for a in vars(TokenizerKey) if a.isupper() and hasattr(gguf.Keys.Tokenizer, a)]
    assert len(shared) > 20
    for attr in shared:
        assert getattr(TokenizerKey, attr) == getattr(gguf.Keys.Tokenizer, attr), attr


def test_no_module_is_defined_twice_under_two_names():
    stems = Counter(p.resolve() for p in MODULES.values())
    assert all(n == 1 for n in stems.values())


def test_pyproject_ships_every_subpackage():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    assert found <= listed, sorted(found - listed)


def _room(module: str) -> str | None:
    parts = module.split(".")
    return None if parts[0] != "llmtk" or len(parts) == 1 else parts[1]


def test_the_rooms_import_each_other_without_cycles():
    """The import graph between the package's rooms (ggufio, kernels, model, quantize, ...) is a DAG,
    as docs/architecture.md draws it; lazy imports inside functions count too."""
    edges: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        a = _room(module)
        for name in _imports(module, path):
            b = _room(name)
            if a and b and a != b and not b.startswith("__"):
                edges.setdefault(a, set()).add(b)
    seen: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(edges.get(node, ())):
            assert seen.get(nxt) != 1, " -> ".join(path + [node, nxt])
            if nxt not in seen:
                visit(nxt, path + [node])
        seen[node] = 2

    for node in sorted(edges):
        if node not in seen:
            visit(node, [])
    assert "kernels" in edges and "cli" in edges
