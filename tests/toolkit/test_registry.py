"""llmtk.registry: the rules every table of the code shares (duplicates, unknown names, laziness)."""
from __future__ import annotations

import sys

import pytest

from llmtk.errors import InputError, UnsupportedError
from llmtk.registry import Lazy, Registry


def test_duplicates_are_errors_and_unknown_names_list_the_valid_ones():
    reg: Registry[int] = Registry("colour", normalize=str.lower)
    reg.add("Red", 1)
    reg.register("blue")(2)
    with pytest.raises(ValueError, match="colour 'red' is registered twice"):
        reg.add("RED", 3)
    assert reg["RED"] == 1 and "Blue" in reg and 5 not in reg and len(reg) == 2
    assert reg.names() == ["red", "blue"] and list(reg.items()) == [("red", 1), ("blue", 2)]
    with pytest.raises(UnsupportedError, match=r"^unknown colour 'green'; valid: red, blue$"):
        reg["green"]
    assert reg.get("green") is None
    strict: Registry[int] = Registry("option", error=InputError)
    with pytest.raises(InputError):
        strict["x"]


def test_lazy_entries_import_on_first_lookup_only():
    sys.modules.pop("json.tool", None)
    reg: Registry = Registry("thing")
    reg.add("tool", Lazy("json.tool:main"))
    assert reg.names() == ["tool"] and isinstance(reg.raw("tool"), Lazy) and "json.tool" not in sys.modules
    main = reg["tool"]
    assert callable(main) and "json.tool" in sys.modules and reg.raw("tool") is main
    with pytest.raises(ValueError, match="module:attribute"):
        Lazy("json.tool")


@pytest.mark.parametrize("table", ["llmtk.cli.main:COMMANDS", "llmtk.converters.registry:ARCHITECTURES",
                                   "llmtk.tokenizer.pretokenize:PRE_TOKENIZERS",
                                   "llmtk.tokenizer.core:TOKENIZER_MODELS", "llmtk.evals.tasks:TASKS",
                                   "llmtk.cli.commands.inspect:FORMATS", "llmtk.model.arch:ARCHS"])
def test_every_table_is_a_registry_whose_entries_load(table):
    reg = Lazy(table).load()
    assert isinstance(reg, Registry) and len(reg) > 0
    for _, value in reg.items():  # lazy targets all exist
        assert value is not None
