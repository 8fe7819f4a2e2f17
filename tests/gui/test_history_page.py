"""History and reports on a real station: the line records real demo parts (SQLite, archived
images), QA filters them, opens a part, records a disposition (audited), an operator confirms a
NOK from the NOK detail, a shift report is previewed and exported; screenshots of each screen in
both themes at 1280x800 and 1920x1080."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

from PySide6.QtCore import Qt
from screens import SIZES, Shooter, discard, settle, wait_until  # tests/gui/screens.py

from station.core.result import StationState

pytestmark = pytest.mark.slow

USERS = (("quinn", "qa", "3333"), ("olga", "operator", "4444"))
PARTS = 60


@pytest.fixture(scope="module")
def station(qapp: Any, make_data_dir: Any, gui_config: Any) -> Iterator[tuple[Any, Any]]:
    """(app, window): the line has recorded PARTS demo parts and is paused."""
    from station.app import StationApp
    from station.gui.main_window import MainWindow

    data = make_data_dir()
    cfg = gui_config(data, fps=20.0)
    app = StationApp(cfg, data)
    for name, role, pin in USERS:
        app.access.add_user(app.shell_session(), name, role, pin)
    app.start()
    window = MainWindow(app, cfg)
    window.resize(*SIZES[0])
    window.show()
    wait_until(lambda: app.status().state == StationState.RUNNING, what="the line running")
    wait_until(lambda: app.status().counters.inspected >= PARTS, 120, what=f"{PARTS} parts")
    app.pause(app.shell_session(), reason="the history tests want a still database")
    wait_until(lambda: app.status().state == StationState.PAUSED, what="the line paused")
    time.sleep(1.0)  # a part in the model when the pause came is still judged and recorded
    assert app.flush(10)
    settle()
    yield app, window
    window._can_close = True
    app.stop(30.0)
    discard(window)
    app.close()


def login_as(window: Any, name: str, pin: str) -> None:
    window.ask_login("test")
    panel = window.login_panel
    panel.choose(name)
    panel.type_pin(pin)
    panel._submit()
    settle()
    assert window.session.user == name, window.login_panel.message.text()


def history(window: Any) -> Any:
    window.go("history")
    settle()
    page = window.pages["history"]
    assert window.stack.currentWidget() is page
    return page


def pick(combo: Any, text: str) -> None:
    i = combo.findText(text)
    assert i >= 0, (text, [combo.itemText(j) for j in range(combo.count())])
    combo.setCurrentIndex(i)
    settle()


def test_history_filters_sorts_and_pages(station: Any, qtbot: Any, shoot: Shooter) -> None:
    app, window = station
    login_as(window, "quinn", "3333")
    page = history(window)
    pick(page.when, "All time")
    db = app.db()
    everything = db.query_inspections()
    assert page.table.rowCount() == min(50, len(everything))
    assert page.table.item(0, 1).text() == everything[0].part_id  # newest first
    shoot(window, "30-history")

    before = len(db.query_inspections(verdict="NOK"))
    pick(page.verdict, "NOK")
    noks = db.query_inspections(verdict="NOK")
    assert noks, "the demo replay has defective parts"
    shown = [page.table.item(i, 5).text() for i in range(page.table.rowCount())]
    assert set(shown) == {"NOK"}
    assert page.page.total == before == len(noks) and not page.page.capped
    assert page.status.text().endswith(f"of {page.page.total_text}")

    pick(page.sort, "Highest score")
    scores = [r.score for r in page.rows]
    assert scores == sorted(scores, reverse=True)
    page.part.setText(noks[-1].part_id.lower()[:-2])  # the start of an id, any case
    qtbot.mouseClick(page.search_button, Qt.MouseButton.LeftButton)
    settle()
    assert all(r.part_id.startswith(noks[-1].part_id[:-2]) for r in page.rows) and page.rows
    qtbot.mouseClick(page.reset_button, Qt.MouseButton.LeftButton)
    settle()
    assert page.verdict.currentIndex() == 0 and page.part.text() == ""

    # Paging: page 2 continues where page 1 ended, and back again.
    pick(page.when, "All time")
    if page.page.next_key is None:
        pytest.skip("fewer than one page recorded")
    first = [r.id for r in page.rows]
    qtbot.mouseClick(page.older_button, Qt.MouseButton.LeftButton)
    settle()
    second = [r.id for r in page.rows]
    assert second and max(second) < min(first)
    assert page.status.text().startswith("51-")
    qtbot.mouseClick(page.newer_button, Qt.MouseButton.LeftButton)
    settle()
    assert [r.id for r in page.rows] == first


def test_detail_and_a_qa_disposition_are_audited(station: Any, qtbot: Any, shoot: Shooter) -> None:
    app, window = station
    if window.session.user != "quinn":
        login_as(window, "quinn", "3333")
    page = history(window)
    pick(page.when, "All time")
    pick(page.verdict, "NOK")
    row = page.rows[0]
    page.open_row(0)
    settle()
    assert page.detail_sheet.isVisible()
    detail = page.detail
    assert detail.view.isVisible() and detail.view.result is not None  # NOK images are archived
    assert detail.values["verdict"].text() == "NOK"
    assert row.part_id in page.detail_sheet.heading.text()
    kinds = {d for d, b in detail.dispose.kind_buttons.items() if not b.isHidden()}
    assert {k.value for k in kinds} == {"confirmed_defect", "false_reject", "rework"}
    shoot(window, "31-history-detail")

    qtbot.mouseClick(detail.dispose.kind_buttons[_kind("false_reject")], Qt.MouseButton.LeftButton)
    assert detail.dispose.steps.currentIndex() == 1
    shoot(window, "32-history-disposition-reason")
    qtbot.mouseClick(detail.dispose.reason_buttons[0], Qt.MouseButton.LeftButton)
    settle()
    stored = app.db().get_inspection(row.id)
    assert stored.disposition == "false_reject"
    audit = app.access.audit.rows()[-1]
    assert (audit.user, audit.action, audit.object, audit.after) == (
        "quinn", "disposition", row.part_id, "false_reject",
    )  # fmt: skip
    assert "Part is good" in detail.history.text() and "quinn" in detail.history.text()
    assert "Recorded: False reject" in detail.message.text()
    assert page.table.item(0, 6).text() == "False reject"  # the list shows the standing one
    page.detail_sheet.dismiss()

    # A part that passed: only 'missed defect' fits, and QA may record it.
    pick(page.verdict, "OK")
    page.open_row(0)
    settle()
    shown = {d.value for d, b in page.detail.dispose.kind_buttons.items() if not b.isHidden()}
    assert shown == {"missed_defect"}
    page.detail_sheet.dismiss()


def _kind(value: str) -> Any:
    from station.app.quality import Disposition

    return Disposition(value)


def test_operator_confirms_a_nok_from_the_nok_detail(station: Any, qtbot: Any) -> None:
    app, window = station
    window.logout("test")
    settle()
    assert window.session.anonymous  # the touchscreen's default operator, no PIN
    op = window.operator
    wait_until(lambda: bool(op.nok_strip.results), 60, what="a NOK part in the strip")
    result = op.nok_strip.results[0]
    op.open_nok(result)
    settle()
    panel = op.nok_detail.dispose
    shown = {d.value for d, b in panel.kind_buttons.items() if not b.isHidden()}
    assert shown == {"confirmed_defect", "false_reject", "rework"}
    assert result.part_id in op.nok_sheet.heading.text()
    qtbot.mouseClick(panel.kind_buttons[_kind("confirmed_defect")], Qt.MouseButton.LeftButton)
    qtbot.mouseClick(panel.reason_buttons[1], Qt.MouseButton.LeftButton)
    settle()
    row = app.db().get_part(result.part_id)
    assert row is not None and row.disposition == "confirmed_defect"
    last = app.access.audit.rows()[-1]
    assert (last.action, last.object, last.after) == (
        "disposition",
        result.part_id,
        "confirmed_defect",
    )
    assert "Recorded" in panel.standing.text()
    op.nok_sheet.dismiss()


def test_shift_report_preview_and_export(station: Any, qtbot: Any, shoot: Shooter) -> None:
    app, window = station
    login_as(window, "quinn", "3333")
    page = history(window)
    qtbot.mouseClick(page.report_button, Qt.MouseButton.LeftButton)
    settle()
    r = page.report
    assert page.report_sheet.isVisible() and r.shift.count() >= 2
    assert r.destination.itemText(0).startswith("Reports folder")
    qtbot.mouseClick(r.preview_button, Qt.MouseButton.LeftButton)
    wait_until(lambda: not page._busy, 120, what="the preview")
    settle()
    assert "inspected" in r.message.text(), r.message.text()
    if shutil.which("pdftoppm"):
        assert len(r._pictures) >= 2  # pages rendered for the preview
    shoot(window, "33-history-report")
    qtbot.mouseClick(r.export_button, Qt.MouseButton.LeftButton)
    wait_until(lambda: not page._busy, 120, what="the export")
    settle()
    assert "Written:" in r.message.text(), r.message.text()
    shift = r.shift.currentData()
    pdf = app.data_dir / "reports" / f"shift_{shift.file_stem}.pdf"
    csv = pdf.with_suffix(".csv")
    assert pdf.is_file() and csv.is_file()
    if shutil.which("pdfinfo"):
        info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True)
        assert "Pages:" in info.stdout
    lines = csv.read_text().splitlines()
    assert lines[0].startswith("part_id,time,product")
    recorded = app.db().query_inspections(shift.start, shift.end)
    assert len(lines) - 1 == len(recorded)
    page.report_sheet.dismiss()
