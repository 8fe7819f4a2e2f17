"""A station that cannot record does not inspect quietly: a database it may not write (owned by
another user, read-only) fails the line visibly and `station run --headless` exits non-zero,
unless `records.on_failure = "keep"`, where the results wait in the spool for the database.

The fault is real: the database file is made read-only and, where the tests run as root (who
writes anything), the station runs without the capability that lets root ignore permissions.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from test_run_cli import REPO, install_model, write_config  # tests/integration

from station.cli import main
from station.records import db_path

DROP_ROOT = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
             "--bounding-set=-dac_override,-dac_read_search"]  # fmt: skip


def _can_drop_root() -> bool:
    if os.geteuid() != 0:
        return True  # not root: a read-only file is read-only already
    if shutil.which("setpriv") is None:
        return False
    return subprocess.run([*DROP_ROOT, "true"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(
    not _can_drop_root(),
    reason="running as root without a working setpriv (util-linux): root writes a read-only file",
)


def _rows(data: Path) -> int:
    with sqlite3.connect(f"{db_path(data).as_uri()}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM inspections").fetchone()[0])


def _run(data: Path, cfg: Path, frames: int) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "station", "run", "--headless", "--config", str(cfg),
           "--data-dir", str(data), "--max-frames", str(frames)]  # fmt: skip
    prefix = DROP_ROOT if os.geteuid() == 0 else []
    return subprocess.run(
        prefix + cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


@pytest.fixture
def station_dir(tmp_path: Path, demo_model: Path) -> Path:
    data = tmp_path / "data"
    install_model(data, demo_model)
    assert main(["log", "--data-dir", str(data), "--limit", "1"]) == 0  # the database exists
    return data


def test_a_read_only_database_fails_the_line_and_the_run(
    station_dir: Path, demo_product: Path, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "station.toml", demo_product, fps=10.0)
    before = _rows(station_dir)
    db_path(station_dir).chmod(0o444)
    try:
        run = _run(station_dir, cfg, 5)
    finally:
        db_path(station_dir).chmod(0o600)
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert "cannot be written" in out and "readonly database" in out, out
    assert "records.on_failure = keep" in out
    assert _rows(station_dir) == before


def test_with_keep_the_results_wait_in_the_spool_and_reach_the_database(
    station_dir: Path, demo_product: Path, tmp_path: Path
) -> None:
    cfg = write_config(
        tmp_path / "station.toml", demo_product, fps=10.0, extra='on_failure = "keep"'
    )
    db_path(station_dir).chmod(0o444)
    try:
        run = _run(station_dir, cfg, 5)
    finally:
        # As an admin would: SQLite gives the -wal and -shm files the database's mode.
        for f in station_dir.glob("station.db*"):
            f.chmod(0o600)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "inspecting anyway" in out
    assert _rows(station_dir) == 0
    assert list((station_dir / "spool").glob("*.jsonl"))
    # Writable again: the next start moves them in; none of the five verdicts is lost.
    again = _run(station_dir, cfg, 1)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _rows(station_dir) == 6, again.stdout + again.stderr


def test_the_write_check_passes_a_writable_database_and_leaves_nothing(station_dir: Path) -> None:
    from station.records.db import writable

    with sqlite3.connect(db_path(station_dir)) as conn:
        before = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    assert writable(db_path(station_dir)) is None
    with sqlite3.connect(db_path(station_dir)) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == before


def _stored_counts(data: Path) -> tuple[int, int]:
    """Inspected and unrecorded over every shift, as the database stores them."""
    with sqlite3.connect(f"{db_path(data).as_uri()}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT sum(inspected), sum(unrecorded) FROM shift_counters").fetchone()
    return int(row[0] or 0), int(row[1] or 0)


def test_results_lost_before_an_exit_are_still_in_the_next_runs_counters(
    station_dir: Path, demo_product: Path, tmp_path: Path
) -> None:
    """Without a spool (spool_mb = 0) and a database it may not write, every result is lost;
    the station exits with the database still read-only. The counts of those parts must reach
    the stored counters at the next start (from the counts ledger), once, not be forgotten."""
    cfg = write_config(
        tmp_path / "station.toml", demo_product, fps=10.0,
        extra='on_failure = "keep"\nspool_mb = 0',
    )  # fmt: skip
    before = _stored_counts(station_dir)
    db_path(station_dir).chmod(0o444)
    try:
        run = _run(station_dir, cfg, 5)
    finally:
        for f in station_dir.glob("station.db*"):
            f.chmod(0o600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert _rows(station_dir) == 0 and _stored_counts(station_dir) == before
    for _ in range(2):  # the second start must not count them again
        again = _run(station_dir, cfg, 1)
        assert again.returncode == 0, again.stdout + again.stderr
    inspected, unrecorded = _stored_counts(station_dir)
    assert _rows(station_dir) == 2
    assert (inspected - before[0], unrecorded - before[1]) == (7, 5)
