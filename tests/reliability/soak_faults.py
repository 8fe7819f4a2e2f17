"""Soak with faults: N frames through the real line, with one disk-full period and one database
fault in the middle; every verdict must be in the database at the end, the counters equal to the
rows. A measurement (minutes long), not a test: run it as root (it mounts a tmpfs).

    sudo .venv/bin/python tests/reliability/soak_faults.py --frames 10000 --json soak.json

Faults, both real: (1) the data directory's tmpfs filled to the last byte by another file for
`--full-s` seconds from a third of the run; (2) from two thirds, another process's connection
holds the database's write lock (BEGIN EXCLUSIVE) for `--lock-s` seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from test_pipeline import line_config

from station.app import StationApp
from station.config import ModelConfig
from station.demo_product import generate_demo_product
from station.model.patchcore import PatchCore, training_images
from station.model.training import fit
from station.records import db_path


def fill(folder: Path) -> Path:
    """Write a file until the filesystem is full; the file (delete it to give the room back)."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):  # the last bytes, smaller than a block
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=10000)
    ap.add_argument("--fps", type=float, default=8.0, help="replay rate (below the model's)")
    ap.add_argument("--full-s", type=float, default=60.0)
    ap.add_argument("--lock-s", type=float, default=30.0)
    ap.add_argument("--disk-mb", type=int, default=2048)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    generate_demo_product(work / "demo", n_train=40, n_test_good=20, n_per_defect=5)
    cfg_model = dataclasses.replace(ModelConfig(), image_size=224)
    fit(training_images(work / "demo"), cfg_model, work / "model", product="demo", progress=False)
    model = PatchCore.load(work / "model", "onnx")
    disk = work / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.disk_mb}m", "tmpfs", str(disk)],
                   check=True)  # fmt: skip
    data = disk / "data"
    cfg = line_config(work / "demo" / "test", fps=args.fps, queue_size=512)
    cfg = dataclasses.replace(
        cfg, records=dataclasses.replace(cfg.records, spool_mb=32.0, disk_warning_mb=100.0)
    )
    app = StationApp(cfg, data, model=model, max_frames=args.frames)
    faults: dict[str, object] = {}

    def inject() -> None:
        while app.status().counters.inspected < args.frames // 3:
            time.sleep(0.5)
        t0 = time.time()
        filler = fill(disk)
        faults["disk_full_at_frame"] = app.status().counters.inspected
        time.sleep(args.full_s)
        filler.unlink()
        faults["disk_full_s"] = round(time.time() - t0, 1)
        while app.status().counters.inspected < 2 * args.frames // 3:
            time.sleep(0.5)
        conn = sqlite3.connect(db_path(data), isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        faults["db_locked_at_frame"] = app.status().counters.inspected
        time.sleep(args.lock_s)
        conn.execute("ROLLBACK")
        conn.close()
        faults["db_locked_s"] = args.lock_s

    t_start = time.time()
    app.start()
    injector = threading.Thread(target=inject, daemon=True)
    injector.start()
    alarms: set[str] = set()
    while not app.wait(1.0):
        alarms.update(a.split(":")[0] for a in app.status().alarms)
    app.stop(60)
    stats = app.recorder.stats()
    status = app.status()
    app.close()
    wall = time.time() - t_start
    injector.join(5)
    # The records as the next start finds them (the spool moved in).
    again = StationApp(cfg, data, model=model, max_frames=0)
    moved = again.recorder.recover_spool()
    again.close()
    with sqlite3.connect(db_path(data)) as conn:
        rows = conn.execute("SELECT count(*) FROM inspections").fetchone()[0]
        inspected, unrecorded, dropped = conn.execute(
            "SELECT sum(inspected), sum(unrecorded), sum(dropped) FROM shift_counters"
        ).fetchone()
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        storage_events = conn.execute(
            "SELECT count(*) FROM events WHERE kind = 'storage'"
        ).fetchone()[0]
    out = {
        "frames": args.frames,
        "inspected": status.counters.inspected,
        "rows": rows,
        "stored_counters": {"inspected": inspected, "unrecorded": unrecorded, "dropped": dropped},
        "recorder": {
            "submitted": stats.submitted,
            "recorded": stats.recorded,
            "unrecorded": stats.unrecorded,
            "spooled": stats.spooled,
            "queued_at_stop": stats.queued,
            "images_unarchived": stats.images_unarchived,
        },
        "moved_from_spool_at_next_start": moved,
        "faults": faults,
        "alarms_seen": sorted(alarms),
        "storage_events": storage_events,
        "integrity_check": integrity,
        "state": status.state.value,
        "wall_s": round(wall, 1),
        "every_verdict_recorded": rows == status.counters.inspected and not stats.unrecorded,
        "counters_equal_rows": inspected == rows,
    }
    subprocess.run(["umount", "-l", str(disk)], check=False)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if out["every_verdict_recorded"] and out["counters_equal_rows"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
