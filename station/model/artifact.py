"""The versioned model artifact: one directory per product version, no pickle, hash-checked.

    <version>/manifest.json          format version, backbone + weights hash, preprocessing,
                                     layers, bank size, threshold, calibration scores, files
    <version>/memory_bank.npy        float32 M x C, plain array (np.load with allow_pickle=False)
    <version>/feature_extractor.onnx the exported extractor (ONNX Runtime / TensorRT input)

A station loads models that travel between machines, so every file's size and SHA-256 are in the
manifest and the manifest carries a hash of itself: a truncated, tampered or newer-format artifact
is refused with a message that says which.
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import io
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from station.core.errors import ModelError
from station.core.files import fsync_dir
from station.model.preprocess import Preprocessing
from station.model.signing import SIGNATURE, Signer, Trust

# Raised whenever a manifest gains a field that changes the scores, so that an older station
# refuses a newer model instead of silently ignoring the field and judging parts differently.
# 1: the first release. 2: preprocessing scale / exposure / max_tiles, score_top,
# intensity_weight. 3: check_threshold (a CHECK band below the reject limit). 4: position_offsets
# and position_hw (per-position normalisation: a station that ignored them would score every
# part on another scale than its limit's). Every older format still loads (absent fields keep
# their old meaning). 5: discriminator (a station that ignored it would score on another scale).
FORMAT_VERSION = 5


def format_needed(m: Manifest) -> int:
    """The oldest format that holds what this manifest uses: a model without per-position
    offsets or a discriminator stays readable by a format-3 station (a fleet is not updated in
    one day)."""
    if len(m.discriminator):
        return 5
    return 4 if len(m.position_offsets) else 3


MANIFEST = "manifest.json"
BANK = "memory_bank.npy"
ONNX = "feature_extractor.onnx"
ENGINES = "engines"  # TensorRT engines built on this machine (`station export`), not shipped
# Every artifact holds these files, listed in its manifest with size and hash: a manifest
# that lists fewer ("files": {}) would skip their checks.
REQUIRED_FILES = frozenset({BANK, ONNX})
# What else a version folder may hold besides its listed files.
NOT_LISTED = frozenset({MANIFEST, SIGNATURE, ENGINES})


@dataclass(frozen=True)
class Manifest:
    """What a model version is and how to run it."""

    product: str
    version: str
    backbone: str
    weights_file: str
    weights_sha256: str
    preprocessing: Preprocessing
    layers: list[str]
    aggregation: int
    feature_dim: int
    bank_size: int
    coreset_ratio: float
    reweight_neighbors: int
    blur_sigma: float
    threshold: float
    threshold_source: str  # how it was chosen, e.g. "calibration q0.99" or "evaluate fnr<=0.005"
    calibration_scores: list[float]  # image scores of held-out good parts (drift baseline)
    created_at: str
    created_by: str
    n_train: int
    fit_seconds: float
    format_version: int = FORMAT_VERSION
    intensity_weight: float = 0.0  # weight of the local-brightness feature channel (0 = none)
    # Image score: mean of the top fraction of patch scores; 0 (models from before it existed) =
    # the paper's reweighted maximum.
    score_top: float = 0.0
    # Parts scoring from here up to the threshold are CHECK (sent to a manual check); None: no
    # band, the verdict is OK / NOK as before.
    check_threshold: float | None = None
    notes: str = ""  # the technician's words when the version was saved
    # How the limits were chosen: held-back good and known-bad scores, target, the rates and
    # their intervals, training images that scored far above the rest (see station.app.setup).
    validation: dict[str, Any] = field(default_factory=dict)
    # What the model was trained on (smallest and largest image, channels): frames far outside
    # it are alarmed at the line (a model of another product).
    train_shape: dict[str, Any] = field(default_factory=dict)
    # Per-position normalisation (station.model.position): each valid patch's offset, in the
    # order of the patches of a part of `position_hw` (h, w); empty = plain distances.
    position_offsets: list[float] = field(default_factory=list)
    position_hw: list[int] = field(default_factory=list)
    # The linear discriminator (station.model.discriminator): feature_dim weights, then the
    # bias; each patch's distance gains rows @ weights + bias. Empty = none.
    discriminator: list[float] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["preprocessing"] = self.preprocessing.to_dict()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        d = dict(d)
        d.pop("content_sha256", None)
        d["preprocessing"] = Preprocessing.from_dict(d["preprocessing"])
        return cls(**d)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest_hash(d: dict[str, Any]) -> str:
    body = {k: v for k, v in d.items() if k != "content_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def creator() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:
        return "unknown"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class ModelArtifact:
    """A loaded, verified model version."""

    path: Path
    manifest: Manifest
    bank: np.ndarray
    # The extractor as it was hashed: runtimes and derived versions use these bytes, never a
    # second read of the file, which could have been swapped after the check.
    onnx_bytes: bytes = b""
    # The trusted key that signed it; None when unsigned (allowed) or loaded without a trust.
    signed_by: str | None = None

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX

    @property
    def onnx_model(self) -> bytes | Path:
        """What a runtime loads: the verified bytes where the loader kept them."""
        return self.onnx_bytes or self.onnx_path

    @property
    def version(self) -> str:
        return self.manifest.version


def write_artifact(
    out: Path,
    manifest: Manifest,
    bank: np.ndarray,
    onnx_file: Path | bytes,
    signer: Signer | None = None,
) -> Path:
    """Write atomically: build in a temp dir beside `out`, then rename into place. With a
    `signer` the manifest is signed (`manifest.sig`) before the version appears."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and any(out.iterdir()):
        raise ModelError(f"{out}: already exists and is not empty; choose a new version folder")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        np.save(tmp / BANK, np.ascontiguousarray(bank, dtype=np.float32), allow_pickle=False)
        if isinstance(onnx_file, bytes):
            _write_synced(tmp / ONNX, onnx_file)
        else:
            shutil.copyfile(onnx_file, tmp / ONNX)
        files = {
            name: {"bytes": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)}
            for name in (BANK, ONNX)
        }
        d = dataclasses.replace(manifest, format_version=format_needed(manifest)).to_json()
        d["files"] = files
        d["content_sha256"] = _manifest_hash(d)
        body = json.dumps(d, indent=2).encode()
        _write_synced(tmp / MANIFEST, body)
        if signer is not None:
            _write_synced(tmp / SIGNATURE, signer.signature(body))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_derived(
    out: Path,
    manifest: Manifest,
    base: ModelArtifact,
    signer: Signer | None,
    bank: np.ndarray | None = None,
) -> Path:
    """A version made from `base` (a new limit; a new `bank`): `base`'s verified extractor,
    signed only when `base` was verified as signed by a trusted key: a model let through
    unsigned (model.allow_unsigned) must not come out of a derivation signed. Written in the
    format its fields need (write_artifact), whatever the base's."""
    return write_artifact(
        out,
        manifest,
        base.bank if bank is None else bank,
        base.onnx_model,
        signer if base.signed_by is not None else None,
    )


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def sign_artifact(path: Path, signer: Signer) -> str:
    """Sign an intact model version (every file checked first) in place; the key's id.

    For versions made before signing, or brought from elsewhere, once someone checked them.
    """
    path = Path(path)
    load_artifact(path)  # refuses a damaged or tampered one: never sign what does not verify
    body = (path / MANIFEST).read_bytes()
    # Beside the version, not in it: an interrupted sign must not leave a file the version's
    # check refuses ("holds files its manifest does not list").
    tmp = path.parent / f".{path.name}.{SIGNATURE}.tmp"
    _write_synced(tmp, signer.signature(body))
    os.replace(tmp, path / SIGNATURE)
    fsync_dir(path)
    return signer.key_id


