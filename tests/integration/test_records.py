"""Records on real SQLite files and a real archive in tmp_path: schema, recorder, disk full,
retention, queries and `station log`."""

from __future__ import annotations

import csv
import dataclasses
import errno
import itertools
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from station.cli import main
from station.config import RecordsConfig
from station.core import files as core_files
from station.core.errors import StorageError
from station.core.result import InspectionResult, StationEvent, StationState, Verdict
from station.records import (
    LATEST_VERSION,
    Committed,
    Database,
    Recorder,
    apply_retention,
    db_path,
    shift_key,
)
from station.records import archive as archive_mod
from station.records.archive import read_archived_image, read_map
from station.records.migrations import Migration, migrate

T0 = datetime(2026, 11, 21, 7, 0, 0).timestamp()  # local time, inside the 06:00 shift


def make_result(
    i: int,
    verdict: Verdict = Verdict.OK,
    t: float | None = None,
    size: tuple[int, int] = (48, 64),
    seed: int = 0,
) -> InspectionResult:
    rng = np.random.default_rng(seed + i)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    amap = rng.random(size, dtype=np.float32) * 2.0 if verdict == Verdict.NOK else None
    return InspectionResult(
        frame_id=i,
        timestamp=T0 + i if t is None else t,
        source="replay",
        score=3.0 if verdict == Verdict.NOK else 0.5,
        threshold=1.5,
        verdict=verdict,
        latency_ms=42.0,
        model_version="demo-1",
        image=image,
        anomaly_map=amap,
        label="good" if verdict == Verdict.OK else "scratch",
    )


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[Recorder]:
    rec = Recorder(tmp_path, RecordsConfig(ok_sample_every=4), retention_interval_s=0)
    rec.start()
    yield rec
    rec.stop()
    assert rec.join(10)
    assert rec.error is None


