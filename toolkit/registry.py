"""The one registry of llmtk: names to things, for every table the rest of the code looks up.

Kernels by ggml type, converters by Hugging Face architecture, CLI commands, pre-tokenizers,
tokenizer models, inspect formats and eval tasks are each a `Registry`. One class gives them the
same rules, so a reader learns them once:

- registering a name twice is a programming error (`ValueError`), never a silent overwrite;
- looking up an unknown name raises the registry's user-facing error (`UnsupportedError` unless
  told otherwise) with one phrasing: ``unknown <what> 'x'; valid: a, b, c``;
- an entry may be lazy (``"module:attribute"``), imported on first lookup, so that listing the
  names (`llmtk --help`, error messages) imports nothing heavy.
"""
from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterator, TypeVar

from llmtk.errors import LlmtkError, UnsupportedError

V = TypeVar("V")


class Lazy:
    """A registry entry imported on first use: ``Lazy("llmtk.cli.commands.quantize:command")``."""

    __slots__ = ("target",)

    def __init__(self, target: str) -> None:
        if ":" not in target:
            raise ValueError(f"lazy target {target!r} is not 'module:attribute'")
        self.target = target

    @property
    def module(self) -> str:
        return self.target.split(":", 1)[0]

    def load(self) -> object:
        module, attr = self.target.split(":", 1)
        obj: object = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj

    def __repr__(self) -> str:
        return f"Lazy({self.target!r})"


class Registry(Generic[V]):
    """An ordered map of names to values with one set of rules (see the module docstring).

    `what` names the kind of thing in messages ("ggml type", "architecture"); `normalize` maps a
    name as the user spelled it to its key (e.g. `str.upper` for type names); `error` is the
    `LlmtkError` subclass raised for unknown names.
    """

    def __init__(self, what: str, *, normalize: Callable[[str], str] | None = None,
                 error: type[LlmtkError] = UnsupportedError) -> None:
        self.what = what
        self._normalize = normalize or (lambda s: s)
        self._error = error
        self._entries: dict[str, V | Lazy] = {}

    # --- filling ------------------------------------------------------------------------------

    def add(self, name: str, value: V | Lazy) -> V | Lazy:
        """Register `value` (or a `Lazy` target) under `name`; a second registration is an error."""
        key = self._normalize(name)
        if key in self._entries:
            raise ValueError(f"{self.what} {key!r} is registered twice")
        self._entries[key] = value
        return value

    def register(self, name: str) -> Callable[[V], V]:
        """Decorator form of `add`: ``@TASKS.register("hellaswag")``."""
        def deco(value: V) -> V:
            self.add(name, value)
            return value
        return deco

    # --- looking up ---------------------------------------------------------------------------

    def key(self, name: str) -> str:
        """The registered key of `name`, or the registry's error listing the valid names."""
        key = self._normalize(str(name))
        if key not in self._entries:
            raise self._error(f"unknown {self.what} {str(name)!r}; valid: {', '.join(self.names())}")
        return key

    def __getitem__(self, name: str) -> V:
        key = self.key(name)
        value = self._entries[key]
        if isinstance(value, Lazy):
            value = value.load()  # type: ignore[assignment]
            self._entries[key] = value
        return value  # type: ignore[return-value]

    def get(self, name: str, default: V | None = None) -> V | None:
        return self[name] if name in self else default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._normalize(name) in self._entries

    def names(self) -> list[str]:
        """Registered names in registration order; nothing lazy is imported."""
        return list(self._entries)

    def raw(self, name: str) -> V | Lazy:
        """The entry as registered (a `Lazy` stays unloaded), for listings that must stay cheap."""
        return self._entries[self.key(name)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> Iterator[tuple[str, V]]:
        """(name, value) pairs, loading lazy entries."""
        for name in list(self._entries):
            yield name, self[name]

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {len(self)} entries)"