def read_manifest(path: Path) -> tuple[Manifest, dict[str, Any]]:
    """Read and verify the manifest only (cheap; for listings)."""
    manifest, d, _ = _read_manifest(path)
    return manifest, d


def _read_manifest(path: Path) -> tuple[Manifest, dict[str, Any], bytes]:
    mpath = Path(path) / MANIFEST
    if not mpath.is_file():
        raise ModelError(f"{path}: not a model artifact (no {MANIFEST})")
    try:
        body = mpath.read_bytes()
        d = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{mpath}: manifest is damaged or truncated ({exc})") from None
    if not isinstance(d, dict):
        raise ModelError(f"{mpath}: manifest is not a JSON object")
    fmt = d.get("format_version")
    if not isinstance(fmt, int):
        raise ModelError(f"{mpath}: manifest has no format_version")
    if fmt > FORMAT_VERSION:
        raise ModelError(
            f"{path}: model format {fmt} is newer than this station reads ({FORMAT_VERSION}); "
            "update the station software"
        )
    if d.get("content_sha256") != _manifest_hash(d):
        raise ModelError(f"{mpath}: manifest was modified after it was written (hash mismatch)")
    try:
        return Manifest.from_json(d), d, body
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{mpath}: manifest is missing or has a wrong field ({exc})") from None


