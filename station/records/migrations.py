"""Versioned schema of the records database: an ordered list of migrations, one version each.

The version lives in `PRAGMA user_version` (a field of the database header), so it is written in
the same transaction as the migration's tables: a migration is applied completely or not at all.
A database written by a newer station (higher version than this code knows) is refused with a
clear error instead of being read with a schema this code does not understand.

To change the schema, append a `Migration` with the next version; never edit a released one.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from station.core.errors import StorageError


@dataclass(frozen=True)
class Migration:
    """One schema step: the statements that take the database from `version - 1` to `version`."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "inspections, events, shift counters",
        (
            # Times are epoch seconds (REAL): the camera's timestamp, sortable and zone-free.
            # image_path / map_path are relative to the data directory so it can be moved.
            """
            CREATE TABLE inspections (
                id INTEGER PRIMARY KEY,
                time REAL NOT NULL,
                frame_id INTEGER NOT NULL,
                source TEXT NOT NULL,
                score REAL NOT NULL,
                threshold REAL NOT NULL,
                verdict TEXT NOT NULL CHECK (verdict IN ('OK', 'NOK')),
                latency_ms REAL NOT NULL,
                model_version TEXT NOT NULL,
                label TEXT,
                image_path TEXT,
                map_path TEXT,
                override_verdict TEXT CHECK (override_verdict IN ('OK', 'NOK')),
                override_operator TEXT,
                override_time REAL
            )
            """,
            "CREATE INDEX inspections_time ON inspections (time)",
            "CREATE INDEX inspections_verdict_time ON inspections (verdict, time)",
            # Retention walks only the rows that still own archive files.
            "CREATE INDEX inspections_archived ON inspections (time) WHERE image_path IS NOT NULL",
            """
            CREATE TABLE events (
                id INTEGER PRIMARY KEY,
                time REAL NOT NULL,
                kind TEXT NOT NULL,
                message TEXT NOT NULL,
                state TEXT,
                data TEXT NOT NULL DEFAULT '{}'
            )
            """,
            "CREATE INDEX events_time ON events (time)",
            """
            CREATE TABLE shift_counters (
                shift TEXT PRIMARY KEY,
                inspected INTEGER NOT NULL DEFAULT 0,
                nok INTEGER NOT NULL DEFAULT 0,
                dropped INTEGER NOT NULL DEFAULT 0,
                unrecorded INTEGER NOT NULL DEFAULT 0
            )
            """,
        ),
    ),
    Migration(
        2,
        "part ids, users, audit trail",
        (
            # A person-quotable id per inspection (DEMO-20261201-000123); unique, so a result
            # moved in from the spool twice is inserted once. Rows from version 1 have none.
            "ALTER TABLE inspections ADD COLUMN part_id TEXT",
            "CREATE UNIQUE INDEX inspections_part_id ON inspections (part_id) "
            "WHERE part_id IS NOT NULL",
            # PINs as scrypt hashes; the lockout state survives a restart.
            """
            CREATE TABLE users (
                name TEXT PRIMARY KEY COLLATE NOCASE,
                role TEXT NOT NULL CHECK (role IN ('operator', 'technician', 'qa', 'admin')),
                pin_hash TEXT NOT NULL,
                created REAL NOT NULL,
                failed INTEGER NOT NULL DEFAULT 0,
                locked_until REAL NOT NULL DEFAULT 0,
                lockouts INTEGER NOT NULL DEFAULT 0
            )
            """,
            # AUTOINCREMENT: an id is never reused, so a deleted row leaves a gap verify finds.
            """
            CREATE TABLE audit (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                time REAL NOT NULL,
                user TEXT NOT NULL,
                role TEXT NOT NULL,
                action TEXT NOT NULL,
                object TEXT NOT NULL DEFAULT '',
                before TEXT,
                after TEXT,
                reason TEXT NOT NULL DEFAULT '',
                via TEXT NOT NULL DEFAULT '',
                hash TEXT NOT NULL
            )
            """,
            "CREATE INDEX audit_time ON audit (time)",
            # Spool files already moved into the database, written in the same transaction as
            # their rows: a file left behind by a crash before its removal is not read twice.
            "CREATE TABLE spooled_files (name TEXT PRIMARY KEY, rows INTEGER NOT NULL, "
            "time REAL NOT NULL)",
            # Append-only for the station itself; someone who drops these triggers to edit a row
            # still breaks the hash chain (`station audit --verify`).
            "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
            "BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END",
            "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit "
            "BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END",
        ),
    ),
    Migration(
        3,
        "CHECK verdicts (a manual-check band below the reject limit)",
        (
            # SQLite cannot change a CHECK constraint in place: the table is rebuilt, rows and
            # ids kept, its indexes made again.
            """
            CREATE TABLE inspections_v3 (
                id INTEGER PRIMARY KEY,
                time REAL NOT NULL,
                frame_id INTEGER NOT NULL,
                source TEXT NOT NULL,
                score REAL NOT NULL,
                threshold REAL NOT NULL,
                verdict TEXT NOT NULL CHECK (verdict IN ('OK', 'CHECK', 'NOK')),
                latency_ms REAL NOT NULL,
                model_version TEXT NOT NULL,
                label TEXT,
                image_path TEXT,
                map_path TEXT,
                override_verdict TEXT CHECK (override_verdict IN ('OK', 'CHECK', 'NOK')),
                override_operator TEXT,
                override_time REAL,
                part_id TEXT,
                check_threshold REAL
            )
            """,
            "INSERT INTO inspections_v3 (id, time, frame_id, source, score, threshold, verdict, "
            "latency_ms, model_version, label, image_path, map_path, override_verdict, "
            "override_operator, override_time, part_id) SELECT id, time, frame_id, source, score, "
            "threshold, verdict, latency_ms, model_version, label, image_path, map_path, "
            "override_verdict, override_operator, override_time, part_id FROM inspections",
            "DROP TABLE inspections",
            "ALTER TABLE inspections_v3 RENAME TO inspections",
            "CREATE INDEX inspections_time ON inspections (time)",
            "CREATE INDEX inspections_verdict_time ON inspections (verdict, time)",
            "CREATE INDEX inspections_archived ON inspections (time) WHERE image_path IS NOT NULL",
            "CREATE UNIQUE INDEX inspections_part_id ON inspections (part_id) "
            "WHERE part_id IS NOT NULL",
            "ALTER TABLE shift_counters ADD COLUMN checks INTEGER NOT NULL DEFAULT 0",
        ),
    ),
    Migration(
        4,
        "products on inspections, part dispositions, history indexes",
        (
            # The history filters on the product with an index; older rows get it back from
            # their model version ('demo/v0001').
            "ALTER TABLE inspections ADD COLUMN product TEXT",
            "UPDATE inspections SET product = substr(model_version, 1, "
            "instr(model_version, '/') - 1) WHERE instr(model_version, '/') > 1",
            # The latest disposition of the part, kept beside the row so the history filters on
            # it with an index; the dispositions table below is the record of every one.
            "ALTER TABLE inspections ADD COLUMN disposition TEXT",
            """
            CREATE TABLE dispositions (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                inspection_id INTEGER NOT NULL REFERENCES inspections (id),
                time REAL NOT NULL,
                kind TEXT NOT NULL CHECK (kind IN
                    ('confirmed_defect', 'false_reject', 'rework', 'missed_defect')),
                reason TEXT NOT NULL DEFAULT '',
                user TEXT NOT NULL,
                role TEXT NOT NULL,
                via TEXT NOT NULL DEFAULT ''
            )
            """,
            "CREATE INDEX dispositions_inspection ON dispositions (inspection_id, id)",
            "CREATE INDEX dispositions_time ON dispositions (time)",
            "CREATE TRIGGER dispositions_no_update BEFORE UPDATE ON dispositions "
            "BEGIN SELECT RAISE(ABORT, 'dispositions are append-only'); END",
            "CREATE TRIGGER dispositions_no_delete BEFORE DELETE ON dispositions "
            "BEGIN SELECT RAISE(ABORT, 'dispositions are append-only'); END",
            # The history page's filters (see station.records.history and bench-history). The
            # time, verdict and product indexes also hold every other filtered column: a filter
            # that matches few of many rows (NOK parts of one version above a score, all year)
            # is answered from the index alone, without a table lookup per candidate row.
            "DROP INDEX inspections_time",
            "CREATE INDEX inspections_time ON inspections "
            "(time, verdict, score, product, model_version, disposition)",
            "DROP INDEX inspections_verdict_time",
            "CREATE INDEX inspections_verdict_time ON inspections "
            "(verdict, time, score, product, model_version, disposition)",
            "CREATE INDEX inspections_product_time ON inspections "
            "(product, time, verdict, score, model_version, disposition)",
            "CREATE INDEX inspections_model_time ON inspections (model_version, time)",
            "CREATE INDEX inspections_score ON inspections (score)",
            "CREATE INDEX inspections_disposition_time ON inspections (disposition, time) "
            "WHERE disposition IS NOT NULL",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version stored in the database header (0 for a new, empty file)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _check_sequence(migrations: tuple[Migration, ...]) -> None:
    for expected, m in enumerate(migrations, start=1):
        if m.version != expected:
            raise ValueError(
                f"migration versions must be 1, 2, 3, ...: got {m.version} at {expected}"
            )


def migrate(
    conn: sqlite3.Connection,
    where: str = "database",
    migrations: tuple[Migration, ...] = MIGRATIONS,
) -> int:
    """Bring the schema up to the newest version, one transaction per step; return that version.

    `conn` must be in autocommit mode (isolation_level=None): transactions are explicit here.
    Raises StorageError for a database newer than `migrations`, or when a step fails (that step
    is rolled back, earlier steps stay).
    """
    _check_sequence(migrations)
    latest = migrations[-1].version if migrations else 0
    current = schema_version(conn)
    if current > latest:
        raise StorageError(
            f"{where}: schema version {current} is newer than this station supports ({latest}); "
            "it was written by a newer station - upgrade this one, or use another data directory"
        )
    for m in migrations:
        if m.version <= current:
            continue
        try:
            # IMMEDIATE takes the write lock first, then the version is read again: two processes
            # opening a fresh database at once must not both apply the same step.
            conn.execute("BEGIN IMMEDIATE")
            now = schema_version(conn)
            if now >= m.version:
                conn.execute("COMMIT")
                current = now
                continue
            for sql in m.statements:
                conn.execute(sql)
            conn.execute(f"PRAGMA user_version = {int(m.version)}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StorageError(
                f"{where}: schema migration to version {m.version} ({m.description}) failed: {exc}"
            ) from exc
        current = m.version
    return current