# -- schema ------------------------------------------------------------------------------------
def test_new_database_is_wal_full_sync_and_current(tmp_path: Path) -> None:
    with Database(tmp_path / "station.db") as db:
        assert db.schema_version() == LATEST_VERSION
        assert db.fetch("PRAGMA journal_mode")[0][0] == "wal"
        assert db.fetch("PRAGMA synchronous")[0][0] == 2  # FULL
        tables = {r[0] for r in db.fetch("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"inspections", "events", "shift_counters"} <= tables
        indices = {r[0] for r in db.fetch("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"inspections_time", "inspections_verdict_time", "events_time"} <= indices
        plan = db.fetch(
            "EXPLAIN QUERY PLAN SELECT * FROM inspections WHERE verdict='NOK' AND time>0"
        )
        assert "inspections_verdict_time" in str(plan)
    # Reopening an up-to-date database changes nothing.
    with Database(tmp_path / "station.db") as db:
        assert db.schema_version() == LATEST_VERSION


def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "station.db"
    Database(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    with pytest.raises(StorageError, match="newer than this station"):
        Database(path)


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "station.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="not a usable records database"):
        Database(path)
    with pytest.raises(StorageError, match="no records database"):
        Database(tmp_path / "missing.db", create=False)


def test_migrations_apply_in_order_and_a_failed_step_rolls_back(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    steps = (
        Migration(1, "a", ("CREATE TABLE a (x INTEGER)",)),
        Migration(2, "b", ("CREATE TABLE b (x INTEGER)", "INSERT INTO a VALUES (1)")),
        Migration(3, "broken", ("CREATE TABLE c (x INTEGER)", "INSERT INTO nowhere VALUES (1)")),
    )
    assert migrate(conn, "m.db", steps[:2]) == 2
    with pytest.raises(StorageError, match="version 3 \\(broken\\)"):
        migrate(conn, "m.db", steps)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert names == {"a", "b"}  # table c of the failed step is gone too
    with pytest.raises(ValueError):
        migrate(conn, "m.db", (steps[1],))
    conn.close()


def test_opening_a_fresh_database_from_several_threads_at_once(tmp_path: Path) -> None:
    # The recorder's writer and a reader often open a new data directory together; switching
    # to WAL and migrating must not fail with "database is locked" for either of them.
    for i in range(60):
        path = tmp_path / f"d{i}" / "station.db"
        errors: list[BaseException] = []

        def open_close(p: Path = path, errs: list[BaseException] = errors) -> None:
            try:
                Database(p).close()
            except BaseException as exc:
                errs.append(exc)

        threads = [threading.Thread(target=open_close) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        with Database(path) as db:
            assert db.schema_version() == LATEST_VERSION


def test_shift_keys() -> None:
    day = datetime(2026, 11, 21)
    at = lambda h, m=0: day.replace(hour=h, minute=m).timestamp()  # noqa: E731
    assert shift_key(at(6)) == "2026-11-21/06"
    assert shift_key(at(13, 59)) == "2026-11-21/06"
    assert shift_key(at(14)) == "2026-11-21/14"
    assert shift_key(at(23, 30)) == "2026-11-21/22"
    assert shift_key(at(3)) == "2026-11-20/22"  # night shift started the day before
    assert shift_key(at(3), [0]) == "2026-11-21/00"
    # Keys are kept per minute: the last second before a start and the start itself differ.
    assert shift_key(at(14) - 0.001) == "2026-11-21/06"
    assert shift_key(at(14)) == "2026-11-21/14"
    assert shift_key(at(6) - 1.0) == "2026-11-20/22"
    assert shift_key(at(14), (6, 14, 22)) == shift_key(at(14), [22, 14, 6])


# -- recorder ----------------------------------------------------------------------------------
def test_recorder_writes_rows_archive_events_and_counters(tmp_path: Path) -> None:
    committed: list[Committed] = []
    rec = Recorder(
        tmp_path,
        RecordsConfig(ok_sample_every=4),
        retention_interval_s=0,
        on_commit=committed.extend,
    )
    rec.start()
    results = [make_result(i, Verdict.NOK if i % 5 == 0 else Verdict.OK) for i in range(20)]
    for res in results:
        assert rec.submit(res)
    assert rec.submit_event(
        StationEvent("state", "running", time=T0, state=StationState.RUNNING, data={"fps": 2.0})
    )
    rec.count_dropped(3, when=T0)
    assert rec.flush()
    stats = rec.stats()
    assert (stats.submitted, stats.recorded, stats.unrecorded, stats.queued) == (20, 20, 0, 0)
    assert stats.alarm is None and rec.alarm is None and rec.unrecorded == 0
    assert [c.frame_id for c in committed] == list(range(20))

    rows = rec.query_inspections()
    assert len(rows) == 20
    assert [r.frame_id for r in rows] == list(range(19, -1, -1))  # newest first
    by_frame = {r.frame_id: r for r in rows}
    nok = [r for r in rows if r.verdict == Verdict.NOK]
    assert len(nok) == 4
    for r in nok:
        assert r.image_path == f"archive/2026-11-21/{r.id}_NOK.png"
        assert r.map_path == f"archive/2026-11-21/{r.id}_NOK_map.png"
        src = results[r.frame_id]
        assert r.image_path is not None and r.map_path is not None
        assert np.array_equal(read_archived_image(tmp_path / r.image_path), src.image)
        amap = read_map(tmp_path / r.map_path, r.threshold)
        assert src.anomaly_map is not None
        assert np.allclose(amap, src.anomaly_map, atol=r.threshold / 16384)
    ok_archived = [r for r in rows if r.verdict == Verdict.OK and r.image_path]
    assert len(ok_archived) == 4  # 16 OK parts, one in 4
    assert all(r.map_path is None for r in ok_archived)
    r0 = by_frame[1]
    assert (r0.source, r0.score, r0.threshold, r0.latency_ms) == ("replay", 0.5, 1.5, 42.0)
    assert (r0.model_version, r0.label, r0.time) == ("demo-1", "good", T0 + 1)
    # No temporary files are left behind.
    assert not [p for p in (tmp_path / "archive").rglob("*") if p.name.startswith(".tmp")]

    events = rec.query_events()
    assert len(events) == 1
    assert events[0].state == StationState.RUNNING and events[0].data == {"fps": 2.0}
    counts = rec.shift_counts("2026-11-21/06")
    assert (counts.inspected, counts.nok, counts.dropped, counts.unrecorded) == (20, 4, 3, 0)
    assert counts.to_counters().nok_rate == pytest.approx(0.2)
    rec.stop()
    assert rec.join(10) and rec.error is None


def test_queries_filter_by_time_verdict_and_limit(recorder: Recorder) -> None:
    for i in range(30):
        recorder.submit(make_result(i, Verdict.NOK if i % 3 == 0 else Verdict.OK))
    assert recorder.flush()
    q = recorder.query_inspections
    assert len(q(since=T0 + 10)) == 20
    assert (
        len(q(since=datetime.fromtimestamp(T0 + 10), until=datetime.fromtimestamp(T0 + 20))) == 10
    )
    assert {r.verdict for r in q(verdict="NOK")} == {Verdict.NOK}
    assert len(q(verdict=Verdict.NOK)) == 10
    assert len(q(verdict="ok")) == 20
    assert [r.frame_id for r in q(limit=3)] == [29, 28, 27]
    assert [r.frame_id for r in q(verdict="NOK", until=T0 + 10, limit=2)] == [9, 6]

    with Database(db_path(recorder.data_dir)) as db:
        row = q(limit=1)[0]
        db.set_override(row.id, "NOK", "qa-anna", when=T0 + 100)
        got = db.get_inspection(row.id)
        assert got is not None
        assert got.verdict == Verdict.OK and got.final_verdict == Verdict.NOK
        assert (got.override_operator, got.override_time) == ("qa-anna", T0 + 100)
        with pytest.raises(StorageError, match="no inspection"):
            db.set_override(999999, "OK", "qa")


def test_a_full_queue_spools_and_loses_nothing(tmp_path: Path) -> None:
    # The writer is not started yet, so the 5-slot queue fills up: a real full queue, no fault.
    rec = Recorder(tmp_path, RecordsConfig(), queue_size=5, retention_interval_s=0)
    t = time.perf_counter()
    accepted = [rec.submit(make_result(i, Verdict.NOK if i == 6 else Verdict.OK)) for i in range(8)]
    assert time.perf_counter() - t < 1.0
    assert accepted == [True] * 8  # 5 queued, 3 in the spool: nothing dropped
    assert rec.stats().spooled == 3 and rec.unrecorded == 0 and rec.alarm is None
    assert not rec.submit_event(StationEvent("state", "lost"))  # events are not spooled
    spool_files = list((tmp_path / "spool").glob("*.jsonl"))
    assert len(spool_files) == 1 and len(spool_files[0].read_bytes().splitlines()) == 3
    counts = rec.shift_counts("2026-11-21/06")  # the operator sees all 8 at once
    assert (counts.inspected, counts.nok, counts.unrecorded) == (8, 1, 0)
    rec.start()
    assert rec.flush()
    stats = rec.stats()
    assert (stats.recorded, stats.unrecorded, stats.queued, stats.events_unrecorded) == (8, 0, 0, 1)
    assert rec.shift_counts("2026-11-21/06") == counts  # the same before and after the writes
    rec.stop()
    assert rec.join(10)
    assert not list((tmp_path / "spool").glob("*.jsonl"))  # moved in, then removed
    with Database(db_path(tmp_path), create=False) as db:
        rows = sorted(db.query_inspections(), key=lambda r: r.frame_id)
        assert [r.frame_id for r in rows] == list(range(8))
        assert rows[6].verdict == Verdict.NOK and rows[6].score == 3.0
        stored = db.shift_counts("2026-11-21/06")
        assert (stored.inspected, stored.nok, stored.unrecorded) == (8, 1, 0)


def test_a_full_spool_is_counted_and_alarmed(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, RecordsConfig(spool_mb=0), queue_size=5, retention_interval_s=0)
    accepted = [rec.submit(make_result(i)) for i in range(8)]
    assert accepted == [True] * 5 + [False] * 3
    assert rec.unrecorded == 3
    assert rec.alarm is not None and rec.alarm.startswith("records queue full (disk too slow)")
    assert "records spool full" in rec.alarm and rec.alarm.endswith(": 3 results not recorded")
    rec.start()
    assert rec.flush()
    assert rec.alarm is None  # the writer caught up
    counts = rec.shift_counts("2026-11-21/06")
    assert (counts.inspected, counts.unrecorded) == (8, 3)
    rec.stop()
    assert rec.join(10)
    with Database(db_path(tmp_path), create=False) as db:
        assert db.count_inspections() == 5
        stored = db.shift_counts("2026-11-21/06")
        assert (stored.inspected, stored.unrecorded) == (8, 3)  # the losses are counted too


def test_a_spool_left_by_a_dead_run_is_moved_in_exactly_once(tmp_path: Path) -> None:
    """A run dies with rows in the spool (nothing stops it: the recorder is simply dropped, as
    a kill would); the next start moves them in. A crash between that COMMIT and the file's
    removal is replayed by putting the file back: nothing is inserted twice. A torn last line
    (a kill in the middle of an append) is ignored."""
    dead = Recorder(tmp_path, RecordsConfig(), queue_size=2, retention_interval_s=0)
    for i in range(6):
        assert dead.submit(make_result(i, Verdict.NOK if i == 5 else Verdict.OK))
    dead.spool.close()
    (spool_file,) = (tmp_path / "spool").glob("*.jsonl")
    with spool_file.open("ab") as fh:
        fh.write(b'0badc0de [1, 2, "torn')  # no newline: cut by the kill
    saved = spool_file.read_bytes()
    del dead  # its 2 queued results were in memory only: lost with the process

    second = Recorder(tmp_path, RecordsConfig(), retention_interval_s=0)
    assert second.recover_spool() == 4
    assert not spool_file.exists()
    spool_file.write_bytes(saved)  # as if the removal had not happened before a crash
    third = Recorder(tmp_path, RecordsConfig(), retention_interval_s=0)
    assert third.recover_spool() == 0
    assert not spool_file.exists()
    with Database(db_path(tmp_path), create=False) as db:
        assert sorted(r.frame_id for r in db.query_inspections()) == [2, 3, 4, 5]
        stored = db.shift_counts("2026-11-21/06")
        assert (stored.inspected, stored.nok) == (4, 1)  # the counters equal the rows


def test_stop_writes_everything_queued(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, RecordsConfig(), batch_seconds=1.0, retention_interval_s=0)
    rec.start()
    for i in range(200):
        rec.submit(make_result(i, Verdict.NOK if i % 50 == 0 else Verdict.OK))
    rec.stop()
    assert rec.join(20)
    assert rec.stats().recorded == 200
    assert rec.submit(make_result(999))  # closed: into the spool, for the next start
    assert rec.unrecorded == 0
    with Database(db_path(tmp_path), create=False) as db:
        assert db.count_inspections() == 200
        assert db.shift_counts("2026-11-21/06").inspected == 200
    assert Recorder(tmp_path, RecordsConfig()).recover_spool() == 1
    with Database(db_path(tmp_path), create=False) as db:
        assert db.count_inspections() == 201
        assert db.shift_counts("2026-11-21/06").inspected == 201


def test_unusable_database_fails_visibly(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    Database(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 5}")
    failures: list[BaseException] = []
    rec = Recorder(tmp_path, RecordsConfig(), on_failure=lambda w, e: failures.append(e))
    rec.submit(make_result(1))
    rec.start()
    assert rec.join(10)
    assert isinstance(rec.error, StorageError) and failures == [rec.error]
    assert rec.submit(make_result(2))  # kept in the spool for a station that can write them
    assert rec.unrecorded == 0 and rec.stats().spooled == 2
    assert rec.alarm is not None and "newer than this station" in rec.alarm
    lines = [ln for f in (tmp_path / "spool").glob("*.jsonl") for ln in f.read_bytes().splitlines()]
    assert len(lines) == 2


def test_reading_while_the_recorder_writes(recorder: Recorder) -> None:
    # WAL: a second connection reads consistent snapshots while batches commit.
    with Database(db_path(recorder.data_dir)) as reader:
        seen = 0
        for i in range(100):
            recorder.submit(make_result(i))
            if i % 10 == 0:
                n = reader.count_inspections()
                assert n >= seen
                seen = n
        assert recorder.flush()
        assert reader.count_inspections() == 100


def test_images_waiting_for_the_archive_are_bounded(tmp_path: Path) -> None:
    # Writer not started: the images pile up in memory until the bound, then only rows queue.
    per_result = 48 * 64 * 3 + 48 * 64 * 4  # image + float32 map
    rec = Recorder(
        tmp_path,
        RecordsConfig(),
        retention_interval_s=0,
        max_pending_image_mb=2.5 * per_result / (1024 * 1024),
    )
    for i in range(5):
        assert rec.submit(make_result(i, Verdict.NOK))
    assert (
        rec.alarm == "archive behind (disk too slow): 0 results not recorded, 3 images not archived"
    )
    rec.start()
    assert rec.flush()
    rows = rec.query_inspections()
    assert len(rows) == 5 and rec.unrecorded == 0
    assert [r.frame_id for r in rows if r.image_path] == [1, 0]
    assert rec.alarm is None
    assert (rec.stats().images_archived, rec.stats().images_unarchived) == (2, 3)
    assert rec.submit(make_result(5, Verdict.NOK))  # memory was given back
    assert rec.flush()
    assert rec.query_inspections(limit=1)[0].image_path is not None
    rec.stop()
    assert rec.join(10)


def test_large_maps_are_stored_downsampled(tmp_path: Path) -> None:
    h, w = 2048, 2448
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    amap = 2.0 * np.exp(-((xx - 1200) ** 2 + (yy - 900) ** 2) / (2 * 150.0**2))
    path = tmp_path / "m.png"
    path.write_bytes(archive_mod.encode_map(amap, threshold=1.0))
    small = read_map(path, 1.0)
    assert max(small.shape) == archive_mod.MAP_MAX_SIDE
    full = read_map(path, 1.0, size=(h, w))
    assert full.shape == (h, w)
    assert np.abs(full - amap).max() < 0.01
    assert full[900, 1200] > 1.95  # the peak survives


# -- disk full ---------------------------------------------------------------------------------
def test_database_full_spools_the_results_and_recovers(recorder: Recorder) -> None:
    """A real 'database or disk is full' from SQLite: PRAGMA max_page_count stops the file from
    growing (a tiny filesystem is not available to tests). No mock is involved. The results wait
    in the spool (on a disk that still has room) and move in once the database can grow again."""
    for i in range(5):
        recorder.submit(make_result(i))
    assert recorder.flush()
    db = recorder._db  # the writer's own connection: max_page_count is per connection
    assert db is not None
    pages = db.fetch("PRAGMA page_count")[0][0]
    db.fetch(f"PRAGMA max_page_count = {pages}")

    t = time.perf_counter()
    accepted = [recorder.submit(make_result(i)) for i in range(5, 405)]
    assert time.perf_counter() - t < 2.0  # verdicts keep flowing
    assert all(accepted)
    assert not recorder.flush(2.0)  # they cannot reach the database now ...
    stats = recorder.stats()
    waiting = stats.spooled  # the free pages inside the file may still take a batch or two
    assert waiting > 100 and stats.queued == waiting and stats.unrecorded == 0
    assert stats.recorded + waiting == 405
    alarm = recorder.alarm or ""
    assert alarm.startswith(f"disk full: 0 results not recorded, {waiting} waiting in the spool")
    assert alarm.endswith("images not archived")  # the spool keeps the verdicts, not pictures
    assert recorder.shift_counts("2026-11-21/06").inspected == 405  # ... and are counted

    db.fetch("PRAGMA max_page_count = 1073741823")  # space is back
    for i in range(405, 410):
        recorder.submit(make_result(i))
    assert recorder.flush()
    assert recorder.alarm is None and recorder.unrecorded == 0
    rows = recorder.query_inspections()
    assert len(rows) == 410 and sorted(r.frame_id for r in rows) == list(range(410))
    counts = recorder.shift_counts("2026-11-21/06")
    assert (counts.inspected, counts.unrecorded) == (410, 0)
    stored = recorder.reader().shift_counts("2026-11-21/06")
    assert (stored.inspected, stored.unrecorded) == (410, 0)  # the counters equal the rows
    storage = recorder.query_events(kind="storage")
    assert len(storage) == 1
    assert storage[0].data["spooled"] == waiting and storage[0].data["unrecorded"] == 0
    assert "disk full" in storage[0].message
    assert not list((recorder.data_dir / "spool").glob("*.jsonl"))


def test_archive_disk_full_keeps_the_verdicts(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one injected fault: the archive's low-level write raises ENOSPC (a full filesystem
    cannot be created in a test); everything else - SQLite, files, folders - is real."""

    def no_space(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(core_files, "_write_bytes", no_space)
    for i in range(6):
        recorder.submit(make_result(i, Verdict.NOK))
    assert recorder.flush()
    rows = recorder.query_inspections()
    assert len(rows) == 6  # every verdict recorded
    assert all(r.image_path is None and r.map_path is None for r in rows)
    assert recorder.unrecorded == 0
    assert recorder.alarm == "disk full: 0 results not recorded, 6 images not archived"
    assert recorder.stats().images_unarchived == 6
    leftovers = [p for p in (recorder.data_dir / "archive").rglob("*") if p.is_file()]
    assert leftovers == []  # no half-written temporaries

    monkeypatch.undo()
    recorder.submit(make_result(6, Verdict.NOK))
    assert recorder.flush()
    assert recorder.alarm is None
    newest = recorder.query_inspections(limit=1)[0]
    assert newest.image_path is not None
    assert (recorder.data_dir / newest.image_path).is_file()
    events = recorder.query_events(kind="storage")
    assert len(events) == 1 and events[0].data["images_unarchived"] == 6


# -- retention ---------------------------------------------------------------------------------
def _archive_sizes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in (data_dir / "archive").rglob("*") if p.is_file())


def test_retention_by_age_and_budget_keeps_rows_and_nok_longest(tmp_path: Path) -> None:
    day = 86400.0
    now = T0 + 100 * day
    rec = Recorder(tmp_path, RecordsConfig(ok_sample_every=1), retention_interval_s=0)
    rec.start()
    # 10 days of parts, 100 days ago .. 91 days ago and 9 .. 0 days ago; 256x256 noise images
    # (incompressible) so that sizes are predictable. NOK every third part.
    times = [T0 + d * day for d in range(10)] + [now - d * day for d in range(9, -1, -1)]
    for i, t in enumerate(times):
        v = Verdict.NOK if i % 3 == 0 else Verdict.OK
        rec.submit(make_result(i, v, t=t, size=(256, 256)))
    assert rec.flush()
    rec.stop()
    assert rec.join(10)

    with Database(db_path(tmp_path)) as db:
        rows = db.query_inspections()
        assert all(r.image_path for r in rows)
        paths = {r.id: (r.image_path, r.map_path) for r in rows}

        # Age: the first ten days are older than 90 days, whatever their verdict.
        report = apply_retention(db, tmp_path, retention_days=90, disk_budget_mb=0, now=now)
        assert report.expired == 10 and report.over_budget == 0
        rows = db.query_inspections()
        assert len(rows) == 20  # rows stay
        for r in rows:
            old = r.time < now - 90 * day
            assert (r.image_path is None) == old
            image, amap = paths[r.id]
            assert image is not None
            assert (tmp_path / image).exists() != old
            if amap:
                assert (tmp_path / amap).exists() != old

        # Budget: cut to what the NOK files of the last ten days take, plus a little.
        recent = [r for r in rows if r.image_path]
        nok_bytes = sum(
            (tmp_path / p).stat().st_size
            for r in recent
            if r.verdict == Verdict.NOK
            for p in (r.image_path, r.map_path)
            if p
        )
        budget_mb = (nok_bytes + 1000) / (1024 * 1024)
        report = apply_retention(db, tmp_path, retention_days=90, disk_budget_mb=budget_mb, now=now)
        after = db.query_inspections()
        kept = [r for r in after if r.image_path]
        assert {r.verdict for r in kept} == {Verdict.NOK}  # every OK image went first
        assert len(kept) == sum(1 for r in recent if r.verdict == Verdict.NOK)
        assert report.over_budget == sum(1 for r in recent if r.verdict == Verdict.OK)
        assert _archive_sizes(tmp_path) <= budget_mb * 1024 * 1024
        assert report.archive_bytes == _archive_sizes(tmp_path)

        # Tighter still: the oldest NOK images go, the newest stay.
        half = nok_bytes / 2 / (1024 * 1024)
        apply_retention(db, tmp_path, retention_days=90, disk_budget_mb=half, now=now)
        kept2 = sorted((r for r in db.query_inspections() if r.image_path), key=lambda r: r.time)
        assert 0 < len(kept2) < len(kept)
        assert kept2[-1].time == max(r.time for r in kept)
        assert _archive_sizes(tmp_path) <= half * 1024 * 1024
        assert len(db.query_inspections()) == 20


def test_retention_sweeps_old_orphans_only(tmp_path: Path) -> None:
    now = time.time()
    folder = tmp_path / "archive" / "2026-11-20"
    folder.mkdir(parents=True)
    old_orphan = folder / "77_NOK.png"
    tmp_leftover = folder / ".tmp-78_NOK.png.1234"
    fresh_orphan = folder / "79_NOK.png"
    for p in (old_orphan, tmp_leftover, fresh_orphan):
        p.write_bytes(b"x" * 100)
    for p in (old_orphan, tmp_leftover):
        os.utime(p, (now - 7200, now - 7200))
    with Database(db_path(tmp_path)) as db:
        report = apply_retention(db, tmp_path, retention_days=90, disk_budget_mb=100, now=now)
    assert report.orphans == 2
    assert not old_orphan.exists() and not tmp_leftover.exists()
    assert fresh_orphan.exists()  # may belong to a row being committed right now


# -- station log -------------------------------------------------------------------------------
def _fill(tmp_path: Path, n: int = 12) -> None:
    rec = Recorder(tmp_path, RecordsConfig(), retention_interval_s=0)
    rec.start()
    for i in range(n):
        rec.submit(make_result(i, Verdict.NOK if i % 4 == 0 else Verdict.OK))
    rec.submit_event(StationEvent("drift", "drift warning: mean shift +1.5 sd", time=T0))
    rec.stop()
    assert rec.join(10)


def test_log_table_filters_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(tmp_path)
    assert main(["log", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "12 inspections (3 NOK)" in out
    assert out.splitlines()[0].split()[:4] == ["id", "time", "frame", "verdict"]

    since = datetime.fromtimestamp(T0 + 4).strftime("%Y-%m-%dT%H:%M:%S")
    assert main(["log", "--data-dir", str(tmp_path), "--since", since, "--verdict", "NOK"]) == 0
    out = capsys.readouterr().out
    assert "2 inspections (2 NOK)" in out

    csv_path = tmp_path / "out.csv"
    args = ["log", "--data-dir", str(tmp_path), "--limit", "5", "--csv", str(csv_path)]
    assert main(args) == 0
    assert "wrote 5 rows" in capsys.readouterr().out
    with csv_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["frame_id"]) for r in rows] == [11, 10, 9, 8, 7]
    assert rows[3]["verdict"] == "NOK" and rows[3]["image_path"].endswith("_NOK.png")
    assert float(rows[0]["score"]) == 0.5

    # An age ("1d") counts back from the real clock, while T0 is a fixed date.
    expected = sum(1 for i in range(12) if T0 + i >= time.time() - 86400)
    assert main(["log", "--data-dir", str(tmp_path), "--since", "1d", "--csv", "-"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1 + expected

    assert main(["log", "--data-dir", str(tmp_path), "--events"]) == 0
    assert "drift warning" in capsys.readouterr().out


def test_log_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["log", "--data-dir", str(tmp_path / "nothing")]) == 1
    assert "no records in" in capsys.readouterr().err
    _fill(tmp_path, 2)
    assert main(["log", "--data-dir", str(tmp_path), "--since", "last tuesday"]) == 1
    assert "is not a time" in capsys.readouterr().err


def test_log_uses_the_config_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    _fill(data, 3)
    cfg = tmp_path / "line.toml"
    cfg.write_text(f'[records]\ndata_dir = "{data.as_posix()}"\n')
    monkeypatch.delenv("STATION_DATA_DIR", raising=False)
    assert main(["log", "--config", str(cfg)]) == 0
    assert "3 inspections" in capsys.readouterr().out


def test_shift_counters_continue_after_a_restart_in_the_same_shift(tmp_path: Path) -> None:
    """The operator's counters are the shift's, not the run's: a restart at 09:00 must not
    reset them to zero, and counts are neither lost nor counted twice across the restart."""
    shift = shift_key(T0)
    first = Recorder(tmp_path, RecordsConfig(), retention_interval_s=0)
    first.start()
    for i in range(5):
        first.submit(make_result(i, Verdict.NOK if i == 0 else Verdict.OK))
    first.count_dropped(2, when=T0)
    first.stop()
    assert first.join(10)

    second = Recorder(tmp_path, RecordsConfig(), retention_interval_s=0)
    second.start()
    c = second.shift_counts(shift)
    assert (c.inspected, c.nok, c.dropped) == (5, 1, 2)
    for i in range(5, 8):
        second.submit(make_result(i, Verdict.NOK))
    before_flush = second.shift_counts(shift)
    assert (before_flush.inspected, before_flush.nok) == (8, 4)
    assert second.flush()
    after_flush = second.shift_counts(shift)
    assert after_flush == before_flush
    second.stop()
    assert second.join(10)
    with Database(db_path(tmp_path), create=False) as db:
        stored = db.shift_counts(shift)
    assert (stored.inspected, stored.nok, stored.dropped) == (8, 4, 2)


def test_shift_counters_never_step_back_while_batches_are_written(tmp_path: Path) -> None:
    """A batch leaves the in-memory counts before its commit; a reader in that gap (the GUI
    polls several times a second) must not see the shift's count drop."""
    shift = shift_key(T0)
    rec = Recorder(tmp_path, RecordsConfig(ok_sample_every=0), batch_seconds=0.0)
    rec.start()
    seen: list[int] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            seen.append(rec.shift_counts(shift).inspected)

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for i in range(400):
            rec.submit(make_result(i))
            if i % 20 == 0:
                time.sleep(0.002)  # let the writer commit small batches in between
        assert rec.flush()
    finally:
        done.set()
        reader.join(10)
    rec.stop()
    assert rec.join(10)
    assert len(seen) > 100
    drops = [(a, b) for a, b in itertools.pairwise(seen) if b < a]
    assert not drops, f"counter stepped back {len(drops)} times, e.g. {drops[:3]}"
    assert rec.shift_counts(shift).inspected == 400


def test_results_that_cannot_be_rows_are_counted_never_dropped(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, RecordsConfig(), retention_interval_s=0)
    rec.start()
    nan = dataclasses.replace(make_result(1), score=float("nan"))
    assert not rec.submit(nan)  # a NaN would be stored as NULL: refused, counted, alarmed
    first = dataclasses.replace(make_result(2), part_id="DEMO-20261121-000007")
    twin = dataclasses.replace(make_result(3), part_id="DEMO-20261121-000007")
    assert rec.submit(first) and rec.submit(twin)
    assert rec.flush()
    stats = rec.stats()
    assert (stats.recorded, stats.unrecorded, stats.queued) == (1, 2, 0)
    counts = rec.shift_counts("2026-11-21/06")
    assert (counts.inspected, counts.unrecorded) == (3, 2)
    rec.stop()
    assert rec.join(10)
    with Database(db_path(tmp_path), create=False) as db:
        assert [r.frame_id for r in db.query_inspections()] == [2]
        stored = db.shift_counts("2026-11-21/06")
        assert (stored.inspected, stored.unrecorded) == (3, 2)
        (event,) = db.query_events(kind="storage")  # the loss is on record, with its reason
        assert "score is nan" in event.message and event.data["unrecorded"] >= 1


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs needs root")
def test_a_spool_on_a_full_disk_never_keeps_half_a_record(tmp_path: Path) -> None:
    """The spool on a real 16 KiB tmpfs: appends succeed until the filesystem is full; the one
    that fails leaves the file exactly as it was, so nothing half-written turns up later."""
    from station.records.spool import Spool

    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mnt)])
    if done.returncode != 0:
        pytest.skip("tmpfs cannot be mounted here")
    try:
        spool = Spool(mnt / "spool", max_bytes=10**9)  # only the disk limits it
        kept = 0
        with pytest.raises(StorageError, match="spool not written"):
            for i in range(10_000):
                spool.append([["run", i, "x" * 200]])
                kept += 1
        spool.close()
        (path,) = spool.take()
        records, torn = spool.read(path)
        assert torn == 0 and [r[1] for r in records] == list(range(kept))
        assert kept > 20
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
