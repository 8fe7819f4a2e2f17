"""One lifecycle for every worker thread: setup -> loop -> teardown, stop checked between steps."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Worker:
    """Base class for the station's threads.

    Subclasses implement `setup()`, `step()` (one unit of work, e.g. one frame; returns False to
    finish) and `teardown()`. `stop()` sets an event that `step()` boundaries honour, so a stop
    never cuts a frame in half. An exception in any phase is kept in `error` and reported through
    `on_failure`, and teardown still runs.
    """

    name = "worker"

    def __init__(self, on_failure: Callable[[Worker, BaseException], None] | None = None) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_failure = on_failure
        self.error: BaseException | None = None

    # -- subclass hooks -------------------------------------------------------------------
    def setup(self) -> None:
        """Acquire resources in the worker's own thread."""

    def step(self) -> bool:
        """Do one unit of work; return False when there is no more to do."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Release resources; runs after a stop, the end of work, or a failure."""

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep that wakes on stop; returns True if a stop was requested."""
        return self._stop.wait(seconds)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when it has ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            self.setup()
            while not self._stop.is_set():
                if not self.step():
                    break
        except BaseException as exc:
            self.error = exc
            log.exception("%s failed", self.name)
            if self._on_failure is not None:
                self._on_failure(self, exc)
        finally:
            try:
                self.teardown()
            except Exception:
                log.exception("%s teardown failed", self.name)
