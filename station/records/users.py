"""The `users` table: names, roles, PIN hashes and the lockout state, typed rows in and out.

Hashing and the lockout policy live in the app layer (`station.app.access`); this module only
stores what it is given, so that a restart keeps a locked-out user locked out.
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

    def add(self, row: UserRow) -> None:
        """Insert a new user; StorageError when the name exists."""
        self._write(
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
            f"user '{row.name}' not added",
        )

    def update(self, name: str, **values: Any) -> None:
        """Change columns of one user (pin_hash, role, failed, locked_until, lockouts)."""
        allowed = {"role", "pin_hash", "failed", "locked_until", "lockouts"}
        bad = set(values) - allowed
        if bad:
            raise ValueError(f"not user columns: {', '.join(sorted(bad))}")
        sets = ", ".join(f"{k} = ?" for k in values)
        self._write(
            f"UPDATE users SET {sets} WHERE name = ?",
            (*values.values(), name),
            f"user '{name}' not changed",
            expect_one=True,
        )

    def remove(self, name: str) -> None:
        """Delete one user."""
        self._write("DELETE FROM users WHERE name = ?", (name,), f"user '{name}' not removed", True)

    def _write(
        self, sql: str, params: tuple[Any, ...], what: str, expect_one: bool = False
    ) -> None:
        try:
            with self.db.transaction() as cur:
                cur.execute(sql, params)
                if expect_one and cur.rowcount != 1:
                    raise StorageError(f"{what}: no such user")
        except sqlite3.IntegrityError as exc:
            raise StorageError(f"{what}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StorageError(f"{self.db.path}: {what}: {exc}") from exc
