"""Signed models: a station runs only model versions signed by a key it trusts.

The manifest already holds every file's size and SHA-256 and a hash of itself, but anyone who
can edit a model folder can recompute those. A signature cannot be recomputed without the key:

    <version>/manifest.sig    {"algorithm": "ed25519", "key": "<key id>", "signature": "<base64>"}

over the exact bytes of `manifest.json`. Keys:

- the station key, `<data>/keys/station_ed25519.pem` (private, mode 0600), made on first use;
  its public half goes into the trust folder then, so a station trusts what it built itself;
- or a plant key (`model.signing_key`: a PEM file), for models built on one PC and run on many;
  its public half is copied into each station's trust folder by the person who deploys it.

The trust folder (`model.trust_dir`, default `<data>/trust`) holds one `*.pub` PEM file per
trusted key; a key's id is the start of the SHA-256 of its raw public bytes. Keep the folder
writable only by the admin for the protection to mean anything (the installers' data directory
belongs to the station's user).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from station.core.errors import ModelError
from station.core.files import fsync_dir

SIGNATURE = "manifest.sig"
STATION_KEY = Path("keys") / "station_ed25519.pem"
TRUST_DIR = "trust"
ALGORITHM = "ed25519"


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class Signer:
    """A private key that signs the manifests of new model versions."""

    key: Ed25519PrivateKey
    source: Path

    @property
    def key_id(self) -> str:
        return key_id(self.key.public_key())

    def signature(self, manifest_bytes: bytes) -> bytes:
        """The signature file's content for a manifest."""
        sig = base64.b64encode(self.key.sign(manifest_bytes)).decode()
        record = {"algorithm": ALGORITHM, "key": self.key_id, "signature": sig}
        return (json.dumps(record, indent=2) + "\n").encode()

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except FileNotFoundError:
            raise ModelError(f"{path}: signing key not found") from None
        except (ValueError, TypeError) as exc:
            raise ModelError(f"{path}: not an unencrypted PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ModelError(f"{path}: not an Ed25519 key ({type(key).__name__})")
        return cls(key, Path(path))


def station_signer(data_dir: Path, signing_key: str = "", trust_dir: str = "") -> Signer:
    """The plant key when one is configured, else this station's own key (made on first use,
    its public half put into the trust folder)."""
    if signing_key:
        return Signer.from_file(Path(signing_key).expanduser())
    path = Path(data_dir) / STATION_KEY
    trust = trust_folder(data_dir, trust_dir)
    try:
        if not path.is_file():
            _make_station_key(path, trust)
        signer = Signer.from_file(path)
        # Every time, not only when the key is made: a crash between the two, or a trust
        # folder that was not writable then, must not leave the station distrusting itself.
        pub = signer.key.public_key()
        own = trust / f"station-{key_id(pub)}.pub"
        if not own.is_file() and os.access(trust if trust.is_dir() else trust.parent, os.W_OK):
            trust.mkdir(parents=True, exist_ok=True)
            own.write_bytes(public_pem(pub))
    except OSError as exc:
        raise ModelError(
            f"{path}: the station's signing key cannot be made or read: {exc}"
        ) from None
    return signer


def _make_station_key(path: Path, trust: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # Two first starts at once: the first link wins, the other uses that key.
        os.link(tmp, path)
    except FileExistsError:
        return
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def trust_folder(data_dir: Path, trust_dir: str = "") -> Path:
    return Path(trust_dir).expanduser() if trust_dir else Path(data_dir) / TRUST_DIR


@dataclass(frozen=True)
class Trust:
    """The keys whose models this station runs, and whether unsigned models are let through."""

    folder: Path
    keys: dict[str, Ed25519PublicKey]
    allow_unsigned: bool = False

    @classmethod
    def load(cls, folder: Path, *, allow_unsigned: bool = False) -> Trust:
        keys: dict[str, Ed25519PublicKey] = {}
        if Path(folder).is_dir():
            for f in sorted(Path(folder).glob("*.pub")):
                try:
                    pub = serialization.load_pem_public_key(f.read_bytes())
                except ValueError as exc:
                    raise ModelError(f"{f}: not a PEM public key ({exc})") from None
                if not isinstance(pub, Ed25519PublicKey):
                    raise ModelError(f"{f}: not an Ed25519 public key")
                keys[key_id(pub)] = pub
        return cls(Path(folder), keys, allow_unsigned)

    def check(self, model_dir: Path, manifest_bytes: bytes) -> str | None:
        """The id of the trusted key that signed the model; None for an unsigned model where
        they are allowed. ModelError naming what is wrong otherwise."""
        sig_path = Path(model_dir) / SIGNATURE
        if not sig_path.is_file():
            if self.allow_unsigned:
                return None
            raise ModelError(
                f"{model_dir}: model is not signed ({SIGNATURE} missing); this station runs "
                "only models signed by a key in its trust folder "
                f"({self.folder}). Sign it here with `station models sign`, or an admin sets "
                "model.allow_unsigned = true"
            )
        return self.verify(
            sig_path.read_bytes(),
            manifest_bytes,
            record_name=str(sig_path),
            what=f"{model_dir}: model",
            changed="does not match the manifest: the model was changed after it was signed",
        )

    def verify(
        self, record_bytes: bytes, data: bytes, *, record_name: str, what: str, changed: str
    ) -> str:
        """The trusted key id that signed `data` in a signature record; ModelError naming
        `what` (damaged record, unknown key, or `changed` when the signature does not match)."""
        try:
            record = json.loads(record_bytes)
            kid, sig = str(record["key"]), base64.b64decode(record["signature"], validate=True)
            algorithm = record.get("algorithm")
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{record_name}: signature file is damaged ({exc})") from None
        if algorithm != ALGORITHM:
            raise ModelError(f"{record_name}: signature algorithm {algorithm!r} is not {ALGORITHM}")
        public = self.keys.get(kid)
        if public is None:
            known = ", ".join(sorted(self.keys)) or "none"
            raise ModelError(
                f"{what} is signed by key {kid}, which is not in the trust folder "
                f"{self.folder} (trusted: {known})"
            )
        try:
            public.verify(sig, data)
        except InvalidSignature:
            raise ModelError(f"{what}: signature by key {kid} {changed}") from None
        return kid


@dataclass(frozen=True)
class EngineSealer:
    """Seals engines this station builds with its key; accepts seals by a trusted key."""

    signer: Signer
    trust: Trust

    def seal(self, data: bytes) -> bytes:
        """The seal record for `data`."""
        return self.signer.signature(data)

    def check(self, data: bytes, record: bytes, what: str) -> None:
        """ModelError unless `record` is a trusted key's seal of `data`."""
        self.trust.verify(
            record,
            data,
            record_name=what,
            what=f"{what}: engine",
            changed="does not match the engine: it was changed after it was built",
        )
