"""Part ids a person can quote: `DEMO-20261201-000123` (product, day of the frame, sequence).

Unlike frame ids they never skip (a dropped frame is no part) and never restart within a day: a
restarted station continues from the highest sequence recorded for that day.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

_NOT_CODE = re.compile(r"[^A-Z0-9]+")


def product_code(product: str) -> str:
    """The product name as it appears in part ids: upper case, other characters as '-'."""
    return _NOT_CODE.sub("-", product.upper()).strip("-") or "PART"


class PartIds:
    """Gives each result its id from the frame time; thread-safe."""

    def __init__(self, product: str, last_sequence: Callable[[str], int]) -> None:
        """`last_sequence(prefix)` is the highest sequence stored for a day's prefix."""
        self.code = product_code(product)
        self._last = last_sequence
        self._lock = threading.Lock()
        # Every day seen this run: a clock set back a day must not reuse an id still on its
        # way to the database (a duplicate id would be taken for a row written twice).
        self._seq: dict[str, int] = {}

    def __call__(self, timestamp: float) -> str:
        """The next id for a part seen at `timestamp`."""
        prefix = f"{self.code}-{time.strftime('%Y%m%d', time.localtime(timestamp))}-"
        with self._lock:
            seq = self._seq.get(prefix)
            if seq is None:  # a new day (or the first part): continue what is recorded for it
                seq = self._last(prefix)
            seq += 1
            self._seq[prefix] = seq
            return f"{prefix}{seq:06d}"
