"""The ordered metadata of a GGUF being converted, with the value types llama.cpp's writer uses.

Keys are the templates of gguf-py's `gguf.Keys` (`"{arch}.context_length"`), formatted with the
architecture. Writing a key twice keeps its first position and the last value, as gguf-py's
writer does (Gemma 3 overwrites several generic hyperparameters that way).
"""
from __future__ import annotations

import numbers
from typing import Any, Iterator, Sequence

from llmtk.errors import InputError
from llmtk.ggufio.constants import GGUFValueType as VT

KVEntry = tuple[Any, VT, "VT | None"]


class KVStore:
    """Key -> (value, value type, array item type), in insertion order."""

    def __init__(self, arch: str):
        self.arch = arch
        self.items: dict[str, KVEntry] = {}

    def _put(self, key: str, value: Any, vtype: VT, item: VT | None = None) -> None:
        self.items[key.format(arch=self.arch)] = (value, vtype, item)

    def u32(self, key: str, value: int) -> None:
        if not isinstance(value, numbers.Integral) or not 0 <= int(value) < 1 << 32:
            raise InputError(f"{key.format(arch=self.arch)} = {value!r:.40} does not fit uint32")
        self._put(key, int(value), VT.UINT32)

    def i32(self, key: str, value: int) -> None:
        if not isinstance(value, numbers.Integral) or not -(1 << 31) <= int(value) < 1 << 31:
            raise InputError(f"{key.format(arch=self.arch)} = {value!r:.40} does not fit int32")
        self._put(key, int(value), VT.INT32)

    def f32(self, key: str, value: float) -> None:
        if not isinstance(value, numbers.Real) or not abs(float(value)) <= 3.4028234663852886e38:
            raise InputError(f"{key.format(arch=self.arch)} = {value!r:.40} is not a finite float32")
        self._put(key, float(value), VT.FLOAT32)

    def bool(self, key: str, value: bool) -> None:
        self._put(key, bool(value), VT.BOOL)

    def str(self, key: str, value: str) -> None:
        self._put(key, str(value), VT.STRING)

    def strs(self, key: str, values: Sequence[str]) -> None:
        self._put(key, list(values), VT.ARRAY, VT.STRING)

    def i32s(self, key: str, values: Sequence[int]) -> None:
        self._put(key, [int(v) for v in values], VT.ARRAY, VT.INT32)

    def u32s(self, key: str, values: Sequence[int]) -> None:
        self._put(key, [int(v) for v in values], VT.ARRAY, VT.UINT32)

    def bools(self, key: str, values: Sequence[bool]) -> None:
        self._put(key, [bool(v) for v in values], VT.ARRAY, VT.BOOL)

    def f32s(self, key: str, values: Sequence[float]) -> None:
        self._put(key, [float(v) for v in values], VT.ARRAY, VT.FLOAT32)

    def remove(self, key: str) -> None:
        self.items.pop(key.format(arch=self.arch), None)

    def __contains__(self, key: str) -> bool:
        return key.format(arch=self.arch) in self.items

    def get(self, key: str, default: Any = None) -> Any:
        e = self.items.get(key.format(arch=self.arch))
        return default if e is None else e[0]

    def __iter__(self) -> Iterator[tuple[str, KVEntry]]:
        return iter(self.items.items())
