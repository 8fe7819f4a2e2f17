"""The Python 3.10 stand-ins (JetPack 6) behave like the 3.11 originals the station relies on."""

from __future__ import annotations

import enum
import json
import sys

import pytest

from station.core.compat import StrEnum310


@pytest.mark.skipif(sys.version_info < (3, 11), reason="compares with enum.StrEnum (3.11+)")
def test_strenum_stand_in_prints_compares_and_serialises_like_strenum():
    class New(enum.StrEnum):  # novermin
        OK = "OK"
        CAMERA_LOST = "camera_lost"

    class Old(StrEnum310):
        OK = "OK"
        CAMERA_LOST = "camera_lost"

    for new, old in zip(New, Old, strict=True):
        assert str(old) == str(new) == new.value
        assert f"{old}" == f"{new}" and f"{old:>12}" == f"{new:>12}"
        assert old == new.value and old.value == new.value
        assert json.dumps({"s": old}) == json.dumps({"s": new})
        assert Old(new.value) is old


def test_station_enums_are_strings_that_print_as_their_value():
    """The records store `str(verdict)`; on every version that must be 'OK', not 'Verdict.OK'."""
    from station.core.result import StationState, Verdict
    from station.runtime.base import RuntimeKind

    assert str(Verdict.NOK) == "NOK" and f"{StationState.CAMERA_LOST}" == "camera_lost"
    assert RuntimeKind("onnx") is RuntimeKind.ONNX
