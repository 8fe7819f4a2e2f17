"""Light and dark themes: a Qt style sheet from `resources/themes/` plus the palette it defines.

Each theme file starts with a comment block of `@name: #rrggbb;` lines. Those colours are
substituted for `@name` in the rules and handed to the widgets that paint themselves (verdict
banner, image view, plots), so one file holds everything a theme decides.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

THEMES = ("dark", "light")
_PALETTE_LINE = re.compile(r"^[\s/*]*@(\w+)\s*:\s*([^;]+);", re.MULTILINE)
_REFERENCE = re.compile(r"@(\w+)")

# Used when a theme file is missing (e.g. a wheel installed without resources/): the screen must
# still come up readable, so the defaults are the dark theme's colours.
_FALLBACK = {
    "bg": "#0f1216",
    "panel": "#1d232b",
    "panel2": "#2a323d",
    "border": "#3e4a59",
    "text": "#f3f5f8",
    "muted": "#c3ccd8",
    "accent": "#4c9bff",
    "ok": "#17823b",
    "nok": "#c62828",
    "check": "#8e24aa",  # CHECK parts: neither OK green nor NOK red, nor a state's amber
    "amber": "#ffb300",
    "amber_text": "#111111",
    "on_verdict": "#ffffff",
    "plot_bg": "#161b21",
    "plot_grid": "#5a6677",
    "plot_line": "#ffb300",  # threshold line and recent-scores curve (darker in the light theme)
}


@dataclass(frozen=True)
class Theme:
    """A theme's name, its resolved style sheet and the colours painted widgets use."""

    name: str
    qss: str
    colors: dict[str, str]

    def color(self, key: str) -> str:
        """One palette colour as '#rrggbb' (the dark default where the theme lacks it)."""
        return self.colors.get(key) or _FALLBACK[key]


def resources_dir() -> Path:
    """The `resources/` folder: $STATION_RESOURCES, else the one beside the package."""
    env = os.environ.get("STATION_RESOURCES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "resources"


def parse_theme(name: str, text: str) -> Theme:
    """Read the palette block of a theme file and substitute it into the rules."""
    colors = dict(_FALLBACK)
    colors.update({k: v.strip() for k, v in _PALETTE_LINE.findall(text)})
    # The palette lines are not valid QSS; drop the comment that holds them.
    body = text.split("*/", 1)[1] if text.lstrip().startswith("/*") and "*/" in text else text
    unknown: set[str] = set()

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in colors:
            unknown.add(key)
            return m.group(0)
        return colors[key]

    qss = _REFERENCE.sub(sub, body)
    if unknown:
        log.warning("theme %s: unknown colours %s", name, ", ".join(sorted(unknown)))
    return Theme(name, qss, colors)


@cache
def load_theme(name: str) -> Theme:
    """The named theme ('dark' or 'light'); a missing file gives a plain readable fallback."""
    if name not in THEMES:
        raise ValueError(f"unknown theme '{name}' (one of {', '.join(THEMES)})")
    path = resources_dir() / "themes" / f"{name}.qss"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        log.warning("theme file %s cannot be read (%s); using built-in colours", path, exc)
        return Theme(name, "", dict(_FALLBACK))
    return parse_theme(name, text)


def other(name: str) -> str:
    """The theme a toggle switches to."""
    return "light" if name == "dark" else "dark"
