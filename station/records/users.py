"""The `users` table: names, roles, PIN hashes and the lockout state, typed rows in and out.

Hashing and the lockout policy live in the app layer (`station.app.access`); this module only
stores what it is given, so that a restart keeps a locked-out user locked out. Writes take the
caller's cursor: a change and its audit row commit together.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from station.core.errors import StorageError
from station.records.db import Database

COLUMNS = "name, role, pin_hash, created, failed, locked_until, lockouts"


@dataclass(frozen=True)
class UserRow:
    """One user as stored."""

    name: str
    role: str
    pin_hash: str
    created: float
    failed: int = 0  # wrong PINs since the last good one or the last lockout
    locked_until: float = 0.0  # epoch seconds; 0 = not locked
    lockouts: int = 0  # lockouts since the last good PIN (each one longer)


class UserTable:
    """Reads and writes `users` in a records database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def all(self) -> list[UserRow]:
        """Every user, by name."""
        return [UserRow(*r) for r in self.db.fetch(f"SELECT {COLUMNS} FROM users ORDER BY name")]

    def get(self, name: str) -> UserRow | None:
        """One user by name (case-insensitive), or None."""
        rows = self.db.fetch(f"SELECT {COLUMNS} FROM users WHERE name = ?", [name])
        return UserRow(*rows[0]) if rows else None

    def count(self) -> int:
        """How many users exist."""
        return int(self.db.fetch("SELECT count(*) FROM users")[0][0])

    def read(self, cur: sqlite3.Cursor, name: str) -> UserRow | None:
        """One user, read inside the caller's transaction."""
        r = cur.execute(f"SELECT {COLUMNS} FROM users WHERE name = ?", (name,)).fetchone()
        return UserRow(*r) if r else None

    @staticmethod
    def add(cur: sqlite3.Cursor, row: UserRow) -> None:
        """Insert a new user inside the caller's transaction (IntegrityError when it exists)."""
        cur.execute(
            f"INSERT INTO users ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                row.name,
                row.role,
                row.pin_hash,
                row.created,
                row.failed,
                row.locked_until,
                row.lockouts,
            ),
        )

    @staticmethod
    def update(cur: sqlite3.Cursor, name: str, **values: Any) -> None:
        """Change columns of one user (pin_hash, role, failed, locked_until, lockouts) inside the
        caller's transaction; StorageError when there is no such user."""
        allowed = {"role", "pin_hash", "failed", "locked_until", "lockouts"}
        bad = set(values) - allowed
        if bad:
            raise ValueError(f"not user columns: {', '.join(sorted(bad))}")
        sets = ", ".join(f"{k} = ?" for k in values)
        cur.execute(f"UPDATE users SET {sets} WHERE name = ?", (*values.values(), name))
        if cur.rowcount != 1:
            raise StorageError(f"user '{name}' not changed: no such user")

    @staticmethod
    def remove(cur: sqlite3.Cursor, name: str) -> None:
        """Delete one user inside the caller's transaction."""
        cur.execute("DELETE FROM users WHERE name = ?", (name,))
        if cur.rowcount != 1:
            raise StorageError(f"user '{name}' not removed: no such user")
