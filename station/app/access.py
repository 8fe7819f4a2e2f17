"""Users, PIN logins with lockout, sessions, and the check-then-audit of every action.

PINs are stored as salted scrypt hashes (`hashlib.scrypt`, n=2^14, r=8: about 50 ms and 16 MB a
try). On the touchscreen the lockout stops guessing after `max_tries`; a lockout lasts
`lockout_s`, doubling with each further one (at most an hour), and is stored with the user, so a
restart does not lift it. Offline, whoever can read the database finds a 4-digit PIN within
minutes whatever the hash, so the database file is readable by its owner only (0600) and the
minimum length is a setting (`access.min_pin_digits`).

Every change to a user and its audit row commit in one transaction. A login's check and its
lockout bookkeeping are one transaction too (after the slow hash), so two attempts at once cannot
both count as the first wrong one. A session of a user who was removed, or whose PIN or role
changed, is refused at its next action.

The touchscreen's default session is the operator, without a PIN, unless `access.operator_pin`
is set and users exist; then nobody is logged in until an operator enters a PIN. With no users
at all the station runs operator-only. The command line acts as the account that runs it: whoever
can run `station` on the line PC can also edit its files, so the shell is trusted as admin, and
every command's changes are audited under that account's name with `via = cli`.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import math
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from station.app.roles import Action, PermissionDenied, Role, allowed, parse_role, roles_for
from station.config import AccessConfig
from station.core.errors import StationError, StorageError
from station.records.audit import AuditRow, AuditTrail
from station.records.db import Database
from station.records.users import UserRow, UserTable

__all__ = ["Access", "LoginRefused", "Session", "UserInfo", "hash_pin", "pin_matches"]

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,31}$")
MAX_LOCKOUT_S = 3600.0
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
ANONYMOUS_OPERATOR = "operator"


class LoginRefused(StationError):
    """Wrong name or PIN, or a locked user; `locked_for` says how long, in seconds."""

    def __init__(self, message: str, locked_for: float = 0.0) -> None:
        super().__init__(message)
        self.locked_for = locked_for


@dataclass(frozen=True)
class Session:
    """Who is acting: a logged-in user, the anonymous operator, the shell, or nobody."""

    user: str
    role: Role | None  # None: nobody is logged in (operators need a PIN)
    via: str  # "touchscreen", "cli", "http"
    token: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)
    since: float = field(default_factory=time.time)
    anonymous: bool = False  # the touchscreen's default user, not a person who logged in
    stamp: str = field(default="", repr=False)  # the user's PIN hash at login ("" = no user)

    @property
    def label(self) -> str:
        """How the screen names the session: 'anna (technician)', 'Operator', 'Nobody'."""
        if self.role is None:
            return "Nobody logged in"
        if self.anonymous:
            return "Operator"
        return f"{self.user} ({self.role.value})"


@dataclass(frozen=True)
class UserInfo:
    """A user as listed (no PIN hash)."""

    name: str
    role: Role
    created: float
    locked_until: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role.value,
            "created": self.created,
            "locked_until": self.locked_until or None,
        }


def hash_pin(pin: str) -> str:
    """'scrypt$n$r$p$salt$hash' of a PIN, with a fresh random salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(pin.encode(), salt=salt, dklen=32, **_SCRYPT)
    return "scrypt${n}${r}${p}".format(**_SCRYPT) + f"${salt.hex()}${digest.hex()}"


