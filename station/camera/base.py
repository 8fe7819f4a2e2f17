"""The camera contract: every source yields `Frame` records through the same small protocol."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from station.core.errors import CameraError
from station.core.result import BadFrame, Frame

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is 3.11+; JetPack 6 has 3.10

__all__ = ["Camera", "CameraContext", "CameraError", "CameraInfo"]


@dataclass(frozen=True)
class CameraInfo:
    """What the status bar and `station cameras` show about an open camera."""

    kind: str
    vendor: str = ""
    model: str = ""
    serial: str = ""
    user_name: str = ""
    fps: float | None = None
    extra: dict[str, str] = field(default_factory=dict)


class CameraContext:
    """`with camera:` opens and always closes; shared by every camera class."""

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@runtime_checkable
class Camera(Protocol):
    """A source of frames. Raises `CameraError` on open failure or loss; never swallows it."""

    def open(self) -> None:
        """Open the device or source; idempotent. Raises CameraError with the reason."""

    def close(self) -> None:
        """Release the device; safe to call twice and after a loss."""

    def frames(self) -> Iterator[Frame | BadFrame]:
        """Yield frames until closed or exhausted; raises CameraError on loss or timeout. A
        frame that cannot be delivered (unreadable, over the size limit) comes as a BadFrame
        with the reason, for the line to count and record."""

    def info(self) -> CameraInfo:
        """Describe the opened camera."""

    def __enter__(self) -> Camera: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
