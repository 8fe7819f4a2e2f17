"""Child process of test_kill9.py: records results as fast as it can until it is killed.

Usage: python kill9_child.py DATA_DIR RUN. After every COMMIT the recorder reports, one line per
row goes to stdout ("<row id> <frame id> <image path or ->"), written with os.write so that no
Python buffer sits between a commit and what the parent reads. The first line is "ready".
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from station.config import RecordsConfig
from station.core.result import InspectionResult, StationEvent, Verdict
from station.records import Committed, Recorder


def report(rows: list[Committed]) -> None:
    """Tell the parent which rows are committed (called after COMMIT returned)."""
    text = "".join(f"{c.id} {c.frame_id} {c.image_path or '-'}\n" for c in rows)
    os.write(1, text.encode())


def main() -> None:
    data_dir, run = sys.argv[1], int(sys.argv[2])
    rec = Recorder(
        data_dir,
        RecordsConfig(ok_sample_every=10),
        batch_rows=20,
        batch_seconds=0.01,
        retention_interval_s=0,
        on_commit=report,
    )
    rec.start()
    os.write(1, b"ready\n")
    rng = np.random.default_rng(run)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    amap = rng.random((64, 64), dtype=np.float32)
    frame = run * 1_000_000  # frame ids tell the runs apart
    while True:
        nok = frame % 7 == 0
        rec.submit(
            InspectionResult(
                frame_id=frame,
                timestamp=time.time(),
                source=f"kill9-run{run}",
                score=float(rng.random()),
                threshold=0.5,
                verdict=Verdict.NOK if nok else Verdict.OK,
                latency_ms=1.0,
                model_version="kill9",
                image=image,
                anomaly_map=amap if nok else None,
            )
        )
        if frame % 50 == 0:
            rec.submit_event(StationEvent("state", f"run {run} frame {frame}"))
        frame += 1
        time.sleep(0.0005)  # ~1-2k results/s: many small batches, commits all the time


if __name__ == "__main__":
    main()
