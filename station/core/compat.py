"""Python 3.10 support: JetPack 6 (Jetson Orin) ships Python 3.10, and its TensorRT bindings are
built for that interpreter, so the station must run there, not only on 3.11."""

from __future__ import annotations

import sys
from enum import Enum


class StrEnum310(str, Enum):
    """3.11's StrEnum on 3.10: members are strings and print as their value.

    Defined on every version so its tests run where CI runs (3.11).
    """

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return str(self.value).__format__(spec)


if sys.version_info >= (3, 11):
    from enum import StrEnum  # novermin (guarded: 3.11+ only)

    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

    StrEnum = StrEnum310


__all__ = ["StrEnum", "StrEnum310", "tomllib"]