def _check_file_list(path: Path, files: dict[str, Any]) -> None:
    """The manifest lists exactly the artifact's files, by plain names inside its folder."""
    if not isinstance(files, dict):
        raise ModelError(f"{path}: manifest's file list is not a table of names")
    for name in files:
        # Never open a name the manifest gives before it is known to be a plain file name here
        # ("../../etc/passwd" would be hashed, and its size told in the error).
        if not isinstance(name, str) or name != Path(name).name or name in ("", ".", ".."):
            raise ModelError(f"{path}: manifest lists {name!r}, which is not a plain file name")
        if name.startswith(".") or name in NOT_LISTED:
            raise ModelError(f"{path}: manifest lists {name!r}, which a model cannot hold")
        meta = files[name]
        if not (isinstance(meta, dict) and isinstance(meta.get("bytes"), int)):
            raise ModelError(f"{path}: manifest entry for {name} has no size")
        if not isinstance(meta.get("sha256"), str):
            raise ModelError(f"{path}: manifest entry for {name} has no hash")
    missing = sorted(REQUIRED_FILES - set(files))
    if missing:
        raise ModelError(
            f"{path}: manifest does not list {', '.join(missing)} (each file must be listed "
            "with its size and hash)"
        )
    extra = sorted(
        p.name for p in path.iterdir() if p.name not in files and p.name not in NOT_LISTED
    )
    if extra:
        raise ModelError(
            f"{path}: holds files its manifest does not list: {', '.join(extra)} (remove them, "
            "or fit the model again)"
        )


def _check_limits(path: Path, m: Manifest) -> None:
    """Limits a line can judge by: finite, positive, the check band below the reject limit."""
    t = m.threshold
    if not (isinstance(t, int | float) and math.isfinite(t) and t > 0):
        raise ModelError(f"{path}: reject limit {t!r} is not a positive number")
    c = m.check_threshold
    if c is not None and not (isinstance(c, int | float) and math.isfinite(c) and 0 < c < t):
        raise ModelError(f"{path}: check limit {c!r} is not a positive number below {t:g}")


