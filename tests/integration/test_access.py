"""Users, roles and the audit trail on real SQLite files: the app refuses and records, PINs lock
out, `station users` and `station audit` work from the shell, an edited or deleted audit row is
found."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from station.app import Action, LoginRefused, PermissionDenied, Role, StationApp
from station.app.access import Access, hash_pin, pin_matches
from station.app.roles import PERMISSIONS, allowed
from station.cli import main
from station.config import AccessConfig, StationConfig
from station.model.artifact import load_artifact
from station.records.audit import AuditTrail
from station.records.db import Database, db_path


def app_with_model(tmp_path: Path, demo_model: Path, trust_plant_key: Any) -> StationApp:
    data = tmp_path / "data"
    shutil.copytree(demo_model, data / "models" / "demo" / "v0001")
    trust_plant_key(data)
    return StationApp(StationConfig(), data)


def add(app: StationApp, name: str, role: str, pin: str) -> None:
    app.access.add_user(app.shell_session(), name, role, pin)


def audit_actions(app: StationApp) -> list[tuple[str, str, str]]:
    return [(r.user, r.action, r.after or "") for r in app.access.audit.rows()]


def test_roles_table_grants_what_each_role_needs() -> None:
    assert set(PERMISSIONS) == set(Action)
    assert all(allowed(Role.ADMIN, a) for a in Action)
    assert allowed(Role.OPERATOR, Action.PAUSE) and allowed(Role.OPERATOR, Action.DISPOSITION_NOK)
    for a in (Action.THRESHOLD, Action.MODEL, Action.USERS, Action.REPORT, Action.VIEW_HISTORY):
        assert not allowed(Role.OPERATOR, a), a
    assert allowed(Role.TECHNICIAN, Action.THRESHOLD) and not allowed(Role.TECHNICIAN, Action.USERS)
    assert allowed(Role.QA, Action.REPORT) and allowed(Role.QA, Action.DISPOSITION_ANY)
    assert not allowed(Role.QA, Action.MODEL) and not allowed(Role.TECHNICIAN, Action.REPORT)
    assert not allowed(None, Action.PAUSE)  # nobody logged in may do nothing


def test_operator_threshold_change_is_refused_by_the_app_and_audited(
    tmp_path: Path, demo_model: Path, trust_plant_key: Any
) -> None:
    app = app_with_model(tmp_path, demo_model, trust_plant_key)
    add(app, "olga", "operator", "1111")
    add(app, "tom", "technician", "2222")
    before = load_artifact(app.store.current("demo")).manifest.threshold

    olga = app.login("olga", "1111")
    with pytest.raises(PermissionDenied, match="threshold needs technician or admin, not operator"):
        app.set_threshold(olga, 5.0, reason="too many rejects")
    with pytest.raises(PermissionDenied):  # the touchscreen's anonymous operator neither
        app.set_threshold(app.default_session(), 5.0)
    assert app.store.versions("demo") == ["v0001"]  # nothing written
    denied = [r for r in app.access.audit.rows() if r.action == "denied"]
    assert [(r.user, r.role, r.after) for r in denied] == [
        ("olga", "operator", "threshold"),
        ("operator", "operator", "threshold"),
    ]
    assert "technician or admin" in denied[0].reason and denied[0].object == "demo"

    tom = app.login("tom", "2222")
    new = app.set_threshold(tom, 5.0, reason="validated on 40 parts")
    assert (new.version, new.threshold, new.current) == ("v0002", 5.0, False)  # not live yet
    assert app.store.current("demo").name == "v0001"
    assert "tom" in new.threshold_source
    # Versions are sealed: v0001 still loads (hashes intact) with its own limit.
    assert load_artifact(app.store.product_dir("demo") / "v0001").manifest.threshold == before
    row = app.access.audit.rows()[-1]
    assert (row.user, row.action, row.object) == ("tom", "threshold", "demo/v0002")
    assert row.before == f"v0001: {before:.6g}" and row.after == "v0002: 5"
    app.activate_model(tom, "v0002")
    assert app.store.current("demo").name == "v0002"
    assert app.rollback_model(tom) == "v0001"
    assert app.store.current("demo").name == "v0001"
    assert [a for _, a, _ in audit_actions(app)][-2:] == ["model_activate", "model_rollback"]
    with pytest.raises(PermissionDenied):
        app.activate_model(olga, "v0002")
    app.close()


def test_pin_lockout_grows_and_survives_a_restart(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    db = Database(db_path(tmp_path))
    cfg = AccessConfig(max_tries=5, lockout_s=30.0)
    access = Access(db, AuditTrail(db, tmp_path), cfg, clock=lambda: now[0])
    access.add_user(access.shell_session(), "anna", Role.TECHNICIAN, "4321")
    stored = access.users_table.get("anna")
    assert (
        stored is not None
        and stored.pin_hash.startswith("scrypt$")
        and "4321" not in stored.pin_hash
    )

    def wrong(times: int) -> LoginRefused:
        for _ in range(times):
            with pytest.raises(LoginRefused) as refused:
                access.login("anna", "0000")
        return refused.value

    assert "4 tries left" in str(wrong(1))
    locked = wrong(4)  # the fifth wrong PIN
    assert locked.locked_for == 30 and "locked for 30 s" in str(locked)
    with pytest.raises(LoginRefused, match="locked for another 30 s"):
        access.login("anna", "4321")  # even the right PIN while locked
    now[0] += 31
    assert wrong(5).locked_for == 60  # the second lockout in a row lasts twice as long

    # A restart (a new Access on the same file) keeps the lock.
    db2 = Database(db_path(tmp_path))
    again = Access(db2, AuditTrail(db2, tmp_path), cfg, clock=lambda: now[0])
    with pytest.raises(LoginRefused, match="locked for another"):
        again.login("anna", "4321")
    now[0] += 61
    session = again.login("anna", "4321")
    assert (session.user, session.role) == ("anna", Role.TECHNICIAN)
    assert again.users_table.get("anna").lockouts == 0  # a good PIN resets the growth
    with pytest.raises(LoginRefused, match="wrong name or PIN"):
        again.login("nobody", "4321")
    actions = [r.action for r in again.audit.rows()]
    assert actions.count("lockout") == 2 and actions[-2:] == ["login", "login_refused"]
    assert actions.count("login_refused") == 9 + 2  # 8 wrong + 1 while locked, 1 after restart
    db.close()
    db2.close()


def test_pins_are_salted_slow_hashes() -> None:
    a, b = hash_pin("2468"), hash_pin("2468")
    assert a != b and pin_matches("2468", a) and pin_matches("2468", b)
    assert not pin_matches("2469", a) and not pin_matches("2468", "plain")
    kind, n, r, p, *_ = a.split("$")
    assert (kind, int(n), int(r), int(p)) == ("scrypt", 2**14, 8, 1)


def test_operator_pin_setting_and_no_users(tmp_path: Path) -> None:
    open_cfg = StationConfig()
    app = StationApp(open_cfg, tmp_path)
    assert not app.has_users()
    s = app.default_session()
    assert s.anonymous and s.role == Role.OPERATOR  # operator-only without users
    strict = StationConfig(access=AccessConfig(operator_pin=True))
    app2 = StationApp(strict, tmp_path)
    assert app2.default_session().role == Role.OPERATOR  # still: nobody could log in
    add(app2, "olga", "operator", "1111")
    nobody = app2.default_session()
    assert nobody.role is None
    with pytest.raises(PermissionDenied, match="log in first"):
        app2.authorize(nobody, Action.PAUSE)
    app.close()
    app2.close()


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, stdin: str = "") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))  # not a terminal: one line is the PIN
    return main(args)


def test_users_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    d = ["--data-dir", str(tmp_path)]
    assert run_cli(["users", *d, "list"], monkeypatch) == 0
    assert "no users" in capsys.readouterr().out
    assert run_cli(["users", *d, "add", "anna", "--role", "admin"], monkeypatch, "1234\n") == 0
    assert run_cli(["users", *d, "add", "qa-bob", "--role", "QA"], monkeypatch, "5678\n") == 0
    assert run_cli(["users", *d, "add", "eve", "--role", "boss"], monkeypatch, "5678\n") == 1
    assert "'boss' is not a role" in capsys.readouterr().err
    assert run_cli(["users", *d, "add", "eve", "--role", "qa"], monkeypatch, "12\n") == 1
    assert "4 to 12 digits" in capsys.readouterr().err
    assert run_cli(["users", *d, "add", "anna", "--role", "qa"], monkeypatch, "1234\n") == 1
    assert "exists already" in capsys.readouterr().err
    assert run_cli(["users", *d, "list", "--json"], monkeypatch) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(u["name"], u["role"]) for u in listed] == [("anna", "admin"), ("qa-bob", "qa")]
    assert run_cli(["users", *d, "set-pin", "qa-bob"], monkeypatch, "9999\n") == 0
    app = StationApp(StationConfig(), tmp_path)
    assert app.login("qa-bob", "9999").role == Role.QA
    with pytest.raises(LoginRefused):
        app.login("qa-bob", "5678")
    assert run_cli(["users", *d, "remove", "anna"], monkeypatch) == 1  # the only admin
    assert "only admin" in capsys.readouterr().err
    assert run_cli(["users", *d, "remove", "qa-bob"], monkeypatch) == 0
    actions = [r.action for r in app.access.audit.rows() if r.via == "cli"]
    assert actions == ["user_add", "user_add", "user_set_pin", "user_remove"]
    app.close()


def _audited(data: Path) -> None:
    app = StationApp(StationConfig(), data)
    admin = app.shell_session()
    for i, role in enumerate(("operator", "technician", "qa")):
        app.access.add_user(admin, f"user{i}", role, "1234")
    app.login("user0", "1234")
    with pytest.raises(LoginRefused):
        app.login("user1", "0000")
    app.close()  # 6 rows: 3 user_add, login, login_refused... and nothing else


def _tamper(data: Path, sql: str) -> None:
    with sqlite3.connect(db_path(data)) as conn:  # as someone with the file would
        conn.execute("DROP TRIGGER audit_no_update")
        conn.execute("DROP TRIGGER audit_no_delete")
        conn.execute(sql)


def test_audit_verify_finds_edited_and_deleted_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean = tmp_path / "clean"
    _audited(clean)
    assert main(["audit", "--data-dir", str(clean), "--verify"]) == 0
    assert "intact: 5 rows" in capsys.readouterr().out
    with sqlite3.connect(db_path(clean)) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE audit SET user = 'x' WHERE id = 2")  # the station's own guard

    cases = {
        "edited": ("UPDATE audit SET after = 'admin' WHERE id = 2", "audit row 2 was edited"),
        "deleted": ("DELETE FROM audit WHERE id = 3", "audit row 3 deleted: the ids jump"),
        "tail": ("DELETE FROM audit WHERE id >= 4", "audit rows 4-5 deleted: audit.head"),
    }
    for name, (sql, message) in cases.items():
        data = tmp_path / name
        shutil.copytree(clean, data)
        _tamper(data, sql)
        assert main(["audit", "--data-dir", str(data), "--verify"]) == 3, name
        assert message in capsys.readouterr().err, name

    # Edit a row and rewrite the whole chain after it: only the head file still tells.
    data = tmp_path / "rechained"
    shutil.copytree(clean, data)
    _tamper(data, "UPDATE audit SET role = 'admin' WHERE id = 4")
    db = Database(db_path(data))
    from station.records.audit import GENESIS, row_hash

    prev = GENESIS
    for r in AuditTrail(db, data).rows():
        h = row_hash(prev, r)
        db.conn.execute("UPDATE audit SET hash = ? WHERE id = ?", (h, r.id))
        prev = h
    db.close()
    assert main(["audit", "--data-dir", str(data), "--verify"]) == 3
    assert "differs from the one audit.head names" in capsys.readouterr().err

    assert main(["audit", "--data-dir", str(clean), "--csv", str(tmp_path / "a.csv")]) == 0
    lines = (tmp_path / "a.csv").read_text().splitlines()
    assert lines[0].startswith("id,time,user,role,action") and len(lines) == 6


def test_wrong_pins_at_once_are_all_counted(tmp_path: Path) -> None:
    """Four wrong PINs from four threads at once (the touchscreen and, later, HTTP): every one
    counts, so the fifth locks the user out; none is lost between a read and a write."""
    import threading

    app = StationApp(StationConfig(), tmp_path)
    add(app, "anna", "technician", "4321")
    go = threading.Barrier(4)
    refusals: list[str] = []

    def attempt() -> None:
        go.wait()
        try:
            app.login("anna", "0000")
        except LoginRefused as exc:
            refusals.append(str(exc))

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(refusals) == 4
    assert app.access.users_table.get("anna").failed == 4
    with pytest.raises(LoginRefused, match="locked for 30 s"):
        app.login("anna", "0000")
    app.close()


def test_a_removed_users_session_can_do_nothing(tmp_path: Path) -> None:
    app = StationApp(StationConfig(), tmp_path)
    add(app, "tom", "technician", "2222")
    tom = app.login("tom", "2222")
    app.authorize(tom, Action.THRESHOLD)  # allowed while tom exists
    app.access.set_pin(app.shell_session(), "tom", "3333")
    with pytest.raises(PermissionDenied, match="logged out: the user was removed or their PIN"):
        app.authorize(tom, Action.PAUSE)
    tom2 = app.login("tom", "3333")
    app.access.remove_user(app.shell_session(), "tom")
    with pytest.raises(PermissionDenied, match="logged out"):
        app.authorize(tom2, Action.PAUSE)
    last = app.access.audit.rows()[-1]
    assert (last.user, last.action) == ("tom", "denied")
    app.close()


def test_the_records_database_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    app = StationApp(StationConfig(), tmp_path)
    add(app, "anna", "admin", "1234")  # PIN hashes are in there
    assert (app.db_file.stat().st_mode & 0o777) == 0o600
    app.close()
