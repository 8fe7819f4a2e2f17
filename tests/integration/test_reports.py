"""Shift reports on a real shift: the line on the demo replay for 500+ parts with a camera loss
and dispositions, the PDF read back with poppler (pdfinfo, pdftotext, pdftoppm) against the
database, the CSV row by row; shift windows; the report written by itself at the shift's end."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from test_pipeline import line_config, station_factory, wait_until  # tests/integration

from station.app import StationApp
from station.app.quality import ShiftReporter, default_names
from station.config import StationConfig
from station.core.errors import StationError
from station.core.result import StationEvent, StationState, Verdict
from station.model.patchcore import PatchCore
from station.records import Database, db_path
from station.records.shifts import (
    current_shift,
    parse_shift,
    previous_shift,
    shift_key,
    shift_window,
)

__all__ = ["station_factory"]  # the fixture, used by name

POPPLER = shutil.which("pdftotext") and shutil.which("pdfinfo") and shutil.which("pdftoppm")
PARTS = 520


def _local(y: int, mo: int, d: int, h: int, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi).timestamp()


# -- shift windows -------------------------------------------------------------------------------
def test_shift_windows_follow_the_configured_start_hours() -> None:
    s = shift_window("2026-12-01/06")
    assert (s.start, s.end) == (_local(2026, 12, 1, 6), _local(2026, 12, 1, 14))
    night = shift_window("2026-12-01/22")  # ends the next morning
    assert night.end == _local(2026, 12, 2, 6)
    assert night.label == "2026-12-01 22:00-2026-12-02 06:00"
    at_3am = _local(2026, 12, 2, 3)
    assert current_shift(at_3am).key == "2026-12-01/22"
    assert previous_shift(current_shift(at_3am)).key == "2026-12-01/14"
    assert parse_shift("previous", now=_local(2026, 12, 1, 7)).key == "2026-11-30/22"
    assert parse_shift("current", now=_local(2026, 12, 1, 7)).key == "2026-12-01/06"
    two = shift_window("2026-12-01/07", shift_hours=[7, 19])
    assert two.end == _local(2026, 12, 1, 19) and shift_key(two.end - 1, [7, 19]) == two.key


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("2026-12-01/05", "no shift starts at 05:00; shifts start at 06:00, 14:00, 22:00"),
        ("yesterday", "write it as YYYY-MM-DD/HH"),
        ("2026-02-30/06", "is not a date"),
    ],
)
def test_a_wrong_shift_is_named(text: str, words: str) -> None:
    with pytest.raises(StationError, match=re.escape(words)):
        parse_shift(text)


# -- a real shift ---------------------------------------------------------------------------------
def _pdftext(pdf: Path) -> str:
    out = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    )
    return out.stdout


def _value(text: str, label: str) -> int:
    m = re.search(rf"^\s*{re.escape(label)}\s+(\d+)\b", text, re.MULTILINE)
    assert m, f"'{label}' not found in the report text"
    return int(m.group(1))


@pytest.mark.slow
@pytest.mark.skipif(not POPPLER, reason="poppler-utils (pdftotext, pdfinfo, pdftoppm) missing")
def test_report_of_a_real_shift_matches_the_database(
    demo_product: Path,
    demo_patchcore: PatchCore,
    station_factory: Callable[..., StationApp],
    tmp_path: Path,
) -> None:
    replay = tmp_path / "replay"
    shutil.copytree(demo_product / "test", replay)
    data = tmp_path / "data"
    station = station_factory(line_config(replay, fps=0.0), data, model=demo_patchcore)
    station.access.add_user(station.shell_session(), "quinn", "qa", "3333")
    shift = station.parse_shift("current")
    station.start()
    wait_until(lambda: station.status().counters.inspected >= PARTS // 2, 300, "half the parts")
    gone = tmp_path / "replay_gone"
    replay.rename(gone)  # the camera is unplugged for a moment
    wait_until(lambda: station.status().state == StationState.CAMERA_LOST, 30, "camera lost")
    time.sleep(0.5)
    gone.rename(replay)
    wait_until(lambda: station.status().state == StationState.RUNNING, 30, "camera back")
    wait_until(lambda: station.status().counters.inspected >= PARTS, 300, f"{PARTS} parts")
    assert station.stop(30)
    if station.parse_shift("current").key != shift.key:
        pytest.skip("a shift ended during the run")

    qa = station.login("quinn", "3333", via="test")
    operator = station.default_session()
    db = Database(db_path(data))
    rows = db.query_inspections(shift.start, shift.end)
    noks = [r for r in rows if r.verdict == Verdict.NOK]
    oks = [r for r in rows if r.verdict == Verdict.OK]
    assert len(noks) >= 6 and len(oks) >= 2
    station.dispose(operator, noks[0].part_id, "confirmed_defect", "Scratch or dent")
    station.dispose(qa, noks[1].part_id, "false_reject", "Part is good")
    station.dispose(qa, noks[2].part_id, "false_reject", "Dust on the part, cleaned, good")
    station.dispose(operator, noks[3].part_id, "rework", "Sent to the rework station")
    station.dispose(qa, noks[3].part_id, "confirmed_defect", "Rework found the defect")  # latest
    station.dispose(qa, oks[0].part_id, "missed_defect", "Found at final check")

    pdf, out_csv = tmp_path / "out" / "shift.pdf", tmp_path / "out" / "shift.csv"
    files = station.shift_report(qa, shift, pdf=pdf, csv=out_csv)
    assert files.rows == len(rows)

    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True)
    pages = int(re.search(r"Pages:\s+(\d+)", info.stdout).group(1))  # type: ignore[union-attr]
    assert pages >= 2
    text = _pdftext(pdf)
    counts = db.shift_counts(shift.key)
    assert _value(text, "Inspected") == len(rows) == counts.inspected
    assert _value(text, "OK") == len(oks)
    assert _value(text, "NOK") == len(noks) == counts.nok
    assert _value(text, "Not recorded") == counts.unrecorded == 0
    assert _value(text, "Dropped frames") == counts.dropped
    assert _value(text, "Confirmed defect") == 2  # noks[0], and noks[3] whose latest it is
    assert _value(text, "False reject") == 2
    assert _value(text, "Sent to rework") == 0
    assert _value(text, "Missed defect") == 1
    assert f"{2 / len(rows) * 100:.2f} %" in text  # the confirmed false-reject rate
    assert "camera lost" in text and "camera back" in text
    assert "demo/v0001" in text and f"{demo_patchcore.threshold:.4g}" in text
    assert f"page 1 of {pages}" in text and f"page {pages} of {pages}" in text
    assert "generated" in text and "quinn (test)" in text
    assert noks[1].part_id in text  # the disposition list names the part
    assert re.search(r"quinn \(qa\)\s+disposition", text)  # the audit trail of the shift

    with out_csv.open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(rows)
    by_id = {r.part_id: r for r in rows}
    assert {t["part_id"] for t in table} == set(by_id)
    for t in table:
        r = by_id[t["part_id"]]
        assert t["verdict"] == r.verdict.value and float(t["score"]) == pytest.approx(
            r.score, abs=1e-4
        )
        assert t["model_version"] == "demo/v0001" and t["product"] == "demo"
        assert t["limit"] == f"{r.threshold:.4f}"
        assert (t["image_path"] or None) == r.image_path
    assert by_id[noks[3].part_id].disposition is None  # the rows above were read before
    assert next(t for t in table if t["part_id"] == noks[3].part_id)["disposition"] == (
        "confirmed_defect"
    )
    db.close()

    # Pages as pictures, to look at (kept under $STATION_SCREENSHOTS when it is set).
    pictures = Path(os.environ.get("STATION_SCREENSHOTS") or tmp_path / "pages")
    pictures.mkdir(parents=True, exist_ok=True)
    subprocess.run(["pdftoppm", "-png", "-r", "80", str(pdf), str(pictures / "report")], check=True)
    assert len(list(pictures.glob("report-*.png"))) == pages


def test_report_of_an_empty_shift_says_so(
    tmp_path: Path, station_factory: Callable[..., StationApp]
) -> None:
    station = station_factory(StationConfig(), tmp_path / "data")
    files = station.shift_report(
        station.shell_session(), "2026-11-30/22", pdf=tmp_path / "e.pdf", csv=tmp_path / "e.csv"
    )
    assert files.rows == 0 and files.counts["inspected"] == 0
    assert (tmp_path / "e.csv").read_text().splitlines() == [
        "part_id,time,product,model_version,score,limit,verdict,disposition,image_path"
    ]
    if POPPLER:
        text = _pdftext(tmp_path / "e.pdf")
        assert "No parts were inspected." in text and _value(text, "Inspected") == 0


def test_report_needs_qa_and_is_audited(
    tmp_path: Path, station_factory: Callable[..., StationApp]
) -> None:
    from station.app import PermissionDenied

    station = station_factory(StationConfig(), tmp_path / "data")
    shell = station.shell_session()
    station.access.add_user(shell, "tom", "technician", "2222")
    tom = station.login("tom", "2222", via="test")
    with pytest.raises(PermissionDenied, match="qa or admin"):
        station.shift_report(tom, "previous", folder=tmp_path)
    files = station.shift_report(shell, "previous", folder=tmp_path / "r")
    pdf, out_csv = default_names(tmp_path / "r", files.shift, None)
    assert files.pdf == pdf and pdf.is_file() and out_csv.is_file()
    last = station.access.audit.rows()[-1]
    assert (last.action, last.object) == ("report", files.shift.key)


def test_the_report_is_written_at_the_shift_end(tmp_path: Path) -> None:
    """The reporter with a clock it is given (a real one would need a whole shift)."""
    db = Database(tmp_path / "station.db")
    db.add_event(StationEvent("state", "running", time=_local(2026, 12, 1, 7)))
    ended = shift_window("2026-12-01/06")
    has_parts = {ended.key}
    written: list[tuple[str, Path]] = []
    events: list[StationEvent] = []

    def write(shift: object, pdf: Path, out_csv: Path) -> object:
        from station.app.quality import ReportFiles

        pdf.parent.mkdir(parents=True, exist_ok=True)
        pdf.write_bytes(b"%PDF-1.4\n")
        written.append((shift.key, pdf))  # type: ignore[attr-defined]
        return ReportFiles(shift, None, pdf, out_csv, 3)  # type: ignore[arg-type]

    now = [_local(2026, 12, 1, 13, 59)]
    reporter = ShiftReporter(
        write, lambda s: s.key in has_parts, tmp_path / "reports", [6, 14, 22], events.append,
        clock=lambda: now[0],
    )  # fmt: skip
    assert reporter.due() is None  # 2026-11-30/22 had no parts
    now[0] = _local(2026, 12, 1, 14, 0) + 5
    due = reporter.due()
    assert due is not None and due.key == ended.key
    reporter.start()
    wait_until(lambda: bool(written), 10, "the report")
    reporter.stop()
    assert reporter.join(5)
    assert written == [(ended.key, tmp_path / "reports" / "shift_2026-12-01_06.pdf")]
    assert events and events[0].kind == "report" and "3 parts" in events[0].message
    assert reporter.due() is None  # written once
    db.close()


def test_the_shift_end_report_is_retried_when_it_fails(tmp_path: Path) -> None:
    """A report that cannot be written (full disk, unplugged share) is tried again, with one
    event, not one per try."""
    calls: list[str] = []
    events: list[StationEvent] = []

    def write(shift: object, pdf: Path, out_csv: Path) -> object:
        calls.append(shift.key)  # type: ignore[attr-defined]
        raise StationError("disk full")

    reporter = ShiftReporter(
        write, lambda s: True, tmp_path / "reports", [6, 14, 22], events.append,
        clock=lambda: _local(2026, 12, 1, 15),
    )  # fmt: skip
    reporter.POLL_S = 0.01
    reporter.start()
    wait_until(lambda: len(calls) >= 3, 10, "three tries")
    reporter.stop()
    assert reporter.join(5)
    assert [e.kind for e in events] == ["storage"] and "disk full" in events[0].message