def load_artifact(
    path: str | Path, trust: Trust | None = None, *, product: str | None = None
) -> ModelArtifact:
    """Load and verify every file of a model version; refuse truncated or tampered ones.

    With `trust`, also refuse a version not signed by a trusted key (the line passes the
    station's; tools that only read a model, like evaluate, check the files alone). With
    `product`, refuse another product's model put into this product's folder.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"{path}: model folder not found")
    manifest, _, body = _read_manifest(path)
    if product is not None and manifest.product != product:
        raise ModelError(
            f"{path}: the model was made for product '{manifest.product}', not '{product}'; "
            "copied into the wrong folder? Fit or import it for this product"
        )
    _check_file_list(path, manifest.files)
    _check_limits(path, manifest)
    signed_by = trust.check(path, body) if trust is not None else None
    contents: dict[str, bytes] = {}
    for name, meta in manifest.files.items():
        f = path / name
        if not f.is_file() or f.is_symlink():
            raise ModelError(f"{path}: file {name} is missing (or not a plain file)")
        # Checked and used from one read: a file swapped between a check and a second read
        # would run unchecked.
        try:
            data = f.read_bytes()
        except OSError as exc:
            raise ModelError(f"{path}: {name} cannot be read ({exc.strerror or exc})") from None
        if len(data) != meta["bytes"]:
            raise ModelError(
                f"{path}: {name} is truncated or altered: {len(data)} bytes, "
                f"manifest says {meta['bytes']}"
            )
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise ModelError(f"{path}: {name} was modified after it was written (hash mismatch)")
        contents[name] = data
    try:
        bank = np.load(io.BytesIO(contents.pop(BANK)), allow_pickle=False)
    except ValueError as exc:
        raise ModelError(f"{path}: {BANK} is not a plain array file ({exc})") from None
    if bank.ndim != 2 or bank.shape[0] != manifest.bank_size:
        raise ModelError(f"{path}: memory bank shape {bank.shape} disagrees with the manifest")
    return ModelArtifact(
        path, manifest, bank.astype(np.float32, copy=False), contents[ONNX], signed_by
    )


# ---------------------------------------------------------------------------------------------
# Product model store: data_dir/models/<product>/vNNNN, a CURRENT pointer, and the history of
# activations that a roll back walks back through.

VERSION_NAME = re.compile(r"^v\d{4,}$")
PRODUCT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
CURRENT = "CURRENT"
HISTORY = "HISTORY"  # one line per activation: "<ISO time> <version> <who>"


def check_product_name(product: str) -> str:
    """A product name usable as a folder and in part ids; ModelError naming the rule."""
    if not PRODUCT_NAME.match(product):
        raise ModelError(
            f"'{product}' is not a product name: letters, digits, '_' and '-', at most 40, "
            "starting with a letter or digit"
        )
    return product


class ModelStore:
    """The versions of each product's model and which one the line uses."""

    def __init__(self, root: Path, signer: Callable[[], Signer] | None = None) -> None:
        self.root = Path(root)
        self._make_signer = signer
        self._signer: Signer | None = None

    def signer(self) -> Signer | None:
        """What signs this store's new versions (made on first use: a station key may be
        generated then); None for a store that writes unsigned versions."""
        if self._signer is None and self._make_signer is not None:
            self._signer = self._make_signer()
        return self._signer

    def product_dir(self, product: str) -> Path:
        return self.root / check_product_name(product)

    def products(self) -> list[str]:
        """Products with at least one model version."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and PRODUCT_NAME.match(p.name) and self.versions(p.name)
        )

    def versions(self, product: str) -> list[str]:
        """Complete versions (a manifest inside), oldest first."""
        d = self.product_dir(product)
        if not d.is_dir():
            return []
        names = [
            p.name
            for p in d.iterdir()
            if VERSION_NAME.match(p.name) and p.is_dir() and (p / MANIFEST).is_file()
        ]
        return sorted(names, key=lambda v: int(v[1:]))

    def next_version_dir(self, product: str) -> Path:
        d = self.product_dir(product)
        used = (
            [int(p.name[1:]) for p in d.iterdir() if VERSION_NAME.match(p.name)]
            if d.is_dir()
            else []
        )
        return d / f"v{(max(used) + 1) if used else 1:04d}"

    def current_or_none(self, product: str) -> Path | None:
        """`current()`, with None for a pointer that names no version (listings, the "before"
        of an activation: a bad pointer must never block the activation that fixes it)."""
        try:
            return self.current(product)
        except ModelError:
            return None

    def current(self, product: str) -> Path | None:
        """The version in use: the CURRENT pointer, else the newest version."""
        pointer = self.product_dir(product) / CURRENT
        if pointer.is_file():
            name = pointer.read_text(errors="replace").strip()
            if not VERSION_NAME.match(name):
                # Never fall back to another version: the line would run one nobody chose.
                raise ModelError(
                    f"{pointer} names {name[:40]!r}, not a version of {product} (vNNNN); "
                    "activate a version again"
                )
            if not (self.product_dir(product) / name / MANIFEST).is_file():
                raise ModelError(f"{pointer} names {name}, which {product} does not have")
            return self.product_dir(product) / name
        versions = self.versions(product)
        return self.product_dir(product) / versions[-1] if versions else None

    def set_current(self, product: str, version: str, *, by: str = "") -> None:
        """Point the line at `version` (also how a technician rolls back); atomic, and noted in
        the product's activation history."""
        if version not in self.versions(product):
            raise ModelError(f"product {product} has no model version {version}")
        d = self.product_dir(product)
        history = d / HISTORY
        if not history.exists():
            before = self.current_or_none(product)
            if before is not None and before.name != version:  # what ran before any pointer
                self._note(history, before.name, "(before the first activation)")
        tmp = d / f".{CURRENT}.tmp"
        tmp.write_text(version + "\n")
        os.replace(tmp, d / CURRENT)
        self._note(history, version, by)

    @staticmethod
    def _note(history: Path, version: str, by: str) -> None:
        with history.open("a", encoding="utf-8") as fh:
            fh.write(f"{now_iso()} {version} {by or '-'}\n")
            fh.flush()
            os.fsync(fh.fileno())

    def pin_current(self, product: str) -> None:
        """Write the CURRENT pointer if there is none, before a new version is added: without it
        the newest version counts as current, and a version must never go live by being written.
        """
        d = self.product_dir(product)
        if (d / CURRENT).is_file():
            return
        current = self.current(product)
        if current is not None:
            self.set_current(product, current.name, by="(in use before a new version was added)")

    def history(self, product: str) -> list[str]:
        """Versions in the order they were activated (oldest first)."""
        path = self.product_dir(product) / HISTORY
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [parts[1] for parts in (ln.split() for ln in lines) if len(parts) >= 2]

    def previous(self, product: str) -> str | None:
        """The version that was current before the current one (for a roll back), or None."""
        cur = self.current_or_none(product)
        if cur is None:
            return None
        versions = set(self.versions(product))
        seen_current = False
        for v in reversed(self.history(product)):
            if v == cur.name:
                seen_current = True
                continue
            if seen_current and v in versions:
                return v
        return None

    def derive(self, product: str, base: Path, trust: Trust | None = None, **changes: Any) -> Path:
        """A new sealed version: `base`'s bank and extractor with manifest fields changed (e.g.
        the threshold). Versions never change once written; this writes the next one. With
        `trust`, `base` must be trusted: a new limit must never re-sign a model nobody trusts."""
        artifact = load_artifact(base, trust)
        self.pin_current(product)
        out = self.next_version_dir(product)
        manifest = dataclasses.replace(
            artifact.manifest,
            version=out.name,
            created_at=now_iso(),
            files={},
            **changes,
        )
        return write_derived(out, manifest, artifact, self.signer())
