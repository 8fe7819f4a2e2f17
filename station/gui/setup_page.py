"""The technician's Setup page: a wizard over `station.app.setup.SetupSession`.

    1 Product   pick one, or create one (its camera: the line's, or a replay folder)
    2 Camera    live picture, focus (with the best seen), exposure histogram and clipping,
                illumination grid, frame rate and lost frames; exposure and gain for GenICam
    3 Collect   good parts from the camera or a folder, with the reason for each refusal;
                known-bad parts the same way
    4 Build     in the background with progress, the time left, and Cancel
    5 Limit     scores of held-back good and known-bad parts; the limit as a line to drag (and
                - / + for gloves), an optional check band, the rates with their intervals
    6 Save      notes; save and activate now, or later

Every action goes to the session, which asks the app (role checked, audited); this module only
shows what the session holds. A timer refreshes the visible step four times a second.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QRectF, Qt, QTimer
from PySide6.QtGui import QColor, QFont, QPainter, QPaintEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from station.app.access import Session
from station.app.roles import Action, PermissionDenied
from station.app.setup import Rates, SetupSession, Validation
from station.core.errors import StationError
from station.gui.image_view import to_qimage
from station.gui.login import FIRST_ADMIN_HINT
from station.gui.pages import Page
from station.gui.theme import Theme, load_theme
from station.gui.widgets import big_button, caption, card, stat

if TYPE_CHECKING:
    from station.app import StationApp

log = logging.getLogger(__name__)

STEPS = ("Product", "Camera", "Collect", "Build", "Limit", "Save")
REFRESH_MS = 250
LIMIT_STEP = 0.01  # the - / + buttons move the limit by 1 % of its value
STAGE_WORDS = {
    "reading": "reading the parts",
    "features": "features of each part",
    "coreset": "choosing the memory bank",
    "discriminator": "learning what defects look like",
    "scoring": "scoring the held-back parts",
    "writing": "writing the model",
}


def pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f} %"


# -- small painted views ------------------------------------------------------------------------
class FrameView(QWidget):
    """The newest camera frame, fitted into the widget."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rgb: np.ndarray | None = None
        self.setMinimumSize(240, 180)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def show_frame(self, image: np.ndarray) -> None:
        img = image
        if img.dtype != np.uint8:
            img = (img.astype(np.float32) / 257.0).clip(0, 255).astype(np.uint8)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        self._rgb = np.ascontiguousarray(img[..., :3])
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(20, 20, 20))
        if self._rgb is not None:
            q = to_qimage(self._rgb)
            h, w = self._rgb.shape[:2]
            s = min(self.width() / w, self.height() / h)
            tw, th = w * s, h * s
            p.drawImage(QRectF((self.width() - tw) / 2, (self.height() - th) / 2, tw, th), q)
        p.end()


class Bars(QWidget):
    """A bar chart of counts (the exposure histogram), clipped ends in the alarm colour."""

    def __init__(self, theme: Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.theme = theme
        self.counts = np.zeros(0)
        self.setMinimumHeight(90)

    def set_counts(self, counts: np.ndarray) -> None:
        self.counts = np.asarray(counts, np.float64)
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(self.theme.color("plot_bg")))
        n = len(self.counts)
        if n and self.counts.max() > 0:
            w = self.width() / n
            top = float(self.counts.max())
            for i, c in enumerate(self.counts):
                h = (self.height() - 4) * c / top
                color = self.theme.color("amber" if i in (0, n - 1) else "accent")
                p.fillRect(QRectF(i * w, self.height() - h, max(1.0, w - 1), h), QColor(color))
        p.end()


