"""The real window under a real X server (Xvfb), through Qt's xcb plugin as on a line PC: it
opens, draws the operator screen, and closes by itself after --max-frames. This is where missing
system libraries show (the installers and the README name them: QT_XCB_PACKAGES in lib.sh)."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("Xvfb", "xwd", "xwininfo")),
        reason="needs Xvfb, xwd, xwininfo (Debian: xvfb x11-apps x11-utils; .ci/run has them)",
    ),
]


def free_display() -> int:
    for n in range(90, 200):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return n
    raise RuntimeError("no free X display number")


def read_xwd(data: bytes) -> np.ndarray:
    """An XWD screen dump (ZPixmap, 24/32 bits a pixel) as an RGB array."""
    fields = struct.unpack(">25I", data[:100])
    header_size, width, height = fields[0], fields[4], fields[5]
    byte_order, bpp, bytes_per_line, ncolors = fields[7], fields[11], fields[12], fields[19]
    assert bpp == 32, f"expected a 32-bit dump, got {bpp}"
    start = header_size + 12 * ncolors
    raw = np.frombuffer(data, np.uint8, count=height * bytes_per_line, offset=start)
    px = raw.reshape(height, bytes_per_line)[:, : width * 4].reshape(height, width, 4)
    # LSBFirst (0): bytes B, G, R, x in memory.
    return px[..., [2, 1, 0]] if byte_order == 0 else px[..., [1, 2, 3]]


def test_the_window_opens_under_xvfb(
    tmp_path: Path,
    demo_model: Path,
    demo_product: Path,
    screenshot_dir: Path,
    trust_plant_key: Any,
) -> None:
    n = free_display()
    xvfb = subprocess.Popen(
        ["Xvfb", f":{n}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    data = tmp_path / "data"
    shutil.copytree(demo_model, data / "models" / "demo" / "v0001")
    trust_plant_key(data)
    config = tmp_path / "line.toml"
    config.write_text(f'[camera.replay]\npath = "{demo_product / "test"}"\nfps = 4.0\n')
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    env.update(DISPLAY=f":{n}", PYTHONUNBUFFERED="1")
    log = tmp_path / "station.log"
    station = None
    try:
        deadline = time.monotonic() + 20
        while not Path(f"/tmp/.X11-unix/X{n}").exists():
            assert xvfb.poll() is None and time.monotonic() < deadline, "Xvfb did not start"
            time.sleep(0.05)
        with log.open("wb") as out:
            station = subprocess.Popen(
                [sys.executable, "-m", "station", "run", "--config", str(config),
                 "--data-dir", str(data), "--max-frames", "40"],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
            deadline = time.monotonic() + 120
            while True:
                tree = subprocess.run(
                    ["xwininfo", "-root", "-tree", "-display", f":{n}"],
                    capture_output=True, text=True,
                ).stdout  # fmt: skip
                if '"Inspection station"' in tree:
                    break
                assert station.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "no window: " + log.read_text()
                time.sleep(0.2)
            time.sleep(4.0)  # a few parts inspected and drawn
            dump = subprocess.run(
                ["xwd", "-root", "-silent", "-display", f":{n}"], capture_output=True, check=True
            ).stdout
            rc = station.wait(120)
    finally:
        if station is not None and station.poll() is None:
            station.kill()
        xvfb.terminate()
        xvfb.wait(10)
    text = log.read_text()
    assert rc == 0, text
    assert "Could not load the Qt platform plugin" not in text
    image = read_xwd(dump)
    assert image.shape == (800, 1280, 3)
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(image)).save(screenshot_dir / "30-real-x-window.png")
    # The operator screen, drawn: the theme's dark background and a verdict banner colour.
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 500
    banner = image[20:120, 400:900].reshape(-1, 3)
    colours = {tuple(c) for c in banner[:: max(1, len(banner) // 500)]}
    verdict = {(0x17, 0x82, 0x3B), (0xC6, 0x28, 0x28), (0xFF, 0xB3, 0x00)}  # OK, NOK, amber
    assert colours & verdict, sorted(colours)[:10]
    assert re.search(r"state \w+ -> running", text), text
