"""Where the line's model comes from. The line never builds, fits or finds models itself: the app
hands it a `ModelSource` (a product's model store), tests and benchmarks a `FixedModel`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from station.core.result import StationEvent

if TYPE_CHECKING:
    from station.model.patchcore import PatchCore

__all__ = ["FixedModel", "ModelSource"]


class ModelSource(Protocol):
    """The model the line should run, looked up and loaded on the inspector's thread."""

    def prepare(self, report: Callable[[str], None], emit: Callable[[StationEvent], None]) -> None:
        """Called once before the first `locate()`: make the model available if that is this
        source's job (the demo product's first start). `report` shows why the line is still
        starting; `emit` records an event."""
        ...

    def locate(self) -> Path | None:
        """The version the line should run now, or None when there is none."""
        ...

    def load(self, path: Path) -> PatchCore:
        """Load a version (ModelError when it cannot be used)."""
        ...

    def release(self, model: PatchCore) -> None:
        """The line no longer uses `model` (switched or stopped)."""
        ...

    def missing(self) -> str:
        """Why there is no model, in words for the operator's banner."""
        ...


class FixedModel:
    """One loaded model, owned by the caller (tests, benchmarks): never reloaded nor closed."""

    def __init__(self, model: PatchCore) -> None:
        self.model = model

    def prepare(self, report: Callable[[str], None], emit: Callable[[StationEvent], None]) -> None:
        """Nothing to prepare."""

    def locate(self) -> Path | None:
        """The model's own folder."""
        return self.model.artifact.path

    def load(self, path: Path) -> PatchCore:
        """The model given."""
        return self.model

    def release(self, model: PatchCore) -> None:
        """The caller closes it."""

    def missing(self) -> str:
        """Never missing."""
        return ""