class Grid(QWidget):
    """The illumination grid: each cell's mean brightness as a grey square with its value."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cells = np.zeros((4, 4))
        self.setMinimumSize(160, 120)

    def set_cells(self, cells: np.ndarray) -> None:
        self.cells = np.asarray(cells)
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        rows, cols = self.cells.shape
        cw, ch = self.width() / cols, self.height() / rows
        font = QFont(self.font())
        font.setPointSize(11)
        p.setFont(font)
        for i in range(rows):
            for j in range(cols):
                v = float(self.cells[i, j])
                g = int(255 * min(1.0, max(0.0, v)))
                r = QRectF(j * cw, i * ch, cw - 2, ch - 2)
                p.fillRect(r, QColor(g, g, g))
                p.setPen(QColor(0, 0, 0) if g > 128 else QColor(255, 255, 255))
                p.drawText(r, Qt.AlignmentFlag.AlignCenter, f"{100 * v:.0f}")
        p.end()


# -- the steps ------------------------------------------------------------------------------------
class SetupPage(Page):
    """The product setup wizard (technician, admin)."""

    title = "Setup"
    action = Action.SETUP

    def __init__(
        self, app: StationApp, parent: QWidget | None = None, *, theme: Theme | None = None
    ) -> None:
        super().__init__(app, parent)
        self.theme = theme or load_theme(app.cfg.gui.theme)
        self.session: Session | None = None
        self.setup: SetupSession | None = None
        self.report: Callable[[str], None] = lambda msg: self.message.setText(msg)
        # The title and the steps share the top row: the steps need the height.
        item = self.layout_.itemAt(0)
        heading = item.widget() if item is not None else None
        assert heading is not None
        self.layout_.removeWidget(heading)
        top = QHBoxLayout()
        top.addWidget(heading)
        self.step_labels: list[QLabel] = []
        for i, name in enumerate(STEPS):
            label = QLabel(f"{i + 1} {name}", self)
            label.setObjectName("Caption")
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            top.addWidget(label, 1)
            self.step_labels.append(label)
        self.layout_.insertLayout(0, top)
        self.steps = QStackedWidget(self)
        self.layout_.addWidget(self.steps, 1)
        self._build_product()
        self._build_camera()
        self._build_collect()
        self._build_build()
        self._build_limit()
        self._build_save()
        nav = QHBoxLayout()
        self.back_button = big_button("Back", self, width=200)
        self.back_button.setStyleSheet("min-height: 80px; min-width: 200px;")
        self.back_button.clicked.connect(lambda: self.go(self.steps.currentIndex() - 1))
        self.next_button = big_button("Next", self, primary=True, width=200)
        self.next_button.setStyleSheet("min-height: 80px; min-width: 200px;")
        self.next_button.clicked.connect(lambda: self.go(self.steps.currentIndex() + 1))
        # What the last action did, between the two buttons (never a dialog).
        self.message = stat("", self)
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.message.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        nav.addWidget(self.back_button)
        nav.addWidget(self.message, 1)
        nav.addWidget(self.next_button)
        self.layout_.addLayout(nav)
        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self.refresh_step)
        self.go(0)

    # -- Page
    def refresh(self, session: Session) -> None:
        """Shown: the product list for this session."""
        if self.session is not None and self.session.token != session.token:
            self.end_session()
        self.session = session
        self.users_hint.setVisible(not self.app.has_users())
        self._fill_products()
        self.timer.start()
        self.refresh_step()

    def left(self) -> None:
        """Another page is shown: the camera goes back to the line (a build goes on)."""
        self.timer.stop()
        if self.setup is not None:
            self.setup.close_camera()

    def end_session(self) -> None:
        """The technician logged out: leave the setup (an unsaved build is cancelled)."""
        self.timer.stop()
        if self.setup is not None:
            self.setup.close()
        self.setup = None
        self.session = None
        self.go(0)

    def set_theme(self, theme: Theme) -> None:
        self.theme = theme
        self.hist.theme = theme
        self._style_plots()

    # -- navigation
    def go(self, index: int) -> None:
        """Show step `index` (the steps after Product need a chosen product)."""
        index = max(0, min(len(STEPS) - 1, index))
        if index > 0 and self.setup is None:
            self.report("Choose or create a product first.")
            index = 0
        if index != 2 and self.setup is not None:
            self.setup.collect(None)  # collecting happens on the Collect step only
        if index in (1, 2) and self.setup is not None:
            self._act(self.setup.open_camera)
        elif self.setup is not None:
            self.setup.close_camera()
        if index == 4 and self.setup is not None and self.setup.state.validation is None:
            job = self.setup.state.build
            if job is not None and job.state == "done":
                self._act(lambda: self._validate())
        if index == 0 and self.session is not None:
            self._fill_products()  # products and versions may have changed meanwhile
        self.steps.setCurrentIndex(index)
        for i, label in enumerate(self.step_labels):
            label.setStyleSheet(
                f"color: {self.theme.color('accent')}; font-weight: bold;" if i == index else ""
            )
        self.back_button.setEnabled(index > 0)
        self.next_button.setEnabled(index < len(STEPS) - 1)
        self.refresh_step()

    def _act(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (PermissionDenied, StationError) as exc:
            self.report(str(exc))
            return None

    # -- 1 product
    def _build_product(self) -> None:
        w = QWidget(self)
        lay = QHBoxLayout(w)
        left, llay = card(w)
        llay.addWidget(caption("Products", left))
        self.product_box = QVBoxLayout()
        llay.addLayout(self.product_box)
        llay.addStretch(1)
        llay.addWidget(caption("The line runs", left))
        self.running_label = stat("-", left)
        llay.addWidget(self.running_label)
        self.rollback_button = big_button("Roll back to the previous version", left)
        self.rollback_button.clicked.connect(self.rollback)
        llay.addWidget(self.rollback_button)
        lay.addWidget(left, 1)
        right, rlay = card(w)
        rlay.addWidget(caption("New product", right))
        self.new_name = QLineEdit(right)
        self.new_name.setPlaceholderText("name, e.g. bracket-B7")
        self.new_name.setMinimumHeight(64)
        rlay.addWidget(self.new_name)
        self.same_camera = QCheckBox("The line's camera", right)
        self.same_camera.setChecked(True)
        self.same_camera.setMinimumHeight(56)
        rlay.addWidget(self.same_camera)
        rlay.addWidget(caption("or replay the parts in this folder:", right))
        self.replay_folder = QLineEdit(right)
        self.replay_folder.setPlaceholderText("/path/to/parts")
        self.replay_folder.setMinimumHeight(64)
        self.replay_folder.textChanged.connect(lambda t: self.same_camera.setChecked(not t))
        rlay.addWidget(self.replay_folder)
        self.create_button = big_button("Create product", right, primary=True)
        self.create_button.clicked.connect(self.create_product)
        rlay.addWidget(self.create_button)
        self.users_hint = stat(FIRST_ADMIN_HINT, right)
        rlay.addWidget(self.users_hint)
        rlay.addStretch(1)
        lay.addWidget(right, 1)
        self.product_buttons: dict[str, QPushButton] = {}
        self.steps.addWidget(w)

    def _fill_products(self) -> None:
        for b in self.product_buttons.values():
            self.product_box.removeWidget(b)
            b.deleteLater()
        self.product_buttons = {}
        for name in self.app.product_names():
            running = " (running)" if name == self.app.product else ""
            b = big_button(f"{name}{running}", self)
            b.clicked.connect(lambda _=False, n=name: self.choose(n))
            self.product_box.addWidget(b)
            self.product_buttons[name] = b
        self._show_running()

    def _show_running(self) -> None:
        versions = self.app.model_versions(self.app.product)
        current = next((v for v in versions if v.current), None)
        previous = self.app.store.previous(self.app.product)
        self.running_label.setText(
            f"{self.app.product}/{current.version}, limit {current.threshold:.3f}"
            if current is not None
            else f"{self.app.product}: no model"
        )
        self.rollback_button.setEnabled(previous is not None)
        self.rollback_button.setText(
            f"Roll back to {previous}" if previous else "No earlier version to roll back to"
        )

    def rollback(self) -> None:
        """Back to the version the line ran before (audited)."""
        session = self.session
        assert session is not None
        back = self._act(lambda: self.app.rollback_model(session))
        if back is not None:
            self.report(f"The line runs {self.app.product}/{back} from the next part.")
        self._show_running()

    def create_product(self) -> None:
        """Create the product named in the form and start its setup."""
        name = self.new_name.text().strip()
        folder = self.replay_folder.text().strip()
        overlay: dict[str, Any] = {}
        if folder and not self.same_camera.isChecked():
            # 10 parts a second: quick to collect from, without taking a core from the line.
            overlay = {"camera": {"source": "replay", "replay": {"path": folder, "fps": 10.0}}}
        session = self.session
        assert session is not None
        if self._act(lambda: self.app.create_product(session, name, overlay)) is None:
            return
        self._fill_products()
        self.choose(name)

    def choose(self, product: str) -> None:
        """Start (or continue) the setup of `product`."""
        session = self.session
        assert session is not None
        if self.setup is not None and self.setup.product == product:
            self.go(1)
            return
        if self.setup is not None:
            self.setup.close()
        self.setup = self._act(lambda: self.app.setup(session, product))
        if self.setup is not None:
            self.report(f"Setting up {product}.")
            self.go(1)

    # -- 2 camera
    def _build_camera(self) -> None:
        w = QWidget(self)
        lay = QHBoxLayout(w)
        self.camera_view = FrameView(w)
        lay.addWidget(self.camera_view, 3)
        side, slay = card(w)
        self.focus_label = stat("-", side)  # "Focus 207 (best seen 228)"
        slay.addWidget(self.focus_label)
        self.focus_bar = QProgressBar(side)
        self.focus_bar.setMinimumHeight(32)
        self.focus_bar.setTextVisible(False)
        slay.addWidget(self.focus_bar)
        pair = QGridLayout()
        pair.addWidget(caption("Exposure (amber: clipped)", side), 0, 0)
        pair.addWidget(caption("Light (cell brightness %)", side), 0, 1)
        self.hist = Bars(self.theme, side)
        pair.addWidget(self.hist, 1, 0)
        self.grid_view = Grid(side)
        pair.addWidget(self.grid_view, 1, 1)
        slay.addLayout(pair)
        self.clip_label = caption("-", side)  # clipping, the light and the rate: a line each
        f = self.clip_label.font()
        f.setPointSize(15)
        self.clip_label.setFont(f)
        slay.addWidget(self.clip_label)
        self.rate_label = self.clip_label  # (one label; the name the tests and readers know)
        feats = QGridLayout()
        self.feature_labels: dict[str, QLabel] = {}
        self.feature_buttons: list[QPushButton] = []
        for col, (name, factor) in enumerate((("ExposureTime", 1.25), ("Gain", 1.0))):
            feats.addWidget(caption(name, side), 0, 3 * col, 1, 3)
            minus = big_button("\u2212", side)
            plus = big_button("+", side)
            minus.clicked.connect(lambda _=False, n=name, f=factor: self._nudge(n, -1, f))
            plus.clicked.connect(lambda _=False, n=name, f=factor: self._nudge(n, +1, f))
            value = stat("-", side, wrap=False)
            value.setAlignment(Qt.AlignmentFlag.AlignCenter)
            feats.addWidget(minus, 1, 3 * col)
            feats.addWidget(value, 1, 3 * col + 1)
            feats.addWidget(plus, 1, 3 * col + 2)
            self.feature_labels[name] = value
            self.feature_buttons += [minus, plus]
        slay.addLayout(feats)
        self.features_note = caption("", side)
        slay.addWidget(self.features_note)
        slay.addStretch(1)
        lay.addWidget(side, 2)
        self.steps.addWidget(w)

    def _nudge(self, name: str, direction: int, factor: float) -> None:
        cam = self.setup.camera.camera if self.setup and self.setup.camera else None
        info = getattr(cam, "feature", lambda n: None)(name)
        if info is None or self.setup is None:
            return
        value = float(info.value)
        new = value * factor**direction if name == "ExposureTime" else value + direction * factor
        self._act(lambda: self.setup.set_camera_feature(name, new))  # type: ignore[union-attr]

    # -- 3 collect
    def _build_collect(self) -> None:
        w = QWidget(self)
        lay = QHBoxLayout(w)
        self.collect_view = FrameView(w)
        lay.addWidget(self.collect_view, 3)
        side, slay = card(w)
        self.good_count = stat("Good 0 / 100", side)
        f = self.good_count.font()
        f.setPointSize(26)
        f.setBold(True)
        self.good_count.setFont(f)
        slay.addWidget(self.good_count)
        self.bad_count = stat("Known-bad 0", side)
        slay.addWidget(self.bad_count)
        row = QHBoxLayout()
        self.collect_good = big_button("Collect good", side)
        self.collect_good.setCheckable(True)
        self.collect_good.toggled.connect(lambda on: self._collect("good", on))
        self.collect_bad = big_button("Collect bad", side)
        self.collect_bad.setCheckable(True)
        self.collect_bad.toggled.connect(lambda on: self._collect("bad", on))
        row.addWidget(self.collect_good)
        row.addWidget(self.collect_bad)
        slay.addLayout(row)
        slay.addWidget(caption("Or import a folder of parts:", side))
        self.import_folder = QLineEdit(side)
        self.import_folder.setMinimumHeight(56)
        self.import_folder.setPlaceholderText("/path/to/folder")
        slay.addWidget(self.import_folder)
        row = QHBoxLayout()
        self.import_good = big_button("Import good", side)
        self.import_good.clicked.connect(lambda: self._import("good"))
        self.import_bad = big_button("Import bad", side)
        self.import_bad.clicked.connect(lambda: self._import("bad"))
        row.addWidget(self.import_good)
        row.addWidget(self.import_bad)
        slay.addLayout(row)
        slay.addWidget(caption("Latest decisions", side))
        self.decisions = caption("", side)
        self.decisions.setWordWrap(True)
        self.decisions.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Ignored)
        slay.addWidget(self.decisions, 1)
        lay.addWidget(side, 2)
        self.steps.addWidget(w)

    def _collect(self, kind: str, on: bool) -> None:
        button = self.collect_good if kind == "good" else self.collect_bad
        button.setText(f"Stop ({kind})" if on else f"Collect {kind}")
        if self.setup is None:
            return
        other = self.collect_bad if kind == "good" else self.collect_good
        if on and other.isChecked():
            other.setChecked(False)
        if on:
            self._act(lambda: self.setup.collect(kind))  # type: ignore[union-attr]
        elif self.setup.collecting == kind:
            self.setup.collect(None)

    def _import(self, kind: str) -> None:
        folder = self.import_folder.text().strip()
        if self.setup is None or not folder:
            self.report("Type the folder to import first.")
            return
        out = self._act(lambda: self.setup.import_folder(Path(folder), kind))  # type: ignore[union-attr]
        if out is not None:
            taken = sum(d.accepted for d in out)
            self.report(f"{taken} of {len(out)} parts from {Path(folder).name} taken as {kind}.")

    # -- 4 build
    def _build_build(self) -> None:
        w = QWidget(self)
        lay = QVBoxLayout(w)
        box, blay = card(w)
        self.build_summary = stat("Build a model from the collected good parts.", box)
        blay.addWidget(self.build_summary)
        self.build_bar = QProgressBar(box)
        self.build_bar.setRange(0, 1000)
        self.build_bar.setMinimumHeight(48)
        self.build_bar.setTextVisible(False)
        blay.addWidget(self.build_bar)
        self.build_stage = stat("", box)
        blay.addWidget(self.build_stage)
        row = QHBoxLayout()
        self.build_button = big_button("Build the model", box, primary=True, width=320)
        self.build_button.clicked.connect(self.start_build)
        self.cancel_button = big_button("Cancel the build", box, width=320)
        self.cancel_button.clicked.connect(self.cancel_build)
        row.addWidget(self.build_button)
        row.addWidget(self.cancel_button)
        row.addStretch(1)
        blay.addLayout(row)
        blay.addWidget(
            stat("The line keeps inspecting with its model while this one is built.", box)
        )
        lay.addWidget(box)
        lay.addStretch(1)
        self.steps.addWidget(w)

    def start_build(self) -> None:
        if self.setup is not None and self._act(self.setup.build) is not None:
            self.report("Building ...")

    def cancel_build(self) -> None:
        job = self.setup.state.build if self.setup else None
        if job is not None and job.state == "running":
            job.cancel()
            self.report("Cancelling: nothing is written.")

    # -- 5 limit
    def _build_limit(self) -> None:
        import pyqtgraph as pg

        w = QWidget(self)
        lay = QHBoxLayout(w)
        plots = QVBoxLayout()
        self.hist_plot = pg.PlotWidget(w)
        self.hist_plot.setMouseEnabled(x=False, y=False)
        self.hist_plot.setMenuEnabled(False)
        self.hist_plot.getPlotItem().hideButtons()
        self.hist_plot.setLabel("bottom", "score")
        self.hist_plot.setLabel("left", "parts")
        self.good_curve = self.hist_plot.plot(stepMode="center", fillLevel=0, name="good")
        self.bad_curve = self.hist_plot.plot(stepMode="center", fillLevel=0, name="bad")
        self.train_curve = self.hist_plot.plot(stepMode="center", name="training")
        self.limit_line = pg.InfiniteLine(angle=90, movable=True)
        self.limit_line.sigPositionChanged.connect(lambda: self._limit_dragged())
        self.check_line = pg.InfiniteLine(angle=90, movable=True)
        self.check_line.sigPositionChanged.connect(lambda: self._limit_dragged())
        self.check_line.hide()
        self.hist_plot.addItem(self.limit_line)
        self.hist_plot.addItem(self.check_line)
        plots.addWidget(self.hist_plot, 3)
        plots.addWidget(
            caption(
                "Green: held-back good parts. Red: known-bad parts. Dashed: training parts, each "
                "scored without its own patches. Drag the orange line (the limit).",
                w,
                wrap=True,
            )
        )
        self.curve_plot = pg.PlotWidget(w)
        self.curve_plot.setMouseEnabled(x=False, y=False)
        self.curve_plot.setMenuEnabled(False)
        self.curve_plot.getPlotItem().hideButtons()
        self.curve_plot.setLabel("bottom", "limit")
        self.curve_plot.setLabel("left", "rate")
        self.fnr_curve = self.curve_plot.plot(name="miss rate")
        self.fpr_curve = self.curve_plot.plot(name="false rejects")
        self.curve_line = pg.InfiniteLine(angle=90, movable=False)
        self.curve_plot.addItem(self.curve_line)
        plots.addWidget(self.curve_plot, 2)
        plots.addWidget(
            caption("Red: miss rate. Blue: false-reject rate, at each limit.", w, wrap=True)
        )
        lay.addLayout(plots, 3)
        side, slay = card(w)
        self.limit_value = stat("-", side)
        f = self.limit_value.font()
        f.setPointSize(24)
        f.setBold(True)
        self.limit_value.setFont(f)
        slay.addWidget(self.limit_value)
        row = QHBoxLayout()
        self.limit_down = big_button("\u2212", side)
        self.limit_down.clicked.connect(lambda: self._step_limit(-1))
        self.limit_up = big_button("+", side)
        self.limit_up.clicked.connect(lambda: self._step_limit(+1))
        self.suggested_button = big_button("Suggested", side)
        self.suggested_button.clicked.connect(self._use_suggested)
        row.addWidget(self.limit_down)
        row.addWidget(self.limit_up)
        row.addWidget(self.suggested_button, 1)
        slay.addLayout(row)
        self.rates_label = caption("", side)
        self.rates_label.setWordWrap(True)
        f = self.rates_label.font()
        f.setPointSize(15)
        self.rates_label.setFont(f)
        slay.addWidget(self.rates_label)
        self.band_button = big_button("Check band: off", side)
        self.band_button.setCheckable(True)
        self.band_button.toggled.connect(self._toggle_band)
        slay.addWidget(self.band_button)
        self.suggest_label = caption("", side)
        self.suggest_label.setWordWrap(True)
        slay.addWidget(self.suggest_label)
        self.outlier_label = caption("", side)
        self.outlier_label.setWordWrap(True)
        slay.addWidget(self.outlier_label)
        self.drop_button = big_button("Drop them and rebuild", side)
        self.drop_button.clicked.connect(self._drop_outliers)
        slay.addWidget(self.drop_button)
        slay.addStretch(1)
        lay.addWidget(side, 2)
        self.steps.addWidget(w)
        self._style_plots()

    def _style_plots(self) -> None:
        import pyqtgraph as pg

        t = self.theme
        for plot in (self.hist_plot, self.curve_plot):
            plot.setBackground(t.color("plot_bg"))
            for axis in ("left", "bottom"):
                ax = plot.getAxis(axis)
                ax.setPen(pg.mkPen(t.color("plot_grid")))
                ax.setTextPen(pg.mkPen(t.color("text")))
        ok, nok = QColor(t.color("ok")), QColor(t.color("nok"))
        self.good_curve.setPen(pg.mkPen(ok, width=2))
        self.good_curve.setBrush(pg.mkBrush(ok.red(), ok.green(), ok.blue(), 90))
        self.bad_curve.setPen(pg.mkPen(nok, width=2))
        self.bad_curve.setBrush(pg.mkBrush(nok.red(), nok.green(), nok.blue(), 90))
        self.train_curve.setPen(pg.mkPen(t.color("muted"), width=1, style=Qt.PenStyle.DashLine))
        self.limit_line.setPen(pg.mkPen(t.color("plot_line"), width=4))
        self.check_line.setPen(pg.mkPen(t.color("check"), width=4))
        self.curve_line.setPen(pg.mkPen(t.color("plot_line"), width=2))
        self.fnr_curve.setPen(pg.mkPen(nok, width=3))
        self.fpr_curve.setPen(pg.mkPen(t.color("accent"), width=3))

    def _validate(self) -> Validation | None:
        assert self.setup is not None
        v = self.setup.validate()
        self._show_validation(v)
        return v

    def _show_validation(self, v: Validation) -> None:
        scores = [s for _, s in v.good + v.bad + v.training]
        lo, hi = min(scores), max(scores)
        edges = np.linspace(lo, hi + 1e-6, 31)
        for curve, part in ((self.good_curve, v.good), (self.bad_curve, v.bad)):
            counts = np.histogram([s for _, s in part], edges)[0] if part else np.zeros(30)
            curve.setData(edges, counts)
        if v.training:
            tc = np.histogram([s for _, s in v.training], edges)[0]
            # Scaled to the held-back parts' height: the shape matters, not how many there are.
            tc = tc * (max(1, len(v.good)) / max(1, len(v.training)))
            self.train_curve.setData(edges, tc)
        limits, fnr, fpr = v.curve()
        self.fnr_curve.setData(limits, np.nan_to_num(fnr))
        self.fpr_curve.setData(limits, fpr)
        self.suggest_label.setText(f"Suggested: {v.suggested:.3f}, {v.note}.")
        if v.outliers:
            self.outlier_label.setText(
                f"May not be good (far above the other training parts): {', '.join(v.outliers[:6])}"
            )
        else:
            self.outlier_label.setText("No training part scores far above the others.")
        self.drop_button.setVisible(bool(v.outliers))
        self._set_limit_lines(v.suggested, None)

    def _set_limit_lines(self, limit: float, check: float | None) -> None:
        self._moving = True
        self.limit_line.setValue(limit)
        if check is not None:
            self.check_line.setValue(check)
        self._moving = False
        self._apply_limits(limit, check)

    def _limit_dragged(self) -> None:
        if getattr(self, "_moving", False) or self.setup is None:
            return
        check = self.check_line.value() if self.band_button.isChecked() else None
        self._apply_limits(float(self.limit_line.value()), check)

    def _step_limit(self, direction: int) -> None:
        if self.setup is None or self.setup.state.limit is None:
            return
        limit = self.setup.state.limit * (1 + direction * LIMIT_STEP)
        self._set_limit_lines(limit, self.setup.state.check)

    def _use_suggested(self) -> None:
        v = self.setup.state.validation if self.setup else None
        if v is not None:
            self.band_button.setChecked(False)
            self._set_limit_lines(v.suggested, None)

    def _toggle_band(self, on: bool) -> None:
        self.band_button.setText(f"Check band: {'on' if on else 'off'}")
        if self.setup is None or self.setup.state.limit is None:
            return
        limit = self.setup.state.limit
        if on:
            check = limit * 0.95  # a start: the technician drags the purple line
            self.check_line.show()
            self._set_limit_lines(limit, check)
        else:
            self.check_line.hide()
            self._set_limit_lines(limit, None)

    def _apply_limits(self, limit: float, check: float | None) -> None:
        assert self.setup is not None
        if check is not None and check >= limit:
            check = limit * 0.99
        rates = self._act(lambda: self.setup.set_limits(limit, check))  # type: ignore[union-attr]
        if rates is None:
            return
        self.curve_line.setValue(limit)
        self.limit_value.setText(
            f"Limit {limit:.3f}" + (f"\ncheck from {check:.3f}" if check else "")
        )
        self.rates_label.setText(self._rates_text(rates))

    def _rates_text(self, r: Rates) -> str:
        flo, fhi = r.fpr_interval
        lines = [
            f"False rejects: {r.false_rejects} of {r.n_good} good, {pct(r.fpr)} "
            f"(95 %: {pct(flo)} to {pct(fhi)})"
        ]
        if r.n_bad:
            mlo, mhi = r.fnr_interval
            lines.append(
                f"Misses: {r.misses} of {r.n_bad} bad, {pct(r.fnr)} "
                f"(95 %: {pct(mlo)} to {pct(mhi)})"
            )
        else:
            lines.append("Misses: unknown, no known-bad parts were collected")
        if r.check is not None:
            lines.append(f"To manual check: {r.checked_good} good, {r.checked_bad} bad")
        return "\n".join(lines)

    def _drop_outliers(self) -> None:
        if self.setup is None:
            return
        n = self._act(self.setup.drop_outliers)
        if n:
            self.report(f"{n} part(s) dropped from the good ones: build again.")
            self.go(3)

    # -- 6 save
    def _build_save(self) -> None:
        w = QWidget(self)
        lay = QVBoxLayout(w)
        box, blay = card(w)
        self.save_summary = stat("", box)
        blay.addWidget(self.save_summary)
        blay.addWidget(caption("Notes (kept with the version)", box))
        self.notes = QLineEdit(box)
        self.notes.setMinimumHeight(64)
        blay.addWidget(self.notes)
        row = QHBoxLayout()
        self.save_now = big_button("Save and activate now", box, primary=True, width=360)
        self.save_now.clicked.connect(lambda: self.save(activate=True))
        self.save_later = big_button("Save, activate later", box, width=360)
        self.save_later.clicked.connect(lambda: self.save(activate=False))
        row.addWidget(self.save_now)
        row.addWidget(self.save_later)
        row.addStretch(1)
        blay.addLayout(row)
        self.saved_label = stat("", box)
        blay.addWidget(self.saved_label)
        lay.addWidget(box)
        lay.addStretch(1)
        self.steps.addWidget(w)

    def save(self, *, activate: bool) -> None:
        if self.setup is None:
            return
        v = self._act(lambda: self.setup.save(self.notes.text(), activate=activate))  # type: ignore[union-attr]
        if v is None:
            return
        when = "running from the next part" if activate else "saved, not active"
        self.saved_label.setText(f"{v.product}/{v.version}: limit {v.threshold:.3f}, {when}.")
        self.report(f"Saved {v.product}/{v.version}.")

    # -- the timer
    def refresh_step(self) -> None:
        """Show what the session holds for the visible step."""
        s = self.setup
        i = self.steps.currentIndex()
        if s is None:
            return
        if i in (1, 2) and s.camera is not None:
            latest = s.camera.latest()
            if s.camera.problem:
                self.report(s.camera.problem)
            if latest is not None:
                frame, rep = latest
                view = self.camera_view if i == 1 else self.collect_view
                view.show_frame(frame.image)
                if i == 1:
                    self._show_camera(rep)
        if i == 2:
            c = s.collector
            self.good_count.setText(f"Good {c.count('good')} / {c.target}")
            self.bad_count.setText(f"Known-bad {c.count('bad')}")
            if s.collecting is None:
                for kind, b in (("good", self.collect_good), ("bad", self.collect_bad)):
                    if b.isChecked():
                        b.blockSignals(True)
                        b.setChecked(False)
                        b.setText(f"Collect {kind}")
                        b.blockSignals(False)
            self.decisions.setText("\n".join(d.reason for d in s.state.decisions[-6:][::-1]))
        if i == 3:
            self._show_build()
        if i == 5:
            st = s.state
            if st.limit is not None and st.validation is not None:
                r = st.validation.rates(st.limit, st.check)
                self.save_summary.setText(
                    f"{s.product}: limit {st.limit:.3f}"
                    + (f", check from {st.check:.3f}" if st.check else "")
                    + "\n"
                    + self._rates_text(r)
                )
            else:
                self.save_summary.setText("Build the model and choose its limit first.")

    def _show_camera(self, rep: Any) -> None:
        fc = rep.frame
        self.focus_bar.setRange(0, max(1, int(rep.best_focus)))
        self.focus_bar.setValue(int(fc.focus))
        self.focus_label.setText(f"Focus {fc.focus:.0f} (best seen {rep.best_focus:.0f})")
        self.hist.set_counts(fc.histogram)
        self.clip_label.setText(
            f"Clipped: dark {pct(fc.dark_clipped)}, bright {pct(fc.bright_clipped)}\n"
            f"Darkest cell {100 * fc.uniformity:.0f} % of the brightest\n"
            f"{rep.fps:.1f} frames/s, {rep.dropped} lost of {rep.frames}"
        )
        self.grid_view.set_cells(fc.grid)
        cam = self.setup.camera.camera if self.setup and self.setup.camera else None
        getter = getattr(cam, "feature", None)
        editable = getter is not None
        for name, label in self.feature_labels.items():
            info = getter(name) if getter else None
            label.setText(f"{info.value:.4g}" if info is not None else "-")
            editable = editable and info is not None
        for b in self.feature_buttons:
            b.setEnabled(editable)
        self.features_note.setText(
            "" if editable else "Exposure and gain are set on GenICam cameras only."
        )

    def _show_build(self) -> None:
        assert self.setup is not None
        job = self.setup.state.build
        n = self.setup.collector.count("good")
        running = job is not None and job.state == "running"
        self.build_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        if job is None:
            self.build_summary.setText(f"Build a model from the {n} collected good parts.")
            self.build_bar.setValue(0)
            self.build_stage.setText("")
            return
        p = job.progress
        if p is not None:
            self.build_bar.setValue(int(1000 * p.fraction))
            eta = p.eta_s
            left = f", about {eta:.0f} s left" if eta is not None and running else ""
            what = STAGE_WORDS.get(p.stage, p.stage)
            self.build_stage.setText(
                f"{100 * p.fraction:.0f} %: {what} ({p.done} of {p.total}){left}"
            )
        if job.state == "done" and job.report is not None:
            r = job.report
            if self.message.text() == "Building ...":
                self.report("Built: next, the limit.")
            self.build_summary.setText(
                f"Built from {r.n_train} parts ({r.n_calibration} held back to check the "
                f"limit): bank of {r.bank_size} patches, {r.fit_seconds:.0f} s. Next: the limit."
            )
        elif job.state == "cancelled":
            self.build_summary.setText("Cancelled: nothing was written.")
            self.build_bar.setValue(0)
        elif job.state == "failed":
            self.build_summary.setText(f"The build failed: {job.error}")
        else:
            self.build_summary.setText(f"Building from the {n} collected good parts ...")
