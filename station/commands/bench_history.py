"""`station bench-history`: the history page's queries on a generated database of N rows."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the `bench-history` command."""
    p = subparsers.add_parser(
        "bench-history",
        help="time the history page's queries on a generated database",
        description=(
            "Generates a records database of --rows inspections (two parts a second around the "
            "clock, three products with two model versions each, 3 % NOK, 1 % CHECK, a third "
            "of the NOK parts with a disposition, events), then runs each query the history "
            "page makes (first page with its count, a page further on, each filter, the sorts, "
            "a part-id search, a part's detail) --repeat times and prints JSON with p50/p95 per "
            "query and over all of them."
        ),
    )
    p.add_argument("--rows", type=int, default=1_000_000, help="inspections (1000000)")
    p.add_argument("--repeat", type=int, default=20, help="runs of each query (20)")
    p.add_argument("--data-dir", type=Path, help="build (or reuse) the database here")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the JSON here")
    p.set_defaults(func=run)


PRODUCTS = ("demo", "board-a", "board-b")


def generate(path: Path, rows: int, *, seed: int = 0, end: float | None = None) -> float:
    """Write `rows` inspections (ending at `end`, default now) into a new database at `path`;
    returns the seconds it took."""
    import numpy as np

    from station.records.db import Database
    from station.records.dispositions import Disposition

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    end = time.time() if end is None else end
    start = end - rows * 0.5
    db = Database(path)
    try:
        times = start + np.arange(rows) * 0.5 + rng.uniform(0, 0.05, rows)
        product = rng.choice(len(PRODUCTS), rows, p=[0.5, 0.3, 0.2])
        # The second version of each product takes over half way.
        version = np.where(np.arange(rows) < rows // 2, 1, 2)
        score = rng.gamma(9.0, 1.0, rows)
        u = rng.random(rows)
        verdict = np.where(u < 0.03, "NOK", np.where(u < 0.04, "CHECK", "OK"))
        score = np.where(
            verdict == "NOK", score + 12, np.where(verdict == "CHECK", score + 8, score)
        )
        latency = rng.gamma(6.0, 20.0, rows)
        day = [time.strftime("%Y%m%d", time.localtime(t)) for t in times[:: max(1, rows // 1000)]]
        seq: dict[str, int] = {}
        kinds = [d.value for d in Disposition if d != Disposition.MISSED]
        batch: list[tuple[Any, ...]] = []
        dispositions: list[tuple[Any, ...]] = []
        stride = max(1, rows // 1000)
        with db.transaction() as cur:
            for i in range(rows):
                name = PRODUCTS[product[i]]
                d = day[min(i // stride, len(day) - 1)]
                key = f"{name}{d}"
                seq[key] = seq.get(key, 0) + 1
                part = f"{name.upper()}-{d}-{seq[key]:06d}"
                v = str(verdict[i])
                disposition = None
                if v == "NOK" and u[i] < 0.01:
                    disposition = kinds[i % len(kinds)]
                kept = v != "OK" or i % 50 == 0
                batch.append(
                    (
                        float(times[i]), i, "bench", float(score[i]), 20.0, v, float(latency[i]),
                        f"{name}/v000{version[i]}", None, part, 16.0, name, disposition,
                        f"archive/bench/{i}_{v}.png" if kept else None,
                    )
                )  # fmt: skip
                if disposition is not None:
                    dispositions.append((i + 1, float(times[i]) + 600, disposition))
                if len(batch) == 50_000:
                    _insert(cur, batch)
                    batch = []
            _insert(cur, batch)
            cur.executemany(
                "INSERT INTO dispositions (inspection_id, time, kind, reason, user, role) "
                "VALUES (?, ?, ?, 'bench', 'qa1', 'qa')",
                dispositions,
            )
            cur.executemany(
                "INSERT INTO events (time, kind, message, state, data) "
                "VALUES (?, ?, ?, NULL, '{}')",
                [(float(t), "camera", "bench event") for t in times[:: max(1, rows // 5000)]],
            )
    finally:
        db.close()
    return time.perf_counter() - t0


def _insert(cur: Any, batch: list[tuple[Any, ...]]) -> None:
    cur.executemany(
        "INSERT INTO inspections (time, frame_id, source, score, threshold, verdict, latency_ms, "
        "model_version, label, part_id, check_threshold, product, disposition, image_path) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        batch,
    )


def scenarios(end: float) -> dict[str, Any]:
    """The history page's queries: name -> HistoryQuery (or a callable for the rest)."""
    from station.core.result import Verdict
    from station.records.history import HistoryFilter, HistoryQuery, Sort
    from station.records.shifts import current_shift, previous_shift

    shift = previous_shift(current_shift(end))
    week = end - 7 * 86400
    return {
        "all_newest": HistoryQuery(),
        "all_oldest": HistoryQuery(sort=Sort.OLDEST),
        "all_score_high": HistoryQuery(sort=Sort.SCORE_HIGH),
        "shift": HistoryQuery(HistoryFilter(since=shift.start, until=shift.end)),
        "shift_score_high": HistoryQuery(
            HistoryFilter(since=shift.start, until=shift.end), sort=Sort.SCORE_HIGH
        ),
        "product_week": HistoryQuery(HistoryFilter(since=week, product="board-b")),
        "version": HistoryQuery(HistoryFilter(model_version="board-a/v0001")),
        "nok_week": HistoryQuery(HistoryFilter(since=week, verdicts=(Verdict.NOK,))),
        "check_and_nok_shift": HistoryQuery(
            HistoryFilter(since=shift.start, until=shift.end, verdicts=(Verdict.NOK, Verdict.CHECK))
        ),
        "false_rejects": HistoryQuery(HistoryFilter(disposition="false_reject")),
        "no_disposition_nok": HistoryQuery(
            HistoryFilter(disposition="none", verdicts=(Verdict.NOK,))
        ),
        "score_above_35": HistoryQuery(HistoryFilter(score_min=35.0)),
        "score_band_shift": HistoryQuery(
            HistoryFilter(since=shift.start, until=shift.end, score_min=14.0, score_max=18.0)
        ),
        "combined": HistoryQuery(
            HistoryFilter(
                since=week,
                product="demo",
                model_version="demo/v0002",
                verdicts=(Verdict.NOK,),
                score_min=20.0,
            )
        ),
        "product_score_above_35_all_time": HistoryQuery(
            HistoryFilter(product="board-b", score_min=35.0)
        ),
        "ok_week_score_low": HistoryQuery(
            HistoryFilter(since=week, verdicts=(Verdict.OK,)), sort=Sort.SCORE_LOW
        ),
        "rare_product_old_version_nok": HistoryQuery(
            HistoryFilter(product="board-b", model_version="board-b/v0001", verdicts=(Verdict.NOK,))
        ),
    }


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from station.records.db import Database
    from station.records.dispositions import dispositions_of
    from station.records.history import query_page

    tmp = None
    if args.data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-history-")
        folder = Path(tmp.name)
    else:
        folder = args.data_dir
        folder.mkdir(parents=True, exist_ok=True)
    path = folder / "station.db"
    built = None
    if not path.exists():
        print(f"generating {args.rows} rows in {path} ...", file=sys.stderr)
        built = generate(path, args.rows)
    db = Database(path, create=False)
    try:
        n = db.count_inspections()
        end = float(db.fetch("SELECT max(time) FROM inspections")[0][0])
        timings: dict[str, list[float]] = {}

        def timed(name: str, fn: Any) -> Any:
            t = time.perf_counter()
            out = fn()
            timings.setdefault(name, []).append((time.perf_counter() - t) * 1e3)
            return out

        queries = scenarios(end)
        counts: dict[str, str] = {}
        sample = db.fetch("SELECT id, part_id FROM inspections WHERE verdict = 'NOK' LIMIT 1 "
                          "OFFSET ?", [n // 100])  # fmt: skip
        for _ in range(max(1, args.repeat)):
            for name, q in queries.items():
                page = timed(name, lambda q=q: query_page(db, q))
                counts[name] = page.total_text
                if name == "all_newest":
                    key = page.next_key
                    for _deep in range(20):  # paging on: page 21's cost is page 2's
                        nxt = query_page(db, q, key)
                        key = nxt.next_key
                    timed("all_page_21", lambda q=q, key=key: query_page(db, q, key))
            if sample:
                row_id, part = sample[0]
                from station.records.history import HistoryFilter, HistoryQuery

                prefix = part[:-3]
                timed("part_id_prefix", lambda p=prefix: query_page(
                    db, HistoryQuery(HistoryFilter(part_id=p.lower()))))  # fmt: skip
                timed("detail", lambda r=row_id: (
                    db.get_inspection(r), dispositions_of(db, r),
                    db.query_events(end - 86400 * 2 - 120, end - 86400 * 2 + 120, limit=50),
                ))  # fmt: skip
    finally:
        db.close()
    allv = np.concatenate([np.asarray(v) for v in timings.values()])
    report = {
        "rows": n,
        "generate_s": None if built is None else round(built, 1),
        "repeat": args.repeat,
        "queries": {
            k: {
                "p50_ms": round(float(np.percentile(v, 50)), 2),
                "p95_ms": round(float(np.percentile(v, 95)), 2),
                "max_ms": round(float(np.max(v)), 2),
                "matches": counts.get(k, ""),
            }
            for k, v in timings.items()
        },
        "all": {
            "p50_ms": round(float(np.percentile(allv, 50)), 2),
            "p95_ms": round(float(np.percentile(allv, 95)), 2),
            "max_ms": round(float(np.max(allv)), 2),
        },
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 0
