"""The history's queries, dispositions and the false rejects offered to the bank update, on real
SQLite files: every filter and sort paged to the end against the same rows filtered in Python;
disposition rules by role and verdict, append-only and audited; the schema step that adds them."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from station.app import PermissionDenied, StationApp
from station.commands.bench_history import generate
from station.config import StationConfig
from station.core.errors import StationError
from station.core.result import Verdict
from station.records import Database
from station.records.db import InspectionRow
from station.records.history import (
    COUNT_CAP,
    NO_DISPOSITION,
    HistoryFilter,
    HistoryQuery,
    Sort,
    count,
    query_page,
)
from station.records.migrations import MIGRATIONS, migrate

ROWS = 6000


@pytest.fixture(scope="module")
def history_db(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("history") / "station.db"
    generate(path, ROWS, seed=3, end=time.time())
    db = Database(path, create=False)
    yield db
    db.close()


def _matches(r: InspectionRow, f: HistoryFilter) -> bool:
    return (
        (f.since is None or r.time >= f.since)
        and (f.until is None or r.time < f.until)
        and (f.product is None or r.product == f.product)
        and (f.model_version is None or r.model_version == f.model_version)
        and (not f.verdicts or r.verdict in f.verdicts)
        and (
            f.disposition is None
            or (
                r.disposition is None
                if f.disposition == NO_DISPOSITION
                else r.disposition == f.disposition
            )
        )
        and (f.score_min is None or r.score >= f.score_min)
        and (f.score_max is None or r.score <= f.score_max)
        and (f.part_id is None or (r.part_id or "").startswith(f.part_id.upper()))
    )


def _expected(rows: list[InspectionRow], q: HistoryQuery) -> list[int]:
    keep = [r for r in rows if _matches(r, q.filter)]
    column = "time" if q.sort in (Sort.NEWEST, Sort.OLDEST) else "score"
    reverse = q.sort in (Sort.NEWEST, Sort.SCORE_HIGH)
    keep.sort(key=lambda r: (getattr(r, column), r.id), reverse=reverse)
    return [r.id for r in keep]


def _filters(rows: list[InspectionRow]) -> list[HistoryFilter]:
    t0, t1 = min(r.time for r in rows), max(r.time for r in rows)
    mid = (t0 + t1) / 2
    part = next(r.part_id for r in rows if r.verdict == Verdict.NOK)
    return [
        HistoryFilter(),
        HistoryFilter(since=mid),
        HistoryFilter(since=t0 + 600, until=mid),
        HistoryFilter(product="board-a"),
        HistoryFilter(model_version="demo/v0002"),
        HistoryFilter(verdicts=(Verdict.NOK,)),
        HistoryFilter(verdicts=(Verdict.NOK, Verdict.CHECK), since=mid),
        HistoryFilter(verdicts=(Verdict.OK,), product="board-b"),
        HistoryFilter(disposition="false_reject"),
        HistoryFilter(disposition=NO_DISPOSITION, verdicts=(Verdict.NOK,)),
        HistoryFilter(score_min=20.0),
        HistoryFilter(score_min=8.0, score_max=9.0, since=mid),
        HistoryFilter(score_min=25.0, product="demo", verdicts=(Verdict.NOK,)),
        HistoryFilter(part_id=part[:-2].lower()),
        HistoryFilter(part_id="NO-SUCH-PART"),
    ]


@pytest.mark.parametrize("sort", list(Sort))
def test_every_filter_pages_through_exactly_its_rows(history_db: Database, sort: Sort) -> None:
    rows = history_db.query_inspections()
    assert len(rows) == ROWS
    for flt in _filters(rows):
        q = HistoryQuery(flt, sort=sort, page_size=97)
        want = _expected(rows, q)
        got: list[int] = []
        page = query_page(history_db, q)
        assert (page.total, page.capped) == (min(len(want), COUNT_CAP), len(want) > COUNT_CAP)
        pages = 1
        while True:
            got += [r.id for r in page.rows]
            if page.next_key is None:
                break
            page = query_page(history_db, q, page.next_key)
            pages += 1
        assert got == want, (flt, sort)
        assert pages == max(1, -(-len(want) // 97))  # no empty page at the end


def test_count_is_capped(history_db: Database) -> None:
    assert count(history_db, HistoryFilter(), cap=100) == (100, True)
    assert count(history_db, HistoryFilter(part_id="NOPE")) == (0, False)


# -- dispositions ---------------------------------------------------------------------------------
def _station(tmp_path: Path, station_factory: Callable[..., StationApp]) -> StationApp:
    """A station whose records hold parts of every verdict (written by the bench generator)."""
    data = tmp_path / "data"
    data.mkdir()
    generate(data / "station.db", 400, seed=1)
    station = station_factory(StationConfig(), data)
    for name, role in (("olga", "operator"), ("quinn", "qa"), ("tom", "technician")):
        station.access.add_user(station.shell_session(), name, role, "4321")
    return station


@pytest.fixture
def station_factory(tmp_path: Path) -> Any:
    made: list[StationApp] = []

    def make(cfg: StationConfig, data_dir: Path) -> StationApp:
        s = StationApp(cfg, data_dir)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def _first(station: StationApp, verdict: Verdict, **kw: Any) -> InspectionRow:
    return next(
        r
        for r in station.db().query_inspections(verdict=verdict)
        if all(getattr(r, k) == v for k, v in kw.items())
    )


def test_dispositions_follow_the_verdict_and_the_role(
    tmp_path: Path, station_factory: Callable[..., StationApp]
) -> None:
    station = _station(tmp_path, station_factory)
    olga = station.login("olga", "4321", via="test")
    quinn = station.login("quinn", "4321", via="test")
    tom = station.login("tom", "4321", via="test")
    nok = _first(station, Verdict.NOK, disposition=None)
    ok = _first(station, Verdict.OK)
    assert nok.part_id and ok.part_id

    # An operator: what happened to a rejected part, with a reason.
    with pytest.raises(StationError, match="needs a reason"):
        station.dispose(olga, nok.part_id, "confirmed_defect", "   ")
    d = station.dispose(olga, nok.part_id.lower(), "confirmed_defect", " Scratch  on the edge ")
    assert (d.part_id, d.user, d.role, d.reason) == (nok.part_id, "olga", "operator",
                                                     "Scratch on the edge")  # fmt: skip
    # ... not a missed defect, which QA records, and only on a part that passed.
    with pytest.raises(PermissionDenied, match="qa or admin"):
        station.dispose(olga, ok.part_id, "missed_defect", "found later")
    with pytest.raises(StationError, match="'missed defect' is for parts that passed"):
        station.dispose(quinn, nok.part_id, "missed_defect", "found later")
    with pytest.raises(StationError, match="a passed part found bad later is a 'missed defect'"):
        station.dispose(quinn, ok.part_id, "false_reject", "good")
    station.dispose(quinn, ok.part_id, "missed-defect", "Found at final check")
    # The latest stands; every one is kept.
    station.dispose(quinn, nok.part_id, "false reject", "Re-checked: the part is good")
    assert station.db().get_part(nok.part_id).disposition == "false_reject"  # type: ignore[union-attr]
    detail = station.inspection(quinn, nok.part_id)
    assert [x.kind.value for x in detail.dispositions] == ["confirmed_defect", "false_reject"]
    # Each one audited, with what it replaced.
    rows = [r for r in station.access.audit.rows() if r.action == "disposition"]
    assert [(r.user, r.object, r.before, r.after) for r in rows] == [
        ("olga", nok.part_id, None, "confirmed_defect"),
        ("quinn", ok.part_id, None, "missed_defect"),
        ("quinn", nok.part_id, "confirmed_defect", "false_reject"),
    ]
    assert rows[0].reason == "Scratch on the edge"
    with pytest.raises(StationError, match="no recorded part 'NOPE-1'"):
        station.dispose(quinn, "NOPE-1", "rework", "x")
    with pytest.raises(StationError, match="is not a disposition"):
        station.dispose(quinn, nok.part_id, "scrapped", "x")
    # The history is technician / QA; an operator disposes from the NOK detail only.
    with pytest.raises(PermissionDenied):
        station.inspection(olga, nok.part_id)
    assert station.inspection(tom, nok.part_id).row.id == nok.id
    assert [d.value for d in station.disposition_choices(olga, Verdict.NOK)] == [
        "confirmed_defect", "false_reject", "rework",
    ]  # fmt: skip
    assert station.disposition_choices(olga, Verdict.OK) == ()
    assert [d.value for d in station.disposition_choices(quinn, Verdict.OK)] == ["missed_defect"]


def test_dispositions_are_append_only(
    tmp_path: Path, station_factory: Callable[..., StationApp]
) -> None:
    station = _station(tmp_path, station_factory)
    nok = _first(station, Verdict.NOK, disposition=None)
    station.dispose(station.shell_session(), nok.part_id, "rework", "Sent to rework")  # type: ignore[arg-type]
    conn = sqlite3.connect(station.db_file)
    try:
        for sql in ("UPDATE dispositions SET kind = 'false_reject'", "DELETE FROM dispositions"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(sql)
    finally:
        conn.close()


def test_confirmed_false_rejects_are_offered_for_the_bank_update(
    tmp_path: Path,
    demo_product: Path,
    demo_model: Path,
    station_factory: Callable[..., StationApp],
    trust_plant_key: Callable[[Path], Path],
) -> None:
    """Parts the current version rejected, confirmed good, with their archived images."""
    import shutil

    from station.cli import main

    data = tmp_path / "data"
    shutil.copytree(demo_model, data / "models" / "demo" / "v0001")
    trust_plant_key(data)
    station = station_factory(StationConfig(), data)
    station.store.set_current("demo", "v0001")
    db = station.db()
    images = sorted((demo_product / "test" / "good").iterdir())[:3]
    with db.transaction() as cur:
        for i, image in enumerate(images):
            rel = f"archive/fr/{i}_NOK.png"
            (data / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(image, data / rel)
            cur.execute(
                "INSERT INTO inspections (time, frame_id, source, score, threshold, verdict, "
                "latency_ms, model_version, part_id, product, image_path) VALUES "
                "(?, ?, 'test', ?, 20, 'NOK', 100, ?, ?, 'demo', ?)",
                (
                    time.time() - 60 + i,
                    i,
                    21.0 + i,
                    "demo/v0001" if i < 2 else "demo/v0000",
                    f"DEMO-20261201-{i + 1:06d}",
                    rel,
                ),
            )
    shell = station.shell_session()
    for i in range(3):
        station.dispose(shell, f"DEMO-20261201-{i + 1:06d}", "false_reject", "Part is good")
    station.dispose(shell, "DEMO-20261201-000002", "confirmed_defect", "On a second look: bad")
    offered = station.false_rejects(shell, "demo")
    # Only the current version's, only those that still stand as false rejects.
    assert [f.part_id for f in offered] == ["DEMO-20261201-000001"]
    assert offered[0].image == data / "archive/fr/0_NOK.png"
    station.close()
    assert main(["update-bank", "--data-dir", str(data), "--false-rejects",
                 "--product", "demo"]) == 0  # fmt: skip
    station2 = station_factory(StationConfig(), data)
    assert station2.store.versions("demo")[-1] == "v0002"
    last = [r for r in station2.access.audit.rows() if r.action == "model_update_bank"][-1]
    assert '"new_parts": 1' in (last.after or "")


def test_schema_step_4_keeps_rows_and_names_their_product(tmp_path: Path) -> None:
    path = tmp_path / "station.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, str(path), MIGRATIONS[:3])
    conn.execute(
        "INSERT INTO inspections (time, frame_id, source, score, threshold, verdict, latency_ms, "
        "model_version, part_id) VALUES (1, 1, 's', 3.0, 2.0, 'NOK', 9, 'board_a/v0003', 'X-1')"
    )
    conn.close()
    db = Database(path)
    try:
        row = db.query_inspections()[0]
        assert (row.product, row.model_version, row.disposition) == ("board_a", "board_a/v0003",
                                                                     None)  # fmt: skip
        assert db.schema_version() == MIGRATIONS[-1].version
    finally:
        db.close()
