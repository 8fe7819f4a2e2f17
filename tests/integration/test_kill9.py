"""Nothing committed is ever lost: SIGKILL a real recorder process at random moments.

A child process (kill9_child.py) writes rows through the real Recorder into a real SQLite file
and prints each row's id after its COMMIT returned. The parent kills it with SIGKILL after a
random (seeded) delay, eight times on the same data directory, and after every kill checks that
the database passes SQLite's integrity check, that every reported row is there with its frame
id, and that every reported archive file exists and decodes. A SIGKILL leaves the OS page cache
intact, so this proves the application-level ordering (files renamed before the row commits,
nothing reported before COMMIT returns, WAL recovery on the next open); power-loss durability
rests on synchronous=FULL and the fsyncs, which a test cannot cut the power to.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from station.records import Database, db_path
from station.records.archive import read_archived_image, read_map

CHILD = Path(__file__).with_name("kill9_child.py")
RUNS = 8
SEED = 20261121

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)"),
]


def _wait_ready(out: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.read_bytes().startswith(b"ready\n"):
            return
        if proc.poll() is not None:
            raise AssertionError(f"child exited with {proc.returncode} before it was ready")
        time.sleep(0.01)
    raise AssertionError("child did not get ready")


def _reported(out: Path) -> dict[int, tuple[int, str]]:
    """Rows the child said were committed; a line cut by the kill is not a report."""
    rows: dict[int, tuple[int, str]] = {}
    text = out.read_text()
    for line in text.splitlines(keepends=True)[1:]:
        if not line.endswith("\n"):
            continue
        row_id, frame_id, image = line.split()
        rows[int(row_id)] = (int(frame_id), image)
    return rows


def test_sigkill_never_loses_a_committed_row(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    data = tmp_path / "data"
    reported: dict[int, tuple[int, str]] = {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for run in range(RUNS):
        out = tmp_path / f"run{run}.out"
        err = tmp_path / f"run{run}.err"
        with out.open("wb") as fo, err.open("wb") as fe:
            proc = subprocess.Popen(
                [sys.executable, str(CHILD), str(data), str(run)], stdout=fo, stderr=fe, env=env
            )
        try:
            _wait_ready(out, proc)
            time.sleep(rng.uniform(0.05, 0.8))
            assert proc.poll() is None, err.read_text()
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(10)
        assert proc.returncode == -signal.SIGKILL

        this_run = _reported(out)
        assert not set(this_run) & set(reported), "a row id was reused after its commit"
        reported.update(this_run)

        # A plain sqlite3 connection first: the check must not depend on the station's code.
        conn = sqlite3.connect(db_path(data))
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            stored = dict(conn.execute("SELECT id, frame_id FROM inspections").fetchall())
        finally:
            conn.close()
        missing = [i for i in reported if i not in stored]
        assert not missing, f"run {run}: committed rows lost: {missing[:10]}"
        assert all(stored[i] == frame for i, (frame, _) in reported.items())
        images = [img for _, img in this_run.values() if img != "-"]
        for image in images[-20:]:  # the last ones were written closest to the kill
            read_archived_image(data / image)  # present and complete
            if image.endswith("_NOK.png"):
                read_map(data / image.replace("_NOK.png", "_NOK_map.png"), 0.5)
        print(f"run {run}: {len(this_run)} rows reported, {len(stored)} stored in all")

    assert len(reported) > 100, "the child hardly committed anything: the test proves little"
    # The data directory is still usable: a fresh open recovers and writes on.
    with Database(db_path(data)) as db:
        assert db.integrity_check() == "ok"
        assert db.count_inspections() >= len(reported)
