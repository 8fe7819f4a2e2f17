"""The shell: a navigation rail (Operator, Setup, History, Settings, and who is logged in) beside
a stack of pages; the operator's page is home.

One display timer (`cfg.gui.display_hz`) drives the operator page. The shell holds the session:
every action a page takes goes to the app with it (`act()`); a refusal is shown and offers the PIN
keypad. After `access.idle_logout_s` without a touch the shell logs the user out and returns home.
Sheets (drift, NOK detail, login, close confirmation) cover the whole window, never a dialog.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QApplication,
    QButtonGroup,
    QFrame,
    QHBoxLayout,
    QMainWindow,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from station.app.access import LoginRefused, Session
from station.app.roles import Action, PermissionDenied
from station.config import StationConfig
from station.core.errors import StationError
from station.core.result import StationEvent, StationState
from station.gui.history_page import HistoryPage
from station.gui.login import LoginPanel
from station.gui.operator_page import OperatorPage
from station.gui.pages import Page, SettingsPage
from station.gui.setup_page import SetupPage
from station.gui.sheets import ConfirmClose, NoticeBar, Sheet
from station.gui.theme import Theme, load_theme, other

if TYPE_CHECKING:
    from station.app import StationApp

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 15.0
NAV_WIDTH = 116
NAV_BUTTON_PX = 96  # at least 80 px for a gloved finger at 1280x800
_INPUT_EVENTS = (
    QEvent.Type.MouseButtonPress,
    QEvent.Type.TouchBegin,
    QEvent.Type.KeyPress,
    QEvent.Type.Wheel,
)


class MainWindow(QMainWindow):
    """The station's window around one `StationApp`."""

    def __init__(
        self,
        app: StationApp,
        cfg: StationConfig,
        *,
        theme: str | None = None,
        kiosk: bool = False,
        close_when_stopped: bool = False,
    ) -> None:
        super().__init__()
        self.app = app
        self.cfg = cfg
        self.kiosk = kiosk
        # With --max-frames the line ends by itself; a demo or smoke run then closes the window.
        self.close_when_stopped = close_when_stopped
        self.theme: Theme = load_theme(theme or cfg.gui.theme)
        self.setWindowTitle("Inspection station")
        self.session: Session = app.default_session()
        self.stopping = False
        # GUI-thread milliseconds per display update (tick work + the repaint it caused).
        self.update_ms: deque[float] = deque(maxlen=200_000)
        # The same in CPU time of the GUI thread: on a loaded machine wall time also counts the
        # waits for a core (or the GIL), which the GUI's own work does not cause.
        self.update_cpu_ms: deque[float] = deque(maxlen=200_000)
        self.idle_tick_ms: deque[float] = deque(maxlen=200_000)
        self._open_update: tuple[float, float] | None = None
        self._can_close = False
        self._stopper: threading.Thread | None = None
        self._last_input = time.monotonic()
        self._after_login: Callable[[], object] | None = None
        self._build()
        self.apply_theme(self.theme.name)
        self.timer = QTimer(self)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(max(10, round(1000.0 / max(1.0, cfg.gui.display_hz))))
        self.timer.timeout.connect(self.tick)
        self.timer.start()
        self.idle_timer = QTimer(self)
        self.idle_timer.setInterval(1000)
        self.idle_timer.timeout.connect(self.check_idle)
        self.idle_timer.start()
        qapp = QApplication.instance()
        if qapp is not None:
            qapp.installEventFilter(self)
        self._show_session()

    # -- construction -----------------------------------------------------------------------------
    def _build(self) -> None:
        root = QWidget(self)
        root.setObjectName("Root")
        self.setCentralWidget(root)
        outer = QHBoxLayout(root)
        outer.setContentsMargins(0, 0, 8, 0)
        outer.setSpacing(8)

        self.nav = QFrame(root)
        self.nav.setObjectName("Nav")
        self.nav.setFixedWidth(NAV_WIDTH)
        nav = QVBoxLayout(self.nav)
        nav.setContentsMargins(8, 8, 8, 8)
        nav.setSpacing(8)
        outer.addWidget(self.nav)

        content = QVBoxLayout()
        content.setContentsMargins(0, 8, 0, 0)
        content.setSpacing(8)
        outer.addLayout(content, 1)
        self.notice_bar = NoticeBar(root)
        content.addWidget(self.notice_bar)
        self.stack = QStackedWidget(root)
        content.addWidget(self.stack, 1)

        self.operator = OperatorPage(self.app, self.cfg, self)
        self.pages: dict[str, QWidget] = {"operator": self.operator}
        self.stack.addWidget(self.operator)
        for key, page in (
            ("setup", SetupPage(self.app, theme=self.theme)),
            ("history", HistoryPage(self.app, theme=self.theme)),
            ("settings", SettingsPage(self.app)),
        ):
            self.pages[key] = page
            self.stack.addWidget(page)

        self.nav_group = QButtonGroup(self)
        self.nav_group.setExclusive(True)
        self.nav_buttons: dict[str, QPushButton] = {}
        for key, text in (
            ("operator", "Operator"),
            ("setup", "Setup"),
            ("history", "History"),
            ("settings", "Settings"),
        ):
            b = self._nav_button(text)
            b.setCheckable(True)
            b.clicked.connect(lambda _=False, k=key: self.go(k))
            self.nav_group.addButton(b)
            nav.addWidget(b)
            self.nav_buttons[key] = b
        self.nav_buttons["operator"].setChecked(True)
        nav.addStretch(1)
        self.user_button = self._nav_button("", points=11)
        self.user_button.setObjectName("UserButton")
        self.user_button.clicked.connect(self._user_clicked)
        nav.addWidget(self.user_button)

        self.login_panel = LoginPanel(self._attempt_login)
        self.login_panel.logged_in.connect(self._logged_in)
        self.login_sheet = Sheet("Log in", self.login_panel, root, margin=0.03)
        self.login_sheet.closed.connect(self._login_closed)
        self.confirm = ConfirmClose()
        self.confirm_sheet = Sheet("Stop inspection and close?", self.confirm, root, fill=False)
        self.confirm.keep_button.clicked.connect(self.confirm_sheet.dismiss)
        self.confirm.stop_button.clicked.connect(lambda: self.confirm_close(by_person=True))
        self.confirm_sheet.close_button.hide()  # two explicit choices, no third way out

    def _nav_button(self, text: str, points: int = 13) -> QPushButton:
        b = QPushButton(text, self.nav)
        b.setStyleSheet(
            f"min-height: {NAV_BUTTON_PX}px; max-height: {NAV_BUTTON_PX}px; "
            f"font-size: {points}pt; padding: 2px;"
        )
        b.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        return b

    def overlay_parent(self) -> QWidget:
        """Sheets cover the whole window."""
        w = self.centralWidget()
        assert w is not None
        return w

    # -- theme --------------------------------------------------------------------------------
    def apply_theme(self, name: str) -> None:
        """Switch to the 'dark' or 'light' theme."""
        self.theme = load_theme(name)
        self.setStyleSheet(self.theme.qss)
        self.operator.set_theme(self.theme)
        self.pages["setup"].set_theme(self.theme)  # type: ignore[attr-defined]
        self.pages["history"].set_theme(self.theme)  # type: ignore[attr-defined]

    def toggle_theme(self) -> None:
        """Dark <-> light."""
        self.apply_theme(other(self.theme.name))

    # -- sessions and pages ---------------------------------------------------------------------
    def go(self, key: str) -> None:
        """Show a page; a page the session may not open asks for a login first."""
        page = self.pages[key]
        action = page.action if isinstance(page, Page) else None
        if isinstance(page, Page) and action is not None and not self.app.may(self.session, action):
            if self.session.anonymous or self.session.role is None:
                self.ask_login(f"{page.title} needs a login.", then=lambda: self.go(key))
            else:
                self._refused(action, key)
            self._check_nav()
            return
        previous = self.stack.currentWidget()
        if isinstance(previous, Page) and previous is not page:
            previous.left()
        if isinstance(page, Page):
            page.refresh(self.session)
        self.stack.setCurrentWidget(page)
        self._check_nav()

    def _refused(self, action: Action, key: str) -> None:
        try:
            self.app.authorize(self.session, action, key)  # records the refusal
        except PermissionDenied as exc:
            self.notice(str(exc))

    def _check_nav(self) -> None:
        current = self.stack.currentWidget()
        for key, b in self.nav_buttons.items():
            b.setChecked(self.pages[key] is current)

    def act(self, what: str, action: Callable[[Session], Any]) -> bool:
        """Run `action(session)` as the current user; a refusal is explained and, for nobody or
        the anonymous operator, the keypad opens (and the action runs after the login)."""
        try:
            action(self.session)
            return True
        except PermissionDenied as exc:
            if self.session.anonymous or self.session.role is None:
                self.ask_login(f"{what}: {exc}", then=lambda: self.act(what, action))
            else:
                self.notice(f"{what} refused: {exc}")
        except StationError as exc:
            self.report_error(f"{what} failed: {exc}")
        return False

    def ask_login(self, why: str = "", then: Callable[[], object] | None = None) -> None:
        """Open the PIN keypad; `then` runs after a successful login."""
        self._after_login = then
        self.login_panel.set_names(self.app.login_names(), hint=why)
        self.login_sheet.open()

    def _attempt_login(self, name: str, pin: str) -> str | None:
        try:
            session = self.app.login(name, pin)
        except LoginRefused as exc:
            return str(exc)
        except StationError as exc:
            return f"Login failed: {exc}"
        self._replace_session(session, reason="")
        self.notice_bar.dismiss()  # what the last user was told is not for this one
        return None

    def _logged_in(self) -> None:
        then, self._after_login = self._after_login, None
        self.login_sheet.dismiss()
        if then is not None:
            then()

    def _login_closed(self) -> None:
        self._after_login = None

    def _user_clicked(self) -> None:
        if self.session.anonymous or self.session.role is None:
            self.ask_login()
        else:
            self.logout("logged out")

    def logout(self, reason: str) -> None:
        """Back to the default session (the operator) and the home page."""
        self._replace_session(self.app.default_session(), reason=reason)
        self.go("operator")

    def _replace_session(self, session: Session, *, reason: str) -> None:
        old, self.session = self.session, session
        if old.token != session.token:
            for page in self.pages.values():
                if isinstance(page, Page):
                    page.end_session()
            self.app.logout(old, reason=reason)
        self._show_session()

    def _show_session(self) -> None:
        s = self.session
        if s.anonymous or s.role is None:
            self.user_button.setText(f"{'Operator' if s.role else 'Nobody'}\nLog in")
        else:
            self.user_button.setText(f"{s.user}\n{s.role.value}\nLog out")

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() in _INPUT_EVENTS:
            self._last_input = time.monotonic()
        return False

    def check_idle(self, now: float | None = None) -> None:
        """After the idle time: log out to the operator and go home (no effect when there)."""
        idle = (time.monotonic() if now is None else now) - self._last_input
        if idle < self.cfg.access.idle_logout_s:
            return
        if not self.session.anonymous:
            self.logout(f"idle {idle:.0f} s")
        elif self.stack.currentWidget() is not self.operator:
            self.go("operator")
        if self.login_sheet.isVisible():
            self.login_sheet.dismiss()

    # -- messages --------------------------------------------------------------------------------
    def notice(self, message: str) -> None:
        """Show a message on the notice bar (not recorded)."""
        self.notice_bar.post(message)

    def report_error(self, message: str, *, record: bool = True) -> None:
        """Tell the person in the notice bar, log it, and record it as an 'error' event."""
        log.error("%s", message)
        self.notice_bar.post(message)
        if not record:
            return
        try:
            self.app.record_event(StationEvent("error", f"GUI: {message}"))
        except Exception:
            log.exception("could not record the GUI error")

    # -- the display timer ----------------------------------------------------------------------
    def tick(self) -> None:
        """One display update of the operator page (when it is shown)."""
        t0, c0 = time.perf_counter(), time.thread_time()
        changed = False
        try:
            if self.stack.currentWidget() is self.operator:
                changed = self.operator.update_display()
            self._watch_state()
        except Exception as exc:
            # A drawing bug must not kill the screen or spam: one notice per distinct message.
            log.exception("display update failed")
            msg = f"Display error: {exc}"
            if not self.notice_bar.messages or self.notice_bar.messages[-1][1] != msg:
                self.report_error(msg)
        ms = (time.perf_counter() - t0) * 1e3
        cpu = (time.thread_time() - c0) * 1e3
        if changed:
            if self._open_update is not None:  # the previous update never got painted
                self.update_ms.append(self._open_update[0])
                self.update_cpu_ms.append(self._open_update[1])
            self._open_update = (ms, cpu)
        else:
            self.idle_tick_ms.append(ms)

    def _watch_state(self) -> None:
        status = self.operator.status
        if (
            self.close_when_stopped
            and status is not None
            and status.state in (StationState.STOPPED, StationState.FAILED)
            and self._stopper is None
            and not self._can_close
        ):
            self._can_close = True
            QTimer.singleShot(1500, self.close)

    def event(self, event: QEvent) -> bool:
        # Every repaint of the window's widgets happens inside the top-level UpdateRequest:
        # timing it gives the paint half of a display update's GUI-thread cost.
        if event.type() != QEvent.Type.UpdateRequest:
            return super().event(event)
        t0, c0 = time.perf_counter(), time.thread_time()
        handled = super().event(event)
        if self._open_update is not None:
            ms, cpu = self._open_update
            self.update_ms.append(ms + (time.perf_counter() - t0) * 1e3)
            self.update_cpu_ms.append(cpu + (time.thread_time() - c0) * 1e3)
            self._open_update = None
        return handled

    def reset_stats(self) -> None:
        """Forget the update timings (the bench's warm-up)."""
        self.update_ms.clear()
        self.update_cpu_ms.clear()
        self.idle_tick_ms.clear()
        self._open_update = None
        self.operator.reset_stats()

    # -- closing --------------------------------------------------------------------------------
    def request_close(self) -> None:
        """Ask the operator to confirm (a large in-window panel, not a small dialog)."""
        if self._stopper is None:
            self.confirm_sheet.open()

    def confirm_close(
        self, reason: str = "closed by the operator", *, by_person: bool = False
    ) -> None:
        """Stop the line (in a helper thread, the screen keeps drawing) and close when done.

        `by_person`: the Close button, so the session's action (checked and audited by the
        app); a signal (SIGTERM) stops without a person.
        """
        self.confirm_sheet.dismiss()
        if self._stopper is not None:
            return
        if by_person:
            try:
                self.app.authorize(self.session, Action.STOP)
            except PermissionDenied as exc:
                self.ask_login(
                    f"Close: {exc}", then=lambda: self.confirm_close(reason, by_person=True)
                )
                return
        session = self.session if by_person else None
        self.stopping = True
        self._stopper = threading.Thread(
            target=self._stop_line, args=(reason, session), name="gui-stop", daemon=True
        )
        self._stopper.start()
        self._wait_stopped()

    def _stop_line(self, reason: str, session: Session | None) -> None:
        try:
            self.app.stop(STOP_TIMEOUT_S, reason=reason, session=session)
        except Exception:
            log.exception("stopping the line failed")

    def _wait_stopped(self) -> None:
        if self._stopper is not None and self._stopper.is_alive():
            QTimer.singleShot(50, self._wait_stopped)
            return
        self._can_close = True
        self.close()

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._can_close:
            event.ignore()
            self.request_close()
            return
        self.timer.stop()
        self.idle_timer.stop()
        qapp = QApplication.instance()
        if qapp is not None:
            qapp.removeEventFilter(self)
        self.operator.close_bridge()
        for page in self.pages.values():
            if isinstance(page, Page):
                page.end_session()
        event.accept()
