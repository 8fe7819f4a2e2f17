"""The shell around the pages, on a real station with real users (SQLite): navigation sized for
gloves, the PIN keypad, a page that needs a role, the idle logout, and a screenshot of every page
and of the keypad in both themes and both sizes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

from PySide6.QtCore import Qt
from screens import SIZES, Shooter, discard, settle, wait_until  # tests/gui/screens.py

from station.app.roles import Role
from station.core.result import StationState

pytestmark = pytest.mark.slow

USERS = (("ada", "admin", "1234"), ("tom", "technician", "2222"), ("quinn", "qa", "3333"))


@pytest.fixture(scope="module")
def shell(qapp: Any, make_data_dir: Any, gui_config: Any) -> Iterator[tuple[Any, Any]]:
    """(app, window) on the replay camera, with an admin, a technician and a QA user."""
    from station.app import StationApp
    from station.gui.main_window import MainWindow

    data = make_data_dir()
    cfg = gui_config(data)
    app = StationApp(cfg, data)
    for name, role, pin in USERS:
        app.access.add_user(app.shell_session(), name, role, pin)
    app.start()
    window = MainWindow(app, cfg)
    window.resize(*SIZES[0])
    window.show()
    wait_until(lambda: app.status().state == StationState.RUNNING, what="the line running")
    yield app, window
    window._can_close = True
    app.stop(30.0)
    discard(window)
    app.close()


def login(window: Any, qtbot: Any, name: str, pin: str) -> None:
    panel = window.login_panel
    assert window.login_sheet.isVisible()
    qtbot.mouseClick(panel.name_buttons[name], Qt.MouseButton.LeftButton)
    for d in pin:
        qtbot.mouseClick(panel.keypad.keys[d], Qt.MouseButton.LeftButton)
    qtbot.mouseClick(panel.keypad.keys["OK"], Qt.MouseButton.LeftButton)
    settle()


def actions(app: Any) -> list[tuple[str, str]]:
    return [(r.user, r.action) for r in app.access.audit.rows()]


def test_navigation_is_sized_for_gloves(shell: Any) -> None:
    _, window = shell
    for size in SIZES:
        window.resize(*size)
        settle()
        buttons = [*window.nav_buttons.values(), window.user_button]
        assert all(min(b.width(), b.height()) >= 80 for b in buttons), [
            (b.text(), b.width(), b.height()) for b in buttons
        ]
    window.resize(*SIZES[0])
    settle()
    assert window.stack.currentWidget() is window.operator  # home


def test_setup_asks_for_a_pin_and_opens_for_a_technician(
    shell: Any, qtbot: Any, shoot: Shooter
) -> None:
    app, window = shell
    qtbot.mouseClick(window.nav_buttons["setup"], Qt.MouseButton.LeftButton)
    settle()
    assert window.login_sheet.isVisible() and window.stack.currentWidget() is window.operator
    assert "Setup needs a login" in window.login_panel.message.text()
    assert set(window.login_panel.name_buttons) == {"ada", "tom", "quinn"}
    keys = window.login_panel.keypad.keys
    assert all(min(k.width(), k.height()) >= 80 for k in keys.values())
    window.login_panel.choose("tom")
    window.login_panel.type_pin("22")
    shoot(window, "20-keypad")
    window.login_panel.pin = ""
    login(window, qtbot, "tom", "9999")
    assert window.login_sheet.isVisible()
    assert window.login_panel.message.text() == "wrong PIN (4 tries left)"
    login(window, qtbot, "tom", "2222")
    assert not window.login_sheet.isVisible()
    assert window.stack.currentWidget() is window.pages["setup"]  # where the tap was going
    assert window.session.user == "tom" and window.session.role == Role.TECHNICIAN
    assert "tom" in window.user_button.text() and "Log out" in window.user_button.text()
    assert ("tom", "login_refused") in actions(app) and ("tom", "login") in actions(app)
    shoot(window, "21-setup")


def test_a_page_the_role_may_not_open_is_refused_and_audited(shell: Any, qtbot: Any) -> None:
    app, window = shell
    assert window.session.user == "tom"
    qtbot.mouseClick(window.nav_buttons["settings"], Qt.MouseButton.LeftButton)
    settle()
    assert window.stack.currentWidget() is window.pages["setup"]  # stayed
    assert (
        window.nav_buttons["setup"].isChecked() and not window.nav_buttons["settings"].isChecked()
    )
    assert "settings needs admin, not technician" in window.notice_bar.label.text()
    last = app.access.audit.rows()[-1]
    assert (last.user, last.action, last.after, last.object) == (
        "tom",
        "denied",
        "settings",
        "settings",
    )
    qtbot.mouseClick(window.nav_buttons["history"], Qt.MouseButton.LeftButton)
    settle()
    assert window.stack.currentWidget() is window.pages["history"]


def test_idle_logout_returns_to_the_operator_at_home(shell: Any, shoot: Shooter) -> None:
    app, window = shell
    shoot(window, "22-history")
    window.check_idle(now=time.monotonic() + 1.0)  # not idle yet: nothing happens
    assert window.session.user == "tom"
    window.check_idle(now=time.monotonic() + window.cfg.access.idle_logout_s + 1.0)
    assert window.session.anonymous and window.session.role == Role.OPERATOR
    assert window.stack.currentWidget() is window.operator
    last = app.access.audit.rows()[-1]
    assert (last.user, last.action) == ("tom", "logout") and last.reason.startswith("idle")


def test_settings_lists_users_and_checks_the_audit_trail(
    shell: Any, qtbot: Any, shoot: Shooter
) -> None:
    app, window = shell
    qtbot.mouseClick(window.nav_buttons["settings"], Qt.MouseButton.LeftButton)
    settle()
    login(window, qtbot, "ada", "1234")
    page = window.pages["settings"]
    assert window.stack.currentWidget() is page
    assert page.users_label.text() == "3 users:"
    cells = [c.text() for c in page._user_cells]
    assert cells == ["ada", "admin", "", "quinn", "qa", "", "tom", "technician", ""]
    qtbot.mouseClick(page.verify_button, Qt.MouseButton.LeftButton)
    assert page.audit_label.text().startswith("Audit trail intact:")
    shoot(window, "23-settings")
    qtbot.mouseClick(window.user_button, Qt.MouseButton.LeftButton)  # log out
    settle()
    assert window.session.anonymous and window.stack.currentWidget() is window.operator
    assert actions(app)[-1] == ("ada", "logout")
    shoot(window, "24-operator-home")


def test_pause_needs_a_pin_when_operators_log_in(
    qapp: Any, make_data_dir: Any, gui_config: Any, qtbot: Any
) -> None:
    """`access.operator_pin`: nobody is logged in at first, so Pause opens the keypad, and the
    pause happens (audited, as that operator) right after the login."""
    import dataclasses

    from station.app import StationApp
    from station.config import AccessConfig
    from station.gui.main_window import MainWindow

    data = make_data_dir()
    cfg = dataclasses.replace(gui_config(data), access=AccessConfig(operator_pin=True))
    app = StationApp(cfg, data)
    app.access.add_user(app.shell_session(), "olga", "operator", "1111")
    app.start()
    window = MainWindow(app, cfg)
    window.resize(*SIZES[0])
    window.show()
    try:
        wait_until(lambda: app.status().state == StationState.RUNNING, what="the line running")
        assert window.session.role is None and "Nobody" in window.user_button.text()
        qtbot.mouseClick(window.operator.pause_button, Qt.MouseButton.LeftButton)
        settle()
        assert window.login_sheet.isVisible() and app.status().state == StationState.RUNNING
        assert "log in first" in window.login_panel.message.text()
        login(window, qtbot, "olga", "1111")
        wait_until(lambda: app.status().state == StationState.PAUSED, what="the pause")
        assert actions(app)[-2:] == [("olga", "login"), ("olga", "pause")]
    finally:
        window._can_close = True
        app.stop(30.0)
        discard(window)
        app.close()


def test_without_users_setup_says_how_to_make_the_first_admin(
    qapp: Any, make_data_dir: Any, gui_config: Any, qtbot: Any, shoot: Shooter
) -> None:
    from station.app import StationApp
    from station.gui.login import FIRST_ADMIN_HINT
    from station.gui.main_window import MainWindow

    data = make_data_dir()
    cfg = gui_config(data)
    app = StationApp(cfg, data)  # not started: the shell alone
    window = MainWindow(app, cfg)
    window.resize(*SIZES[0])
    window.show()
    try:
        assert window.session.anonymous and window.session.role == Role.OPERATOR
        qtbot.mouseClick(window.nav_buttons["setup"], Qt.MouseButton.LeftButton)
        settle()
        assert window.login_sheet.isVisible()
        assert window.login_panel.message.text() == FIRST_ADMIN_HINT
        assert "station users add NAME --role admin" in FIRST_ADMIN_HINT
        assert not window.login_panel.keypad.isVisible()  # nobody to log in as
        shoot(window, "25-no-users")
    finally:
        window._can_close = True
        discard(window)
        app.close()
