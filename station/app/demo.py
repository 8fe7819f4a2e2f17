"""The demo product and its model, built by the app on the first start, atomically.

Both are written into a temporary folder beside their final place and renamed into it when
complete (the demo product also carries a completion marker, written last): a kill in the middle
leaves either nothing or the whole thing, never half an image set nor a model fitted on part of
it. Leftover temporary folders are removed at the next start, while the data-directory lock is
held (nobody else can be writing them then). A demo folder without its marker (an older
station's, or copied in by hand) is moved aside and written anew, never used.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from station.config import ModelConfig
from station.core.files import fsync_dir, write_atomic
from station.core.result import StationEvent
from station.demo_product import generate_demo_product
from station.model.artifact import PRODUCT_NAME, VERSION_NAME, ModelStore

log = logging.getLogger(__name__)

DEMO_PRODUCT = "demo"  # the product whose model the station builds itself on first start
DEMO_PRODUCT_DIR = "demo_product"
COMPLETE = ".complete"  # written last into a finished demo product
_TMP_PREFIX = f".{DEMO_PRODUCT_DIR}."
# One builder per process. Between processes, `station run` holds the data-dir lock; commands
# that only read the camera (grab, bench-camera) may build it beside a running station, and then
# the rename decides: whoever renames second finds the folder complete and drops its own copy.
_build_lock = threading.Lock()


def is_complete(root: Path) -> bool:
    """Whether `root` is a finished demo product (its marker is there)."""
    return (root / COMPLETE).is_file()


def _fsync_tree(root: Path) -> None:
    # Before the rename that publishes the folder: after a power cut the images must be there
    # if the folder is.
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))


def ensure_demo_product(data_dir: Path) -> Path:
    """The demo product in `data_dir`, written (atomically) if it is not complete there."""
    data_dir = Path(data_dir)
    root = data_dir / DEMO_PRODUCT_DIR
    with _build_lock:
        if is_complete(root):
            return root
        data_dir.mkdir(parents=True, exist_ok=True)
        if root.exists():
            aside = data_dir / f"{DEMO_PRODUCT_DIR}.incomplete-{time.strftime('%Y%m%d-%H%M%S')}"
            log.warning(
                "%s has no completion marker: moved aside to %s, writing it anew", root, aside
            )
            os.rename(root, aside)
        t0 = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=data_dir))
        try:
            summary = generate_demo_product(tmp)
            _fsync_tree(tmp)
            marker = {"counts": dict(summary.counts), "seed": summary.seed, "size": summary.size}
            write_atomic(tmp / COMPLETE, json.dumps(marker).encode())
            fsync_dir(tmp)
            try:
                os.rename(tmp, root)
            except OSError:
                if not is_complete(root):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
                return root
            fsync_dir(data_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("demo product written to %s in %.1f s", root, time.monotonic() - t0)
        return root


def build_demo_model(
    store: ModelStore, product_root: Path, cfg: ModelConfig, emit: Callable[[StationEvent], None]
) -> Path:
    """Fit the demo model on the (complete) demo product as the next version; atomic."""
    from station.model.patchcore import training_images
    from station.model.training import fit

    if not is_complete(product_root):
        raise RuntimeError(f"{product_root}: the demo product is not complete")
    t0 = time.monotonic()
    images = training_images(product_root)
    out = store.next_version_dir(DEMO_PRODUCT)
    log.info("building the demo model from %d images of %s into %s", len(images), product_root, out)
    report = fit(images, cfg, out, product=DEMO_PRODUCT, progress=False, signer=store.signer())
    # Pinned at once: a version written later must be activated to go live, never by being newest.
    store.set_current(DEMO_PRODUCT, out.name, by="first start")
    emit(
        StationEvent(
            kind="model",
            message=(
                f"demo model built in {time.monotonic() - t0:.1f} s: {out.name} "
                f"({report.n_train} images, bank {report.bank_size})"
            ),
            data={"path": str(out), "threshold": report.threshold},
        )
    )
    return out


def remove_stale_temporaries(data_dir: Path) -> list[Path]:
    """Delete temporary folders a killed build left (call only with the data-dir lock held)."""
    data_dir = Path(data_dir)
    gone: list[Path] = []
    candidates = list(data_dir.glob(f"{_TMP_PREFIX}*")) if data_dir.is_dir() else []
    models = data_dir / "models"
    if models.is_dir():
        for product in models.iterdir():
            if product.is_dir() and PRODUCT_NAME.match(product.name):
                # write_artifact's temporaries: ".<version>.<random>"
                candidates += [
                    p
                    for p in product.iterdir()
                    if p.name.startswith(".") and VERSION_NAME.match(p.name[1:].split(".", 1)[0])
                ]
    for p in candidates:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p)
    if gone:
        log.info("removed %d unfinished folders of an interrupted build: %s", len(gone), gone)
    return gone