def pin_matches(pin: str, stored: str) -> bool:
    """Whether `pin` is the PIN `stored` was made from (constant-time compare)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(
            pin.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


class Access:
    """The station's users and sessions; checks every action against the role table and writes
    the audit trail."""

    def __init__(
        self,
        db: Database,
        audit: AuditTrail,
        cfg: AccessConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg or AccessConfig()
        self.db = db
        self.users_table = UserTable(db)
        self.audit = audit
        self.clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        # A PIN for names that do not exist: a wrong name costs the same time as a wrong PIN.
        self._dummy = hash_pin("0" * self.cfg.min_pin_digits)

    # -- sessions --------------------------------------------------------------------------------
    def _register(self, session: Session) -> Session:
        with self._lock:
            self._sessions[session.token] = session
        return session

    def has_users(self) -> bool:
        """Whether any user exists (without users the station runs operator-only)."""
        return self.users_table.count() > 0

    def default_session(self, via: str = "touchscreen") -> Session:
        """The touchscreen's session when nobody has logged in."""
        if self.cfg.operator_pin and self.has_users():
            return self._register(Session("nobody", None, via, anonymous=True))
        return self._register(Session(ANONYMOUS_OPERATOR, Role.OPERATOR, via, anonymous=True))

    def shell_session(self) -> Session:
        """The command line's session: the account running it, trusted as admin (see above)."""
        try:
            user = getpass.getuser()
        except Exception:  # no name for this uid (a container): still audited, as 'shell'
            user = "shell"
        return self._register(Session(user, Role.ADMIN, "cli"))

    def plc_session(self, address: str) -> Session:
        """The line PLC's session: named by its address, a technician (it may switch products,
        never users or settings); every switch it asks for is audited under this name."""
        return self._register(Session(f"plc@{address}", Role.TECHNICIAN, "plc"))

    def login(self, name: str, pin: str, *, via: str = "touchscreen") -> Session:
        """Check a PIN; a session on success, else LoginRefused (audited either way)."""
        row = self.users_table.get(name.strip())
        if row is None:
            pin_matches(pin, self._dummy)
            self._note(name, "", "login_refused", reason="unknown user", via=via)
            raise LoginRefused("wrong name or PIN")
        if row.locked_until > self.clock():
            self._refuse_locked(row, row.locked_until - self.clock(), via)
        good = pin_matches(pin, row.pin_hash)  # slow: outside the write transaction
        refused: LoginRefused | None = None
        with self.writing(f"login of {row.name}") as (cur, rows):
            fresh = self.users_table.read(cur, row.name)
            now = self.clock()
            if fresh is None or fresh.pin_hash != row.pin_hash:
                refused = LoginRefused("wrong name or PIN")  # removed or changed meanwhile
            elif fresh.locked_until > now:  # another attempt locked it meanwhile
                left = fresh.locked_until - now
                rows.append(self._row(cur, fresh.name, fresh.role, "login_refused",
                                      reason="locked", via=via))  # fmt: skip
                refused = _locked(fresh.name, left)
            elif good:
                if fresh.failed or fresh.lockouts or fresh.locked_until:
                    self.users_table.update(cur, fresh.name, failed=0, locked_until=0.0, lockouts=0)
                rows.append(self._row(cur, fresh.name, fresh.role, "login", via=via))
            else:
                failed = fresh.failed + 1
                if failed >= self.cfg.max_tries:
                    seconds = min(MAX_LOCKOUT_S, self.cfg.lockout_s * 2**fresh.lockouts)
                    self.users_table.update(
                        cur, fresh.name, failed=0, locked_until=now + seconds,
                        lockouts=fresh.lockouts + 1,
                    )  # fmt: skip
                    rows.append(
                        self._row(cur, fresh.name, fresh.role, "lockout",
                                  after=f"locked {seconds:.0f} s",
                                  reason=f"{failed} wrong PINs", via=via)
                    )  # fmt: skip
                    refused = LoginRefused(
                        f"wrong PIN: {fresh.name} is locked for {_duration(seconds)}", seconds
                    )
                else:
                    self.users_table.update(cur, fresh.name, failed=failed)
                    rows.append(self._row(cur, fresh.name, fresh.role, "login_refused",
                                          reason="wrong PIN", via=via))  # fmt: skip
                    left = self.cfg.max_tries - failed
                    refused = LoginRefused(
                        f"wrong PIN ({left} {'try' if left == 1 else 'tries'} left)"
                    )
        if refused is not None:
            raise refused
        return self._register(Session(row.name, Role(row.role), via, stamp=row.pin_hash))

    def _refuse_locked(self, row: UserRow, left: float, via: str) -> None:
        self._note(row.name, row.role, "login_refused", reason="locked", via=via)
        raise _locked(row.name, left)

    def logout(self, session: Session, *, reason: str = "") -> None:
        """End a session (audited when a person had logged in)."""
        with self._lock:
            known = self._sessions.pop(session.token, None)
        if known is not None and not session.anonymous and session.role is not None:
            self._note(session.user, session.role.value, "logout", reason=reason, via=session.via)

    # -- the check every action goes through ---------------------------------------------------
    def authorize(self, session: Session, action: Action, object: str = "") -> None:
        """Raise PermissionDenied (and audit the refusal) unless the session may do `action`."""
        with self._lock:
            known = self._sessions.get(session.token) == session
        stale = known and self._stale(session)
        if stale:
            with self._lock:
                self._sessions.pop(session.token, None)
        if known and not stale and allowed(session.role, action):
            return
        if stale:
            who = f"{session.user} (logged out: the user was removed or their PIN or role changed)"
        elif known:
            who = session.label
        else:
            who = f"{session.user} (session not issued by this station)"
        why = (
            "log in first"
            if session.role is None
            else f"{action.value} needs {roles_for(action)}, not {session.role.value}"
        )
        role = session.role.value if session.role is not None else ""
        self._note(
            session.user, role, "denied", object=object, after=action.value, reason=why,
            via=session.via,
        )  # fmt: skip
        raise PermissionDenied(f"{who} may not do this: {why}", action)

    def _stale(self, session: Session) -> bool:
        """A logged-in user's session no longer matches the user (removed, new PIN or role)."""
        if not session.stamp:
            return False  # the anonymous operator, nobody, the shell
        row = self.users_table.get(session.user)
        return (
            row is None
            or row.pin_hash != session.stamp
            or row.role != getattr(session.role, "value", None)
        )

    def record(
        self,
        session: Session,
        action: str,
        *,
        object: str = "",
        before: Any = None,
        after: Any = None,
        reason: str = "",
    ) -> AuditRow:
        """Write one audit row for an action the session took."""
        role = session.role.value if session.role is not None else ""
        return self.audit.append(
            user=session.user,
            role=role,
            action=action,
            object=object,
            before=before,
            after=after,
            reason=reason,
            via=session.via,
        )

    def _note(self, user: str, role: str, action: str, **kw: Any) -> AuditRow:
        return self.audit.append(user=user, role=str(role), action=action, **kw)

    def _row(self, cur: sqlite3.Cursor, user: str, role: str, action: str, **kw: Any) -> AuditRow:
        return self.audit.append_in(cur, user=user, role=str(role), action=action, **kw)

    @contextmanager
    def writing(self, what: str) -> Iterator[tuple[sqlite3.Cursor, list[AuditRow]]]:
        """One transaction for a change and its audit rows (append them to the list, written
        with `audit_in`); the head file follows the commit."""
        rows: list[AuditRow] = []
        try:
            with self.db.transaction() as cur:
                yield cur, rows
        except sqlite3.IntegrityError as exc:
            raise StationError(f"{what}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StorageError(f"{self.db.path}: {what} not saved: {exc}") from exc
        for r in rows:
            self.audit.advance_head(r)

    def audit_in(self, cur: sqlite3.Cursor, session: Session, action: str, **kw: Any) -> AuditRow:
        """The session's audit row for a change made in the same transaction (see `writing`)."""
        role = session.role.value if session.role is not None else ""
        return self.audit.append_in(
            cur, user=session.user, role=role, action=action, via=session.via, **kw
        )

    # -- users -----------------------------------------------------------------------------------
    def users(self, session: Session) -> list[UserInfo]:
        """Every user (admin)."""
        self.authorize(session, Action.USERS)
        return self._infos()

    def login_names(self) -> list[str]:
        """The names the touchscreen offers to log in as (no roles, no hashes)."""
        return [u.name for u in self.users_table.all()]

    def _infos(self) -> list[UserInfo]:
        return [
            UserInfo(u.name, Role(u.role), u.created, u.locked_until)
            for u in self.users_table.all()
        ]

    def add_user(self, session: Session, name: str, role: Role | str, pin: str) -> UserInfo:
        """Create a user with a PIN (admin; the first admin may be made from the shell)."""
        self.authorize(session, Action.USERS, name)
        name = self._check_name(name)
        role = parse_role(role) if isinstance(role, str) else role
        self._check_pin(pin)
        if self.users_table.get(name) is not None:
            raise StationError(f"user '{name}' exists already (set-pin changes the PIN)")
        row = UserRow(name, role.value, hash_pin(pin), self.clock())
        with self.writing(f"user '{name}' not added") as (cur, rows):
            self.users_table.add(cur, row)
            rows.append(self.audit_in(cur, session, "user_add", object=name, after=role.value))
        return UserInfo(name, role, row.created)

    def remove_user(self, session: Session, name: str) -> None:
        """Delete a user (admin); the last admin cannot be removed while others remain."""
        self.authorize(session, Action.USERS, name)
        row = self.users_table.get(name)
        if row is None:
            raise StationError(f"no user named '{name}'")
        admins = [u for u in self.users_table.all() if u.role == Role.ADMIN.value]
        if row.role == Role.ADMIN.value and len(admins) == 1 and self.users_table.count() > 1:
            raise StationError(
                f"'{row.name}' is the only admin: add another admin before removing this one"
            )
        with self.writing(f"user '{row.name}' not removed") as (cur, rows):
            self.users_table.remove(cur, row.name)
            rows.append(
                self.audit_in(cur, session, "user_remove", object=row.name, before=row.role)
            )

    def set_pin(self, session: Session, name: str, pin: str) -> None:
        """Give a user a new PIN (admin), which also lifts a lockout."""
        self.authorize(session, Action.USERS, name)
        row = self.users_table.get(name)
        if row is None:
            raise StationError(f"no user named '{name}'")
        self._check_pin(pin)
        new_hash = hash_pin(pin)
        with self.writing(f"PIN of '{row.name}' not changed") as (cur, rows):
            self.users_table.update(
                cur, row.name, pin_hash=new_hash, failed=0, locked_until=0.0, lockouts=0
            )
            rows.append(self.audit_in(cur, session, "user_set_pin", object=row.name))

    def _check_name(self, name: str) -> str:
        name = name.strip()
        if not NAME.match(name):
            raise StationError(
                f"'{name}' is not a user name: a letter first, then letters, digits, '.', '_' or "
                "'-', at most 32"
            )
        return name

    def _check_pin(self, pin: str) -> None:
        lo = self.cfg.min_pin_digits
        if not pin.isdigit() or not lo <= len(pin) <= 12 or not pin.isascii():
            raise StationError(f"a PIN is {lo} to 12 digits (0-9), nothing else")


def _duration(seconds: float) -> str:
    s = math.ceil(seconds)
    return f"{s} s" if s < 120 else f"{math.ceil(s / 60)} min"


def _locked(name: str, left: float) -> LoginRefused:
    return LoginRefused(
        f"{name} is locked for another {_duration(left)} after too many wrong PINs", left
    )
