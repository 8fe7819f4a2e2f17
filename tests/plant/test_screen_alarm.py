"""A plant link's alarm reaches the screen: the status bar shows the app's active alarms."""

from __future__ import annotations

from station.core.result import LineStatus, StationState
from station.gui.status_bar import StatusBar, status_texts


def test_the_status_bar_shows_the_first_alarm_and_how_many_more(qtbot) -> None:
    lost = "MQTT broker 10.0.0.5:1883 lost: connection refused (12 messages waiting)"
    assert status_texts(LineStatus(StationState.RUNNING))["alarm"] == ""
    one = status_texts(LineStatus(StationState.RUNNING, alarms=(lost,)))["alarm"]
    assert one.startswith("\u26a0 MQTT broker") and len(one) <= 36
    bar = StatusBar()
    qtbot.addWidget(bar)
    assert bar.set_status(LineStatus(StationState.RUNNING, alarms=(lost, "disk low")))
    shown = bar.text("alarm")
    # Long alarms are cut so that the count stays visible; the whole text is the tooltip.
    assert shown.startswith("\u26a0 MQTT broker 10.0.0.5:1883 lost") and shown.endswith(
        "\u2026 (+1 more)"
    )
    assert bar.items["alarm"].toolTip() == f"{lost}\ndisk low"
    assert bar.set_status(LineStatus(StationState.RUNNING))
    assert bar.text("alarm") == ""


def test_without_an_alarm_camera_and_model_have_the_room(qtbot) -> None:
    """At 1280 px the empty alarm item took a third of the row and cut the model's limit off."""
    bar = StatusBar()
    qtbot.addWidget(bar)
    bar.resize(1150, 40)  # the bar's width in the 1280 px window, beside the navigation
    bar.show()
    status = LineStatus(
        StationState.RUNNING, camera="replay test", model_version="demo/v0001", threshold=22.94
    )
    bar.set_status(status)
    qtbot.wait(10)
    model = bar.items["model"]
    assert not bar.items["alarm"].isVisible()
    assert model.width() >= model.fontMetrics().horizontalAdvance(model.text())
    bar.set_status(LineStatus(StationState.RUNNING, alarms=("disk low",)))
    assert bar.items["alarm"].isVisible() and bar.text("alarm") == "\u26a0 disk low"
